"""TraceEventEmitter: redacted TraceEvent payloads, span ids, mirroring, never raising."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
from opentelemetry.sdk.trace import ReadableSpan

from mesh.telemetry import REDACTED, TraceEventEmitter, turn_span
from protocols import TraceEvent

Finished = Callable[[], dict[str, ReadableSpan]]


class Recorder:
    """A publish callable that keeps what it was given."""

    def __init__(self) -> None:
        self.events: list[TraceEvent] = []

    async def __call__(self, event: TraceEvent) -> None:
        self.events.append(event)


async def test_telemetry_event_carries_fixed_and_span_attributes(
    finished: Finished, secret: str
) -> None:
    sink = Recorder()
    emitter = TraceEventEmitter(sink, attributes={"agent_id": "agent-1", "role": "fetch"})
    with turn_span(3) as turn:
        ok = await emitter.emit(
            "tool.called",
            {"tool": "http_get", "url": f"https://x/?k={secret}", "auth_token": "opaque-value"},
            turn=3,
            params={"password": "pw-12345"},
        )
    assert ok and emitter.emitted == 1 and emitter.errors == 0
    (event,) = sink.events
    assert isinstance(event, TraceEvent)
    assert event.name == "tool.called"
    attrs = dict(event.attributes)
    assert attrs["agent_id"] == "agent-1"
    assert attrs["turn"] == 3
    assert attrs["url"] == f"https://x/?k={REDACTED}"
    assert attrs["auth_token"] == REDACTED
    assert attrs["params"] == str({"password": REDACTED})
    assert attrs["trace_id"] == turn.trace_id
    assert attrs["span_id"] == turn.span_id
    mirrored = finished()["turn 3"].events
    assert [e.name for e in mirrored] == ["tool.called"]
    assert secret not in str(event.model_dump()) + str(mirrored[0].attributes)


async def test_telemetry_publish_failure_is_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(event: TraceEvent) -> None:
        raise ConnectionError("bus down")

    emitter = TraceEventEmitter(broken)
    with caplog.at_level(logging.WARNING, logger="mesh.telemetry._events"):
        results = [await emitter.emit("x") for _ in range(3)]
    assert results == [False, False, False]
    assert emitter.errors == 3 and emitter.emitted == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "ConnectionError: bus down" in warnings[0].getMessage()


async def test_telemetry_stalled_publish_times_out() -> None:
    async def stalled(event: TraceEvent) -> None:
        await asyncio.sleep(30)

    emitter = TraceEventEmitter(stalled, publish_timeout_s=0.05)
    assert await emitter.emit("slow") is False
    assert emitter.errors == 1


async def test_telemetry_emit_propagates_cancellation() -> None:
    started = asyncio.Event()

    async def waits(event: TraceEvent) -> None:
        started.set()
        await asyncio.sleep(30)

    emitter = TraceEventEmitter(waits)
    task = asyncio.create_task(emitter.emit("x"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert emitter.errors == 0


async def test_telemetry_event_without_span_has_no_ids() -> None:
    sink = Recorder()
    await TraceEventEmitter(sink).emit("plain", n=1.5, ok=True, missing=None)
    assert dict(sink.events[0].attributes) == {"n": 1.5, "ok": True}
