"""Structured trace events: span-worthy moments published as ``TraceEvent`` payloads.

They serve consumers without a tracing backend (``mesh watch``, the demo, audits, the chaos
checker). Emitting is best effort: an event that cannot be published is counted and dropped, and
the turn goes on. The turn loop's events (``step.started``, ``turn.completed``, ``effect.*``,
``secret.refreshed``, ...) are emitted by ``mesh.runtime.observers.TraceEventObserver``, an
observer of the loop like the spans and KPIs; another sink of them is another observer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from opentelemetry import trace

from mesh.telemetry._redact import SecretRegistry, redact_text, redact_value
from protocols.events import TraceEvent

__all__ = ["PublishTraceEvent", "TraceEventEmitter"]

_log = logging.getLogger(__name__)

PublishTraceEvent = Callable[[TraceEvent], Awaitable[None]]
"""Hands one event to the bus (e.g. publishes it to the trace-event topic)."""

_Scalar = str | int | float | bool


class TraceEventEmitter:
    """Builds redacted ``TraceEvent`` payloads and hands them to ``publish``; never raises.

    Every event carries the ids of the span current when it was emitted (``trace_id``,
    ``span_id``) and the emitter's fixed attributes (agent id, role, ...), and is mirrored as an
    event on that span. ``publish`` is awaited in the caller's task, one event at a time per
    call; concurrent ``emit`` calls may reach it concurrently. A call that takes longer than
    ``publish_timeout_s`` is abandoned and counted as an error, so a stalled bus cannot stall a
    turn. The first failure is logged as a warning, later ones at debug level.
    """

    def __init__(
        self,
        publish: PublishTraceEvent,
        *,
        attributes: Mapping[str, Any] | None = None,
        registry: SecretRegistry | None = None,
        publish_timeout_s: float = 5.0,
        mirror_to_span: bool = True,
    ) -> None:
        self._publish = publish
        self._registry = registry
        self._fixed = self._clean(attributes or {})
        self._timeout_s = publish_timeout_s
        self._mirror = mirror_to_span
        self.emitted = 0
        """Events handed to ``publish`` successfully."""
        self.errors = 0
        """Events dropped because building or publishing them failed."""

    def build(self, name: str, attributes: Mapping[str, Any] | None = None) -> TraceEvent:
        """The redacted event ``emit`` would publish (no I/O)."""
        attrs: dict[str, _Scalar] = dict(self._fixed)
        attrs.update(self._clean(attributes or {}))
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            attrs["trace_id"] = format(ctx.trace_id, "032x")
            attrs["span_id"] = format(ctx.span_id, "016x")
        return TraceEvent(name=redact_text(name, self._registry), attributes=attrs)

    async def emit(
        self, name: str, attributes: Mapping[str, Any] | None = None, /, **extra: Any
    ) -> bool:
        """Publish one event; True when it was published, False when it was dropped."""
        try:
            merged = {**(attributes or {}), **extra}
            event = self.build(name, merged)
            if self._mirror:
                span = trace.get_current_span()
                if span.is_recording():
                    span.add_event(
                        event.name,
                        {
                            k: v
                            for k, v in event.attributes.items()
                            if k not in ("trace_id", "span_id")
                        },
                    )
            await asyncio.wait_for(self._publish(event), timeout=self._timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # telemetry never fails a turn
            self.errors += 1
            line = redact_text(
                " ".join(f"{type(exc).__name__}: {exc}".split())[:300], self._registry
            )
            if self.errors == 1:
                _log.warning(
                    "trace event %r dropped (further drops logged at debug): %s", name, line
                )
            else:
                _log.debug("trace event %r dropped: %s", name, line)
            return False
        self.emitted += 1
        return True

    def _clean(self, attributes: Mapping[str, Any]) -> dict[str, _Scalar]:
        out: dict[str, _Scalar] = {}
        for key, value in attributes.items():
            if value is None:
                continue
            clean = redact_value(value, self._registry, key=str(key))
            if not isinstance(clean, str | int | float | bool):
                # TraceEvent attributes are scalars; structured values travel as redacted text.
                clean = redact_text(str(clean), self._registry)
            out[str(key)] = clean
        return out
