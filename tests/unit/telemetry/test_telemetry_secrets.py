"""End to end: a secret used throughout a turn reaches no span, event, log line or scratchpad."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mesh.telemetry import (
    RedactingLogFilter,
    ScratchpadTurn,
    ScratchpadWriter,
    TraceEventEmitter,
    flush_tracing,
    get_tracer,
    reasoner_span,
    step_span,
    tool_span,
    turn_span,
)
from protocols import TraceEvent

API_KEY = "sk-ant-api03-" + "Q" * 40
BEARER = "eyJhbGciOiJFUzI1NiJ9.e30.c2lnbmF0dXJl"


async def test_telemetry_secret_is_absent_from_every_output(
    exporter: InMemorySpanExporter, tmp_path: Path, secret: str
) -> None:
    published: list[TraceEvent] = []

    async def publish(event: TraceEvent) -> None:
        published.append(event)

    log_stream = io.StringIO()
    handler = logging.StreamHandler(log_stream)
    handler.addFilter(RedactingLogFilter())
    log = logging.getLogger("test_telemetry_secrets.runtime")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    events = TraceEventEmitter(publish, attributes={"agent_id": "a1"})
    pad = ScratchpadWriter(tmp_path)
    leaks = (secret, API_KEY, BEARER)
    try:
        with step_span("wf-s", f"step-{secret}", role="fetch", agent_id="a1"):
            pad.open_step(
                "wf-s", "fetch", role="fetch", agent_id="a1", mission=f"use token {secret}"
            )
            async with turn_span(1) as turn:
                with reasoner_span(model="claude-x", temperature=0.2, max_tokens=100) as call:
                    call.set("gen_ai.prompt.preview", f"the token is {secret}, key {API_KEY}")
                    call.event("prompt", {"headers": f"Authorization: Bearer {BEARER}"})
                try:
                    with tool_span("http_get", idempotency_key="wf-s/fetch/1") as tool:
                        tool.set_many({"auth_token": secret, "http.url": f"https://x?k={secret}"})
                        raise PermissionError(f"401 for Bearer {BEARER} and {secret}")
                except PermissionError as exc:
                    log.warning("tool failed: %s (key %s)", exc, API_KEY, exc_info=True)
                    outcome = str(exc)
                # Code outside our helpers (an instrumentation library) sets raw attributes.
                with get_tracer().start_as_current_span(
                    f"raw {secret}",
                    attributes={
                        "http.request.header.authorization": f"Bearer {BEARER}",
                        "note": secret,
                    },
                ) as raw:
                    raw.add_event("raw-event", {"detail": API_KEY})
                await events.emit("tool.failed", error=outcome, token=secret, key=API_KEY)
                pad.append_turn(
                    "wf-s",
                    "fetch",
                    ScratchpadTurn(
                        turn=1,
                        action="http_get",
                        params={"headers": {"Authorization": f"Bearer {BEARER}"}, "q": secret},
                        reasoning=f"I will send {secret} with {API_KEY}",
                        outcome=outcome,
                    ),
                )
                turn.set_decision("http_get", outcome="failed", detail=outcome)
    finally:
        log.removeHandler(handler)
    assert flush_tracing(5_000)

    spans = exporter.get_finished_spans()
    assert len(spans) == 5
    span_dump = "\n".join(s.to_json() for s in spans)
    event_dump = "\n".join(e.model_dump_json() for e in published)
    log_dump = log_stream.getvalue()
    pad_dump = pad.read("wf-s", "fetch")
    for name, dump in (
        ("spans", span_dump),
        ("events", event_dump),
        ("logs", log_dump),
        ("scratchpads", pad_dump),
    ):
        assert dump.strip(), f"{name}: nothing was written, the check would be vacuous"
        assert "[REDACTED]" in dump, name
        for leak in leaks:
            assert leak not in dump, f"{leak[:12]}... leaked into {name}"
    assert "PermissionError" in log_dump and "Traceback" in log_dump
