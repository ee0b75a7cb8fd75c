"""Tracer provider setup: OTLP over HTTP, standard OTEL_* variables, redaction before export.

Export decision, in order:

1. an ``exporter`` passed by the caller is always used (tests, embedding);
2. ``OTEL_SDK_DISABLED=true``, ``OTEL_TRACES_EXPORTER=none`` or ``MESH_TRACING=0`` export nothing;
3. ``OTEL_TRACES_EXPORTER`` may list ``otlp`` (default) and ``console``; ``console`` always prints;
4. ``otlp`` exports only when an endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
   ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) or ``MESH_TRACING=1`` (then the default
   ``http://localhost:4318``), so a laptop without a collector does not log connection errors
   every few seconds.

Spans are still created and their context still propagated when nothing is exported: a process
without a backend must not break the trace of the processes that have one.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Link, Status

from mesh.telemetry._redact import SecretRegistry, redact_text, redact_value

__all__ = [
    "INSTRUMENTATION_NAME",
    "RedactingSpanExporter",
    "TracingInfo",
    "flush_tracing",
    "get_tracer",
    "redact_attributes",
    "setup_tracing",
    "shutdown_tracing",
    "tracing_info",
]

INSTRUMENTATION_NAME = "agent_mesh"
"""Instrumentation scope name of every span the runtime creates."""

_log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class TracingInfo:
    """What ``setup_tracing`` configured, for logs and ``mesh`` diagnostics."""

    service_name: str
    """The ``service.name`` resource attribute in effect."""

    agent_id: str
    """The ``service.instance.id`` resource attribute."""

    role: str
    """The ``mesh.role`` resource attribute."""

    exporters: tuple[str, ...]
    """Names of the exporters spans go to (empty: spans are created but not exported)."""


@dataclass(slots=True)
class _State:
    provider: TracerProvider
    info: TracingInfo


_lock = threading.Lock()
_state: _State | None = None
_atexit_registered = False

# Set only for the duration of one start_span call by ``workflow_span``: the root span of a
# workflow gets ids derived from the workflow id, so other processes can parent on it blindly.
_forced_ids: ContextVar[tuple[int, int] | None] = ContextVar("mesh_forced_span_ids", default=None)


class _WorkflowIdGenerator(RandomIdGenerator):
    """Random ids, except for a workflow root span whose ids are derived from its workflow id."""

    def generate_trace_id(self) -> int:
        """The forced trace id when one is set, else a random one."""
        forced = _forced_ids.get()
        return forced[0] if forced is not None else super().generate_trace_id()

    def generate_span_id(self) -> int:
        """The forced span id when one is set, else a random one."""
        forced = _forced_ids.get()
        return forced[1] if forced is not None else super().generate_span_id()


def redact_attributes(
    attributes: Mapping[str, Any] | None, registry: SecretRegistry | None = None
) -> dict[str, Any]:
    """Span attributes with secrets masked, values kept as valid OpenTelemetry attribute types."""
    out: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if value is None:
            continue
        clean = redact_value(value, registry, key=key)
        if isinstance(clean, dict):
            # Attributes cannot be maps; a flattened string keeps the information readable.
            clean = redact_text(repr(clean), registry)
        elif isinstance(clean, list | tuple):
            clean = tuple(v if isinstance(v, str | bool | int | float) else str(v) for v in clean)
        out[key] = clean
    return out


class RedactingSpanExporter(SpanExporter):
    """Masks secrets in every span (name, attributes, events, links, status) before export.

    The span helpers already redact what they set; this is the last line of defence for
    attributes set by other code (instrumentation libraries, exception messages).
    """

    def __init__(self, exporter: SpanExporter, registry: SecretRegistry | None = None) -> None:
        self._exporter = exporter
        self._registry = registry

    @property
    def wrapped(self) -> SpanExporter:
        """The exporter spans go to after redaction."""
        return self._exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Redact and hand the spans to the wrapped exporter."""
        return self._exporter.export([self._redact(s) for s in spans])

    def shutdown(self) -> None:
        """Shut the wrapped exporter down."""
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush the wrapped exporter."""
        return self._exporter.force_flush(timeout_millis)

    def _redact(self, span: ReadableSpan) -> ReadableSpan:
        reg = self._registry
        status = span.status
        if status.description:
            status = Status(status.status_code, redact_text(status.description, reg))
        return ReadableSpan(
            name=redact_text(span.name, reg),
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=redact_attributes(span.attributes, reg),
            events=[
                Event(e.name, redact_attributes(e.attributes, reg), e.timestamp)
                for e in span.events
            ],
            links=[
                Link(link.context, redact_attributes(link.attributes, reg)) for link in span.links
            ],
            kind=span.kind,
            status=status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def _env_exporters() -> list[tuple[str, SpanExporter]]:
    if _env("OTEL_SDK_DISABLED").lower() in _TRUE or _env("MESH_TRACING").lower() in _FALSE:
        return []
    names = [
        n.strip().lower() for n in (_env("OTEL_TRACES_EXPORTER") or "otlp").split(",") if n.strip()
    ]
    if "none" in names:
        return []
    forced = _env("MESH_TRACING").lower() in _TRUE
    endpoint = _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or _env("OTEL_EXPORTER_OTLP_ENDPOINT")
    out: list[tuple[str, SpanExporter]] = []
    for name in names:
        if name == "otlp":
            if not (endpoint or forced):
                _log.debug(
                    "no OTLP endpoint configured and MESH_TRACING unset: spans are not exported"
                )
                continue
            protocol = _env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or _env(
                "OTEL_EXPORTER_OTLP_PROTOCOL"
            )
            if protocol and protocol != "http/protobuf":
                _log.warning("OTLP protocol %r not supported; using http/protobuf", protocol)
            # Imported lazily: it pulls in requests and protobuf, which processes that never
            # export should not pay for.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            out.append(("otlp", OTLPSpanExporter()))  # reads endpoint, headers, timeout from env
        elif name == "console":
            out.append(("console", ConsoleSpanExporter()))
        else:
            _log.warning("OTEL_TRACES_EXPORTER=%s is not supported; ignored", name)
    return out


def setup_tracing(
    service_name: str,
    *,
    agent_id: str,
    role: str,
    exporter: SpanExporter | None = None,
    registry: SecretRegistry | None = None,
    set_global: bool = True,
) -> TracerProvider:
    """Configure this process's tracer provider once; later calls return the same provider.

    ``OTEL_SERVICE_NAME`` overrides ``service_name``. Every exporter is wrapped in a
    ``RedactingSpanExporter`` behind a ``BatchSpanProcessor`` (tuned by ``OTEL_BSP_*``).
    With ``set_global`` the provider also becomes OpenTelemetry's global one (possible once per
    process), so third-party instrumentation joins the same traces.
    """
    global _state, _atexit_registered
    with _lock:
        if _state is not None:
            if (_state.info.agent_id, _state.info.role) != (agent_id, role):
                _log.debug("setup_tracing called again with other identity; keeping the first")
            return _state.provider
        name = _env("OTEL_SERVICE_NAME") or service_name
        resource = Resource.create(
            {"service.name": name, "service.instance.id": agent_id, "mesh.role": role}
        )
        provider = TracerProvider(
            resource=resource, id_generator=_WorkflowIdGenerator(), shutdown_on_exit=False
        )
        exporters = [("custom", exporter)] if exporter is not None else _env_exporters()
        for _, exp in exporters:
            provider.add_span_processor(BatchSpanProcessor(RedactingSpanExporter(exp, registry)))
        if set_global and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(provider)
        info = TracingInfo(name, agent_id, role, tuple(n for n, _ in exporters))
        _state = _State(provider, info)
        if not _atexit_registered:
            atexit.register(shutdown_tracing)
            _atexit_registered = True
        _log.info(
            "tracing configured: service=%s exporters=%s", name, ",".join(info.exporters) or "none"
        )
        return provider


def tracing_info() -> TracingInfo | None:
    """What ``setup_tracing`` configured, or None before it ran (or after shutdown)."""
    state = _state
    return state.info if state is not None else None


def get_tracer() -> trace.Tracer:
    """The runtime's tracer: from the configured provider, else OpenTelemetry's global one."""
    state = _state
    if state is not None:
        return state.provider.get_tracer(INSTRUMENTATION_NAME)
    return trace.get_tracer(INSTRUMENTATION_NAME)


def flush_tracing(timeout_ms: int = 30_000) -> bool:
    """Export every finished span now; True when all processors flushed in time."""
    state = _state
    return state.provider.force_flush(timeout_ms) if state is not None else True


def shutdown_tracing(timeout_ms: int = 30_000) -> None:
    """Flush and shut the provider down; a later ``setup_tracing`` configures afresh.

    The global provider, if it was set, stays registered (OpenTelemetry allows setting it once)
    but no longer exports.
    """
    global _state
    with _lock:
        state, _state = _state, None
    if state is None:
        return
    state.provider.force_flush(timeout_ms)
    state.provider.shutdown()
