"""Pins the public surface of mesh.telemetry."""

from __future__ import annotations

import mesh.telemetry


def test_telemetry_public_api_is_pinned() -> None:
    assert sorted(mesh.telemetry.__all__) == sorted(
        [
            "CheckpointSpan",
            "INSTRUMENTATION_NAME",
            "KPI_THRESHOLDS",
            "KpiSummary",
            "KpiThreshold",
            "Kpis",
            "MIN_SECRET_CHARS",
            "PublishTraceEvent",
            "REDACTED",
            "ReasonerSpan",
            "RedactingLogFilter",
            "RedactingSpanExporter",
            "ScratchpadWriter",
            "SecretRegistry",
            "SpanScope",
            "TRACE_HEADER_NAMES",
            "ToolSpan",
            "TraceEventEmitter",
            "TracingInfo",
            "TurnRecord",
            "TurnSpan",
            "checkpoint_span",
            "consume_span",
            "messaging_attributes",
            "publish_span",
            "extract_context",
            "flush_tracing",
            "from_kafka_headers",
            "get_tracer",
            "inject_headers",
            "install_log_redaction",
            "is_secret_key",
            "reasoner_span",
            "redact_attributes",
            "redact_record",
            "redact_text",
            "redact_value",
            "resolve_parent",
            "sanitize_line",
            "secret_registry",
            "setup_metrics",
            "setup_tracing",
            "shutdown_metrics",
            "shutdown_tracing",
            "step_span",
            "to_kafka_headers",
            "tool_span",
            "tracing_info",
            "turn_span",
            "workflow_root_context",
            "workflow_span",
            "workflow_span_id",
            "workflow_trace_id",
        ]
    )
    assert len(set(mesh.telemetry.__all__)) == len(mesh.telemetry.__all__)
    for name in mesh.telemetry.__all__:
        assert getattr(mesh.telemetry, name) is not None
        assert not name.startswith("_")


def test_telemetry_public_names_have_docstrings() -> None:
    for name in mesh.telemetry.__all__:
        obj = getattr(mesh.telemetry, name)
        if callable(obj) and not isinstance(obj, type(mesh.telemetry.PublishTraceEvent)):
            assert (obj.__doc__ or "").strip(), name
