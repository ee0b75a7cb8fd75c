"""KPIs: OpenTelemetry instruments and in-process aggregates."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from mesh.telemetry import Kpis


def _metrics(reader: InMemoryMetricReader) -> dict[str, list[object]]:
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[str, list[object]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = list(m.data.data_points)
    return out


def test_telemetry_kpis_record_into_instruments_and_aggregates() -> None:
    reader = InMemoryMetricReader()
    kpis = Kpis(MeterProvider(metric_readers=[reader]), attributes={"mesh.role": "fetch"})
    for ms in range(1, 101):
        kpis.record_turn_latency(float(ms))
    kpis.record_context_utilization(6_000, 8_000, phase="execution")
    kpis.record_context_utilization(1, 0)  # no budget: ignored
    kpis.record_checkpoint_write(3.5, size_bytes=4096)
    kpis.record_spinning(reason="repeat")
    kpis.record_step_started(resumed=False)
    kpis.record_step_started(resumed=False)
    kpis.record_step_started(resumed=True)
    kpis.record_token_usage(model="claude-x", input_tokens=100, output_tokens=20)

    summary = kpis.summary()
    latency = summary[Kpis.TURN_LATENCY]
    assert (latency.count, latency.p50, latency.p95, latency.max) == (100, 50.0, 95.0, 100.0)
    assert latency.unit == "ms"
    assert summary[Kpis.CONTEXT_UTILIZATION].count == 1
    assert summary[Kpis.CONTEXT_UTILIZATION].p50 == pytest.approx(0.75)
    assert summary[Kpis.STATE_SIZE].max == 4096
    assert summary[Kpis.SPINNING].count == 1 and summary[Kpis.SPINNING].p50 is None
    assert summary[Kpis.RECOVERIES].count == 1
    assert kpis.recovery_rate == pytest.approx(1 / 3)
    assert summary[Kpis.TOKEN_USAGE].total == 120

    points = _metrics(reader)
    (latency_point,) = points[Kpis.TURN_LATENCY]
    assert latency_point.count == 100  # type: ignore[attr-defined]
    assert latency_point.attributes == {"mesh.role": "fetch", "mesh.turn.outcome": "ok"}  # type: ignore[attr-defined]
    assert sum(p.value for p in points[Kpis.STEPS_STARTED]) == 3  # type: ignore[attr-defined]
    assert [p.value for p in points[Kpis.RECOVERIES]] == [1]  # type: ignore[attr-defined]
    token_types = {p.attributes["gen_ai.token.type"] for p in points[Kpis.TOKEN_USAGE]}  # type: ignore[attr-defined]
    assert token_types == {"input", "output"}


def test_telemetry_kpis_summary_without_backend_and_table() -> None:
    kpis = Kpis()  # global (no-op) meter provider: aggregates still work
    assert kpis.recovery_rate is None
    assert kpis.summary()[Kpis.TURN_LATENCY].p50 is None
    kpis.record_turn_latency(20.0)
    kpis.record_turn_latency(40.0)
    kpis.record_step_started(resumed=True)
    table = kpis.format_summary()
    lines = table.splitlines()
    assert lines[0].split() == ["kpi", "unit", "count", "p50", "p95", "max"]
    assert any(line.split()[:3] == ["mesh.turn.latency", "ms", "2"] for line in lines)
    assert "recovery rate: 100.0%" in table
    assert "mesh.checkpoint.write_time" not in table  # nothing recorded, not shown


def test_telemetry_kpis_flag_the_seed_thresholds_as_gauges() -> None:
    reader = InMemoryMetricReader()
    kpis = Kpis(MeterProvider(metric_readers=[reader]), attributes={"mesh.role": "fetch"})
    for ms in (100.0,) * 90 + (7_000.0,) * 10:  # p95 over the 5 s threshold, p99 under 10 s
        kpis.record_turn_latency(ms)
    kpis.record_context_utilization(4_000, 8_000)  # 50%: under the 80% threshold
    kpis.record_checkpoint_write(3.0, size_bytes=400 * 1024)  # over the 256 KiB threshold

    flags = kpis.flagged()
    assert flags["turn_latency_p95"] == (7_000.0, True)
    assert flags["turn_latency_p99"] == (7_000.0, False)
    assert flags["context_utilization"] == (pytest.approx(0.5), False)
    assert flags["checkpoint_write_p95"] == (3.0, False)
    assert flags["state_size_max"] == (400 * 1024.0, True)
    assert flags["spinning_count"] == (0.0, False)
    assert "workflow_success_rate" not in flags  # judged fleet-wide, not by one agent

    points = _metrics(reader)

    def by_kpi(name: str) -> dict[str, float]:
        return {p.attributes["mesh.kpi"]: p.value for p in points[name]}  # type: ignore[attr-defined]

    violated = by_kpi(Kpis.KPI_VIOLATED)
    assert violated == {k: int(v[1]) for k, v in flags.items()}
    assert by_kpi(Kpis.KPI_VALUE)["turn_latency_p95"] == 7_000.0
    thresholds = by_kpi(Kpis.KPI_THRESHOLD)
    assert thresholds["turn_latency_p95"] == 5_000.0 and thresholds["workflow_success_rate"] == 0.95
    violations: list[Any] = points[Kpis.KPI_VIOLATED]
    (point,) = [p for p in violations if p.attributes["mesh.kpi"] == "state_size_max"]
    assert point.attributes == {
        "mesh.role": "fetch",
        "mesh.kpi": "state_size_max",
        "mesh.kpi.unit": "bytes",
        "mesh.kpi.better": "lower",
    }
