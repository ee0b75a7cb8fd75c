"""Tracing setup, span helpers, GenAI attributes and propagation across a process boundary."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from mesh.telemetry import (
    checkpoint_span,
    extract_context,
    from_kafka_headers,
    get_tracer,
    inject_headers,
    reasoner_span,
    resolve_parent,
    setup_tracing,
    shutdown_tracing,
    step_span,
    to_kafka_headers,
    tool_span,
    tracing_info,
    turn_span,
    workflow_root_context,
    workflow_span,
    workflow_span_id,
    workflow_trace_id,
)
from protocols import Envelope

Finished = Callable[[], dict[str, ReadableSpan]]


# -- setup ----------------------------------------------------------------------------------


def _exporters_for(monkeypatch: pytest.MonkeyPatch, **env: str) -> tuple[str, ...]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    setup_tracing("svc", agent_id="a1", role="fetch", set_global=False)
    info = tracing_info()
    assert info is not None
    shutdown_tracing()
    for key in env:
        monkeypatch.delenv(key)
    return info.exporters


def test_telemetry_export_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = "http://127.0.0.1:9"
    assert _exporters_for(monkeypatch) == ()
    assert _exporters_for(monkeypatch, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint) == ("otlp",)
    assert _exporters_for(monkeypatch, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=endpoint) == ("otlp",)
    assert _exporters_for(monkeypatch, MESH_TRACING="1") == ("otlp",)
    assert (
        _exporters_for(
            monkeypatch, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_TRACES_EXPORTER="none"
        )
        == ()
    )
    assert _exporters_for(monkeypatch, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, MESH_TRACING="0") == ()
    assert (
        _exporters_for(monkeypatch, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_SDK_DISABLED="true")
        == ()
    )
    assert _exporters_for(monkeypatch, OTEL_TRACES_EXPORTER="console") == ("console",)


def test_telemetry_setup_is_idempotent_and_sets_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    first = setup_tracing("svc", agent_id="agent-7", role="validate", set_global=False)
    second = setup_tracing("other", agent_id="agent-8", role="report", set_global=False)
    assert first is second
    attrs = first.resource.attributes
    assert attrs["service.name"] == "from-env"
    assert attrs["service.instance.id"] == "agent-7"
    assert attrs["mesh.role"] == "validate"
    shutdown_tracing()
    assert tracing_info() is None
    third = setup_tracing("svc", agent_id="agent-9", role="fetch", set_global=False)
    assert third is not first


# -- span helpers ---------------------------------------------------------------------------


def test_telemetry_step_turn_reasoner_tool_checkpoint_nest(finished: Finished) -> None:
    with step_span("wf-1", "fetch", role="fetch", agent_id="agent-1", epoch=3) as step:
        with turn_span(1, phase="execution") as turn:
            with reasoner_span(model="claude-test", temperature=0.2, max_tokens=512) as call:
                call.record_response(
                    input_tokens=120,
                    output_tokens=30,
                    finish_reasons=["tool_use"],
                    response_id="msg_1",
                )
            with tool_span("http_get", idempotency_key="wf-1/fetch/1") as tool:
                tool.set_outcome("ok", detail="3 records")
            with checkpoint_span(workflow_id="wf-1", step_id="fetch", turn=1, epoch=3) as ckpt:
                ckpt.set_result(version=4, size_bytes=2048)
            turn.set_decision("http_get", outcome="ok")
    spans = finished()
    step_s = spans["step fetch"]
    turn_s = spans["turn 1"]
    chat = spans["chat claude-test"]
    tool_s = spans["execute_tool http_get"]
    ck = spans["checkpoint write"]
    assert {s.context.trace_id for s in spans.values()} == {step.span.get_span_context().trace_id}
    assert turn_s.parent is not None and turn_s.parent.span_id == step_s.context.span_id
    for child in (chat, tool_s, ck):
        assert child.parent is not None and child.parent.span_id == turn_s.context.span_id
    assert chat.kind is SpanKind.CLIENT
    assert dict(chat.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.system": "anthropic",
        "gen_ai.request.model": "claude-test",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 512,
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 30,
        "gen_ai.response.finish_reasons": ("tool_use",),
        "gen_ai.response.id": "msg_1",
    }
    assert tool_s.attributes is not None
    assert tool_s.attributes["gen_ai.tool.name"] == "http_get"
    assert tool_s.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool_s.attributes["mesh.tool.idempotency_key"] == "wf-1/fetch/1"
    assert tool_s.attributes["mesh.tool.outcome"] == "ok"
    assert ck.attributes is not None
    assert ck.attributes["mesh.checkpoint.bytes"] == 2048
    assert ck.attributes["mesh.checkpoint.version"] == 4
    assert ck.attributes["mesh.checkpoint.epoch"] == 3
    assert isinstance(ck.attributes["mesh.checkpoint.duration_ms"], float)
    assert ckpt.duration_ms is not None and ckpt.duration_ms >= 0
    assert step_s.attributes is not None and step_s.attributes["mesh.epoch"] == 3
    assert turn_s.attributes is not None and turn_s.attributes["mesh.turn.action"] == "http_get"
    assert step_s.resource.attributes["service.instance.id"] == "agent-1"


async def test_telemetry_scopes_work_with_async_with(finished: Finished) -> None:
    async with step_span("wf-a", "s", role="r", agent_id="a") as step:
        async with turn_span(2) as turn:
            await asyncio.sleep(0)
            assert trace.get_current_span() is turn.span
        assert trace.get_current_span() is step.span
    assert not trace.get_current_span().get_span_context().is_valid
    spans = finished()
    assert spans["turn 2"].parent is not None
    assert spans["turn 2"].parent.span_id == spans["step s"].context.span_id


def test_telemetry_exception_is_recorded_as_one_redacted_line(
    finished: Finished, secret: str
) -> None:
    with pytest.raises(RuntimeError), tool_span("post", idempotency_key="k"):
        raise RuntimeError(f"upstream said\n  no to {secret}")
    span = finished()["execute_tool post"]
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "RuntimeError: upstream said no to [REDACTED]"
    (event,) = span.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert "exception.stacktrace" not in event.attributes
    assert secret not in str(event.attributes)


async def test_telemetry_cancellation_ends_the_span(finished: Finished) -> None:
    async def body() -> None:
        async with turn_span(5):
            await asyncio.sleep(10)

    task = asyncio.create_task(body())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    span = finished()["turn 5"]
    assert span.status.description == "CancelledError: cancelled"
    assert span.end_time is not None


def test_telemetry_helpers_work_without_setup() -> None:
    with step_span("wf", "s", role="r", agent_id="a") as step, turn_span(1) as turn:
        turn.set("x", 1)
        carrier = inject_headers()
    # Without our provider the workflow root context still propagates to the next process.
    assert step.trace_id == format(workflow_trace_id("wf"), "032x")
    assert carrier["traceparent"].split("-")[1] == step.trace_id


# -- propagation ----------------------------------------------------------------------------


def test_telemetry_kafka_header_round_trip() -> None:
    carrier = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "k=v",
    }
    headers = to_kafka_headers({**carrier, "other": "x"})
    assert headers == [("traceparent", carrier["traceparent"].encode()), ("tracestate", b"k=v")]
    noisy = [
        *headers,
        ("content-type", b"msgpack"),
        ("TraceParent", None),
        ("tracestate", b"\xff\xfe"),
    ]
    assert from_kafka_headers(noisy) == carrier
    assert from_kafka_headers(None) == {}


def test_telemetry_malformed_traceparent_yields_no_parent() -> None:
    ctx = extract_context({"traceparent": "not-a-traceparent"})
    assert not trace.get_current_span(ctx).get_span_context().is_valid
    assert resolve_parent({"traceparent": "garbage"}, workflow_id="wf-x") is not None


def test_telemetry_child_in_another_process_joins_the_trace(finished: Finished) -> None:
    """Sender injects into the envelope and Kafka headers; a receiver with a fresh context extracts."""
    with (
        workflow_span("wf-42") as root,
        step_span("wf-42", "identity", role="identity", agent_id="a1") as sender,
    ):
        envelope = Envelope(
            kind="workflow.step_completed",
            sender="a1",
            payload={},
            workflow_id="wf-42",
            trace=inject_headers(),
        )
    headers = to_kafka_headers(envelope.trace)

    received: dict[str, str] = {}

    def other_process() -> None:
        # A fresh thread with an empty contextvars context: nothing current, like a new process.
        assert not trace.get_current_span().get_span_context().is_valid
        carrier = from_kafka_headers(headers)
        with step_span(
            "wf-42", "fetch", role="fetch", agent_id="a2", trace_carrier=carrier
        ) as child:
            received["trace_id"] = child.trace_id

    thread = threading.Thread(target=contextvars.Context().run, args=(other_process,))
    thread.start()
    thread.join(5)
    spans = finished()
    child = spans["step fetch"]
    assert received["trace_id"] == sender.trace_id == root.trace_id
    assert child.context.trace_id == workflow_trace_id("wf-42")
    assert child.parent is not None
    assert child.parent.span_id == sender.span.get_span_context().span_id
    assert child.parent.is_remote
    assert spans["step identity"].parent is not None
    assert spans["step identity"].parent.span_id == workflow_span_id("wf-42")


def test_telemetry_workflow_root_is_derived_without_any_carrier(finished: Finished) -> None:
    with workflow_span("wf-7"):
        pass
    # Later, elsewhere: no trace context travelled (e.g. a client without tracing).
    with step_span("wf-7", "report", role="report", agent_id="a3", trace_carrier={}):
        pass
    spans = finished()
    root = spans["workflow wf-7"]
    step = spans["step report"]
    assert root.parent is None
    assert root.context.trace_id == workflow_trace_id("wf-7")
    assert root.context.span_id == workflow_span_id("wf-7")
    assert step.context.trace_id == root.context.trace_id
    assert step.parent is not None and step.parent.span_id == root.context.span_id
    assert workflow_trace_id("wf-7") != workflow_trace_id("wf-8")


def test_telemetry_workflow_span_ignores_the_current_span(finished: Finished) -> None:
    with get_tracer().start_as_current_span("cli command"), workflow_span("wf-9") as root:
        pass
    assert root.trace_id == format(workflow_trace_id("wf-9"), "032x")
    assert finished()["workflow wf-9"].parent is None


def test_telemetry_root_context_is_remote_and_sampled() -> None:
    ctx = trace.get_current_span(workflow_root_context("wf-1")).get_span_context()
    assert ctx.is_remote and ctx.trace_flags.sampled
    carrier = inject_headers(context=workflow_root_context("wf-1"))
    assert (
        carrier["traceparent"]
        == f"00-{workflow_trace_id('wf-1'):032x}-{workflow_span_id('wf-1'):016x}-01"
    )


def test_telemetry_injection_without_span_writes_nothing() -> None:
    assert inject_headers() == {}


def test_telemetry_global_provider_is_left_alone_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = trace.get_tracer_provider()
    provider = setup_tracing(
        "svc", agent_id="a", role="r", exporter=InMemorySpanExporter(), set_global=False
    )
    assert isinstance(provider, TracerProvider)
    assert trace.get_tracer_provider() is before
