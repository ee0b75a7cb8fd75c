"""Telemetry of agent-mesh: traces, trace events, scratchpads and KPIs, as wrappers the runtime calls.

One trace per workflow, across processes: ``workflow_span`` at submit, the W3C context in the
envelope's ``trace`` field and Kafka headers, ``step_span`` in whichever process owns the step
(it falls back to the workflow's derived root when no context travelled), and turn, reasoner,
tool and checkpoint spans below it. Everything written out, spans, events, logs and
scratchpads, passes through the same redaction, fed by the ``SecretRegistry``.

Typical use in the runtime::

    setup_tracing("agent-mesh", agent_id=agent.id, role=agent.role)
    secret_registry().add(auth_token)
    with step_span(env.workflow_id, env.step_id, role=..., agent_id=..., trace_carrier=env.trace):
        async with turn_span(n, phase="execution") as turn:
            with reasoner_span(model=m, temperature=0.2, max_tokens=1024) as call:
                result = await reasoner.decide(request)
                call.record_response(input_tokens=..., output_tokens=..., finish_reasons=["tool_use"])
            outgoing = envelope.with_fields(trace=inject_headers())
"""

from mesh.telemetry._events import PublishTraceEvent, TraceEventEmitter
from mesh.telemetry._kpis import (
    KPI_THRESHOLDS,
    Kpis,
    KpiSummary,
    KpiThreshold,
    setup_metrics,
    shutdown_metrics,
)
from mesh.telemetry._logging import RedactingLogFilter, install_log_redaction, redact_record
from mesh.telemetry._propagation import (
    TRACE_HEADER_NAMES,
    extract_context,
    from_kafka_headers,
    inject_headers,
    resolve_parent,
    to_kafka_headers,
    workflow_root_context,
    workflow_span_id,
    workflow_trace_id,
)
from mesh.telemetry._redact import (
    MIN_SECRET_CHARS,
    REDACTED,
    SecretRegistry,
    is_secret_key,
    redact_text,
    redact_value,
    secret_registry,
)
from mesh.telemetry._scratchpad import ScratchpadWriter, sanitize_line
from mesh.telemetry._scratchpad import TurnRecord as ScratchpadTurn
from mesh.telemetry._spans import (
    CheckpointSpan,
    ReasonerSpan,
    SpanScope,
    ToolSpan,
    TurnSpan,
    checkpoint_span,
    consume_span,
    messaging_attributes,
    publish_span,
    reasoner_span,
    step_span,
    tool_span,
    turn_span,
    workflow_span,
)
from mesh.telemetry._tracing import (
    INSTRUMENTATION_NAME,
    RedactingSpanExporter,
    TracingInfo,
    flush_tracing,
    get_tracer,
    redact_attributes,
    setup_tracing,
    shutdown_tracing,
    tracing_info,
)

__all__ = [
    # tracing setup
    "INSTRUMENTATION_NAME",
    "RedactingSpanExporter",
    "TracingInfo",
    "flush_tracing",
    "get_tracer",
    "setup_tracing",
    "shutdown_tracing",
    "tracing_info",
    # propagation (envelope trace field, Kafka headers, workflow root)
    "TRACE_HEADER_NAMES",
    "extract_context",
    "from_kafka_headers",
    "inject_headers",
    "resolve_parent",
    "to_kafka_headers",
    "workflow_root_context",
    "workflow_span_id",
    "workflow_trace_id",
    # spans
    "CheckpointSpan",
    "ReasonerSpan",
    "SpanScope",
    "ToolSpan",
    "TurnSpan",
    "checkpoint_span",
    "consume_span",
    "messaging_attributes",
    "publish_span",
    "reasoner_span",
    "step_span",
    "tool_span",
    "turn_span",
    "workflow_span",
    # redaction
    "MIN_SECRET_CHARS",
    "REDACTED",
    "RedactingLogFilter",
    "SecretRegistry",
    "install_log_redaction",
    "is_secret_key",
    "redact_attributes",
    "redact_record",
    "redact_text",
    "redact_value",
    "secret_registry",
    # trace events
    "PublishTraceEvent",
    "TraceEventEmitter",
    # scratchpads
    "ScratchpadWriter",
    "ScratchpadTurn",
    "sanitize_line",
    # KPIs
    "KPI_THRESHOLDS",
    "KpiSummary",
    "KpiThreshold",
    "Kpis",
    "setup_metrics",
    "shutdown_metrics",
]
