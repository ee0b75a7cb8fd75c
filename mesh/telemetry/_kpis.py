"""KPIs as OpenTelemetry metrics, plus in-process aggregates for a summary without a backend.

The numbers the design promises to watch: context utilization, turn latency, checkpoint write
time, state size, spinning, recovery (resume) rate, and token usage. ``Kpis`` records each into
an OpenTelemetry instrument (exported when a meter provider with a reader is configured) and
into a bounded in-memory sample, so ``mesh`` and the demo can print count/p50/p95 on their own.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource

__all__ = [
    "KPI_THRESHOLDS",
    "KpiSummary",
    "KpiThreshold",
    "Kpis",
    "setup_metrics",
    "shutdown_metrics",
]

_log = logging.getLogger(__name__)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SAMPLE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class KpiSummary:
    """Aggregate of one KPI since the process started (percentiles over the recent samples)."""

    name: str
    """Instrument name, e.g. ``mesh.turn.latency``."""

    unit: str
    """UCUM unit of the values (``ms``, ``By``, ``1``)."""

    count: int
    """How many values (or increments) were recorded."""

    total: float
    """Sum of the values."""

    p50: float | None
    """Median of the retained samples; None for counters and when nothing was recorded."""

    p95: float | None
    """95th percentile of the retained samples; None for counters and when nothing was recorded."""

    max: float | None
    """Largest retained sample; None for counters and when nothing was recorded."""


@dataclass(frozen=True, slots=True)
class KpiThreshold:
    """One row of the KPI table an operator watches: what is measured and the level that is a problem."""

    key: str
    """Stable id (the console's API uses it)."""
    title: str
    """What it is, in words."""
    unit: str
    """``ratio``, ``ms``, ``bytes`` or ``count``."""
    limit: float
    """The threshold."""
    better: str
    """``higher`` (violated below ``limit``) or ``lower`` (violated above it)."""
    why: str
    """Where the number comes from, one line."""

    def violated(self, value: float | None) -> bool:
        """Whether ``value`` is on the wrong side of the limit (None, not measured, never is)."""
        if value is None:
            return False
        return value < self.limit if self.better == "higher" else value > self.limit


KPI_THRESHOLDS: tuple[KpiThreshold, ...] = (
    KpiThreshold(
        "workflow_success_rate",
        "workflow success rate",
        "ratio",
        0.95,
        "higher",
        "finished runs that succeeded",
    ),
    KpiThreshold(
        "context_utilization",
        "context utilization (p95)",
        "ratio",
        0.80,
        "lower",
        "prompt tokens / budget per turn; compression starts at 80%",
    ),
    KpiThreshold(
        "invalid_decision_rate",
        "invalid-or-corrected decision rate",
        "ratio",
        0.05,
        "lower",
        "turns whose decision needed a repair or a corrected parameter (our hallucination proxy)",
    ),
    KpiThreshold(
        "turn_latency_p95", "turn latency p95", "ms", 5000.0, "lower", "wall time of a turn"
    ),
    KpiThreshold(
        "turn_latency_p99", "turn latency p99", "ms", 10000.0, "lower", "wall time of a turn"
    ),
    KpiThreshold(
        "checkpoint_write_p95",
        "checkpoint write p95",
        "ms",
        50.0,
        "lower",
        "fenced Redis write of a turn's checkpoint",
    ),
    KpiThreshold(
        "state_size_max",
        "state size (largest checkpoint)",
        "bytes",
        256 * 1024.0,
        "lower",
        "encoded size of a step's checkpoint",
    ),
    KpiThreshold(
        "spinning_count",
        "spinning / escalated steps",
        "count",
        0.0,
        "lower",
        "steps paused for a human",
    ),
    KpiThreshold(
        "recovery_rate",
        "recovery rate",
        "ratio",
        0.95,
        "higher",
        "steps taken over from a checkpoint that went on to complete",
    ),
)
"""The KPI table (the seed's list: success, context, hallucination proxy, latency, checkpoints, size,
spinning, recovery) with the level at which ``mesh console`` flags each one."""


def _percentile(sorted_values: list[float], q: float) -> float:
    # Nearest-rank: always one of the recorded values, which reads better in a summary.
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class _Aggregate:
    def __init__(self, name: str, unit: str, *, samples: bool) -> None:
        self.name = name
        self.unit = unit
        self.count = 0
        self.total = 0.0
        self.samples: deque[float] | None = deque(maxlen=_SAMPLE_LIMIT) if samples else None

    def add(self, value: float) -> None:
        self.count += 1 if self.samples is not None else int(value)
        self.total += value
        if self.samples is not None:
            self.samples.append(value)

    def percentile(self, q: float) -> float | None:
        if not self.samples:
            return None
        return _percentile(sorted(self.samples), q)

    def summary(self) -> KpiSummary:
        if not self.samples:
            return KpiSummary(self.name, self.unit, self.count, self.total, None, None, None)
        ordered = sorted(self.samples)
        return KpiSummary(
            self.name,
            self.unit,
            self.count,
            self.total,
            _percentile(ordered, 0.50),
            _percentile(ordered, 0.95),
            ordered[-1],
        )


class Kpis:
    """Typed recorders for the runtime's KPIs; thread-safe; never raises into the caller.

    Besides the raw instruments it exports the seed's thresholds (``KPI_THRESHOLDS``) as three
    observable gauges, one series per KPI (attribute ``mesh.kpi``, its threshold key):
    ``mesh.kpi.threshold`` (the limit), ``mesh.kpi.value`` (this process's value, e.g. its turn
    latency p95 over the recent samples) and ``mesh.kpi.violated`` (1 when the value is on the
    wrong side of the limit, else 0), so an alert is one rule on ``mesh.kpi.violated == 1``.
    Only the KPIs an agent measures itself get a value (``flagged``); fleet-wide ones
    (workflow success, recovery rate, decision repairs) are judged by ``mesh console``.
    """

    CONTEXT_UTILIZATION = "mesh.context.utilization"
    TURN_LATENCY = "mesh.turn.latency"
    CHECKPOINT_WRITE_TIME = "mesh.checkpoint.write_time"
    STATE_SIZE = "mesh.state.size"
    SPINNING = "mesh.spinning.count"
    STEPS_STARTED = "mesh.step.started"
    RECOVERIES = "mesh.recovery.count"
    TOKEN_USAGE = "gen_ai.client.token.usage"
    KPI_THRESHOLD = "mesh.kpi.threshold"
    KPI_VALUE = "mesh.kpi.value"
    KPI_VIOLATED = "mesh.kpi.violated"

    # threshold key -> (instrument, statistic): what this process measures of the seed's table.
    _MEASURED: ClassVar[Mapping[str, tuple[str, str]]] = {
        "context_utilization": (CONTEXT_UTILIZATION, "p95"),
        "turn_latency_p95": (TURN_LATENCY, "p95"),
        "turn_latency_p99": (TURN_LATENCY, "p99"),
        "checkpoint_write_p95": (CHECKPOINT_WRITE_TIME, "p95"),
        "state_size_max": (STATE_SIZE, "max"),
        "spinning_count": (SPINNING, "count"),
    }

    def __init__(
        self,
        meter_provider: metrics.MeterProvider | None = None,
        *,
        attributes: Mapping[str, str] | None = None,
    ) -> None:
        provider = meter_provider if meter_provider is not None else _current_meter_provider()
        meter = provider.get_meter("agent_mesh")
        self._attrs = dict(attributes or {})
        self._lock = threading.Lock()
        self._aggs: dict[str, _Aggregate] = {}
        self._hist: dict[str, metrics.Histogram] = {}
        self._ctr: dict[str, metrics.Counter] = {}
        for name, unit, desc in (
            (self.CONTEXT_UTILIZATION, "1", "Share of the prompt token budget used by a turn"),
            (self.TURN_LATENCY, "ms", "Wall time of one turn"),
            (self.CHECKPOINT_WRITE_TIME, "ms", "Time to write one checkpoint"),
            (self.STATE_SIZE, "By", "Encoded size of a step's checkpointed state"),
            (self.TOKEN_USAGE, "{token}", "Tokens used per reasoner call, by gen_ai.token.type"),
        ):
            self._hist[name] = meter.create_histogram(name, unit=unit, description=desc)
            self._aggs[name] = _Aggregate(name, unit, samples=True)
        for name, desc in (
            (self.SPINNING, "Steps paused because they were spinning"),
            (self.STEPS_STARTED, "Steps taken by an owner (fresh or resumed)"),
            (self.RECOVERIES, "Steps resumed from a checkpoint by a new owner or after a restart"),
        ):
            self._ctr[name] = meter.create_counter(name, unit="1", description=desc)
            self._aggs[name] = _Aggregate(name, "1", samples=False)
        meter.create_observable_gauge(
            self.KPI_THRESHOLD,
            callbacks=[self._observe_thresholds],
            unit="1",
            description="The seed's threshold of each KPI (attribute mesh.kpi), in the KPI's unit",
        )
        meter.create_observable_gauge(
            self.KPI_VALUE,
            callbacks=[self._observe_values],
            unit="1",
            description="This process's value of each KPI it measures, in the KPI's unit",
        )
        meter.create_observable_gauge(
            self.KPI_VIOLATED,
            callbacks=[self._observe_violations],
            unit="1",
            description="1 when the KPI is on the wrong side of its threshold, else 0",
        )

    # -- typed recorders -------------------------------------------------------------------

    def record_context_utilization(
        self, used_tokens: int, budget_tokens: int, *, phase: str = ""
    ) -> None:
        """Prompt tokens used against the budget for one turn (recorded as a ratio)."""
        if budget_tokens <= 0:
            return
        self._record(
            self.CONTEXT_UTILIZATION, used_tokens / budget_tokens, {"mesh.turn.phase": phase}
        )

    def record_turn_latency(self, latency_ms: float, *, outcome: str = "ok") -> None:
        """Wall time of one turn and how it ended."""
        self._record(self.TURN_LATENCY, latency_ms, {"mesh.turn.outcome": outcome})

    def record_checkpoint_write(self, duration_ms: float, *, size_bytes: int | None = None) -> None:
        """One checkpoint write: its time, and the state size when known."""
        self._record(self.CHECKPOINT_WRITE_TIME, duration_ms, {})
        if size_bytes is not None:
            self.record_state_size(size_bytes)

    def record_state_size(self, size_bytes: int) -> None:
        """Encoded size of a step's state."""
        self._record(self.STATE_SIZE, float(size_bytes), {})

    def record_spinning(self, *, reason: str = "repeat") -> None:
        """A step was paused for spinning (``repeat`` or ``no_progress``)."""
        self._add(self.SPINNING, 1, {"mesh.spinning.reason": reason})

    def record_step_started(self, *, resumed: bool) -> None:
        """An owner took a step; ``resumed`` when it continued from a checkpoint (a recovery)."""
        self._add(self.STEPS_STARTED, 1, {"mesh.step.resumed": resumed})
        if resumed:
            self._add(self.RECOVERIES, 1, {})

    def record_token_usage(self, *, model: str, input_tokens: int, output_tokens: int) -> None:
        """Provider-reported tokens of one reasoner call."""
        base = {"gen_ai.request.model": model}
        self._record(self.TOKEN_USAGE, float(input_tokens), {**base, "gen_ai.token.type": "input"})
        self._record(
            self.TOKEN_USAGE, float(output_tokens), {**base, "gen_ai.token.type": "output"}
        )

    # -- aggregates ------------------------------------------------------------------------

    def summary(self) -> dict[str, KpiSummary]:
        """Every KPI's aggregate so far, by instrument name."""
        with self._lock:
            return {name: agg.summary() for name, agg in self._aggs.items()}

    def flagged(self) -> dict[str, tuple[float, bool]]:
        """Each KPI of ``KPI_THRESHOLDS`` this process has a value for: (value, violated)."""
        out: dict[str, tuple[float, bool]] = {}
        with self._lock:
            for threshold in KPI_THRESHOLDS:
                measured = self._MEASURED.get(threshold.key)
                if measured is None:
                    continue
                name, stat = measured
                agg = self._aggs[name]
                value: float | None
                if stat == "count":
                    value = float(agg.count)
                elif stat == "max":
                    value = max(agg.samples) if agg.samples else None
                else:
                    value = agg.percentile(0.95 if stat == "p95" else 0.99)
                if value is not None:
                    out[threshold.key] = (value, threshold.violated(value))
        return out

    def _kpi_attrs(self, threshold: KpiThreshold) -> dict[str, Any]:
        return {
            **self._attrs,
            "mesh.kpi": threshold.key,
            "mesh.kpi.unit": threshold.unit,
            "mesh.kpi.better": threshold.better,
        }

    def _observe_thresholds(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(t.limit, self._kpi_attrs(t)) for t in KPI_THRESHOLDS]

    def _observe_values(self, _options: CallbackOptions) -> Iterable[Observation]:
        flags = self.flagged()
        return [
            Observation(flags[t.key][0], self._kpi_attrs(t))
            for t in KPI_THRESHOLDS
            if t.key in flags
        ]

    def _observe_violations(self, _options: CallbackOptions) -> Iterable[Observation]:
        flags = self.flagged()
        return [
            Observation(int(flags[t.key][1]), self._kpi_attrs(t))
            for t in KPI_THRESHOLDS
            if t.key in flags
        ]

    @property
    def recovery_rate(self) -> float | None:
        """Share of started steps that were resumes; None before any step started."""
        with self._lock:
            started = self._aggs[self.STEPS_STARTED].count
            return self._aggs[self.RECOVERIES].count / started if started else None

    def format_summary(self) -> str:
        """A small plain-text table of the KPIs that have values, for the CLI and the demo."""
        rows = [f"{'kpi':<28} {'unit':>7} {'count':>7} {'p50':>10} {'p95':>10} {'max':>10}"]

        def cell(value: float | None) -> str:
            return "-" if value is None else f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"

        for s in self.summary().values():
            if s.count:
                rows.append(
                    f"{s.name:<28} {s.unit:>7} {s.count:>7} {cell(s.p50):>10} {cell(s.p95):>10} {cell(s.max):>10}"
                )
        rate = self.recovery_rate
        if rate is not None:
            rows.append(f"recovery rate: {rate:.1%}")
        return "\n".join(rows)

    # -- internals -------------------------------------------------------------------------

    def _merged(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        return {**self._attrs, **{k: v for k, v in attrs.items() if v not in (None, "")}}

    def _record(self, name: str, value: float, attrs: Mapping[str, Any]) -> None:
        try:
            with self._lock:
                self._aggs[name].add(value)
            self._hist[name].record(value, self._merged(attrs))
        except Exception:  # telemetry never fails a turn
            _log.debug("recording %s failed", name, exc_info=True)

    def _add(self, name: str, amount: int, attrs: Mapping[str, Any]) -> None:
        try:
            with self._lock:
                self._aggs[name].add(amount)
            self._ctr[name].add(amount, self._merged(attrs))
        except Exception:  # telemetry never fails a turn
            _log.debug("recording %s failed", name, exc_info=True)


# -- provider setup ----------------------------------------------------------------------------

_lock = threading.Lock()
_provider: MeterProvider | None = None
_atexit_registered = False


def _current_meter_provider() -> metrics.MeterProvider:
    return _provider if _provider is not None else metrics.get_meter_provider()


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def _env_readers() -> list[MetricReader]:
    if _env("OTEL_SDK_DISABLED").lower() in _TRUE or _env("MESH_TRACING").lower() in _FALSE:
        return []
    names = [
        n.strip().lower() for n in (_env("OTEL_METRICS_EXPORTER") or "otlp").split(",") if n.strip()
    ]
    if "none" in names:
        return []
    endpoint = _env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or _env("OTEL_EXPORTER_OTLP_ENDPOINT")
    forced = _env("MESH_TRACING").lower() in _TRUE
    readers: list[MetricReader] = []
    for name in names:
        exporter: MetricExporter
        if name == "otlp":
            if not (endpoint or forced):
                continue
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            exporter = OTLPMetricExporter()
        elif name == "console":
            exporter = ConsoleMetricExporter()
        else:
            _log.warning("OTEL_METRICS_EXPORTER=%s is not supported; ignored", name)
            continue
        readers.append(PeriodicExportingMetricReader(exporter))  # OTEL_METRIC_EXPORT_INTERVAL
    return readers


def setup_metrics(
    service_name: str,
    *,
    agent_id: str,
    role: str,
    reader: MetricReader | None = None,
    set_global: bool = True,
) -> MeterProvider:
    """Configure this process's meter provider once (same export rules as ``setup_tracing``).

    ``reader`` replaces the environment-chosen readers (tests pass an ``InMemoryMetricReader``).
    """
    global _provider, _atexit_registered
    with _lock:
        if _provider is not None:
            return _provider
        name = _env("OTEL_SERVICE_NAME") or service_name
        resource = Resource.create(
            {"service.name": name, "service.instance.id": agent_id, "mesh.role": role}
        )
        readers = [reader] if reader is not None else _env_readers()
        provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
        if set_global and type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider":
            metrics.set_meter_provider(provider)
        _provider = provider
        if not _atexit_registered:
            atexit.register(shutdown_metrics)
            _atexit_registered = True
        return provider


def shutdown_metrics(timeout_ms: int = 30_000) -> None:
    """Export what is pending and shut the meter provider down."""
    global _provider
    with _lock:
        provider, _provider = _provider, None
    if provider is None:
        return
    provider.force_flush(timeout_ms)
    provider.shutdown()
