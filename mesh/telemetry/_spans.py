"""Span helpers for the moments of a workflow: submit, step, turn, reasoner call, tool call, checkpoint.

Each helper returns a scope usable as ``with`` or ``async with``. The scope makes its span
current for the body, masks every attribute it sets, and on an exception records a one-line,
redacted error (never a stack trace, which could quote a secret) and re-raises.

Concurrency: a scope belongs to the task that entered it; enter and exit it in the same task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.attributes import messaging_attributes as messaging
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from mesh.telemetry._propagation import (
    inject_headers,
    resolve_parent,
    workflow_span_id,
    workflow_trace_id,
)
from mesh.telemetry._redact import SecretRegistry, redact_text
from mesh.telemetry._tracing import _forced_ids, get_tracer, redact_attributes

__all__ = [
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
]

_MAX_ERROR_CHARS = 300

MESSAGING_SYSTEM = "kafka"
"""``messaging.system`` of every publish and consume span: the log is Apache Kafka."""


def messaging_attributes(
    topic: str,
    *,
    operation: str,
    operation_type: str,
    message_id: str = "",
    key: str = "",
    partition: int | None = None,
    offset: int | None = None,
    consumer_group: str = "",
) -> dict[str, Any]:
    """OpenTelemetry messaging semantic-convention attributes of one Kafka operation.

    ``operation_type`` is ``send``, ``receive`` or ``process``; ``operation`` the system-specific
    name (``send``, ``poll``, ``process``). Empty or None values are left out.
    """
    attrs: dict[str, Any] = {
        messaging.MESSAGING_SYSTEM: MESSAGING_SYSTEM,
        messaging.MESSAGING_DESTINATION_NAME: topic,
        messaging.MESSAGING_OPERATION_NAME: operation,
        messaging.MESSAGING_OPERATION_TYPE: operation_type,
        messaging.MESSAGING_MESSAGE_ID: message_id or None,
        messaging.MESSAGING_KAFKA_MESSAGE_KEY: key or None,
        messaging.MESSAGING_DESTINATION_PARTITION_ID: str(partition) if partition is not None else None,
        messaging.MESSAGING_KAFKA_OFFSET: offset,
        messaging.MESSAGING_CONSUMER_GROUP_NAME: consumer_group or None,
    }
    return {k: v for k, v in attrs.items() if v is not None}


def _one_line(exc: BaseException, registry: SecretRegistry | None) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "CancelledError: cancelled"
    text = " ".join(str(exc).split())[:_MAX_ERROR_CHARS]
    return redact_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, registry)


class SpanScope:
    """A span made current for a ``with``/``async with`` body, with redacted setters."""

    def __init__(
        self,
        name: str,
        *,
        attributes: Mapping[str, Any] | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        parent: Context | Callable[[], Context] | None = None,
        registry: SecretRegistry | None = None,
        forced_ids: tuple[int, int] | None = None,
    ) -> None:
        self._name = name
        self._attributes = dict(attributes or {})
        self._kind = kind
        self._parent = parent
        self._registry = registry
        self._forced_ids = forced_ids
        self._span: Span = trace.INVALID_SPAN
        self._token: object | None = None
        self._start_s = 0.0
        self.duration_ms: float | None = None
        """Wall time of the body in milliseconds, set on exit."""

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        """Start the span and make it current."""
        token = _forced_ids.set(self._forced_ids) if self._forced_ids is not None else None
        try:
            # Resolved at enter, not at construction: the current span is the one at enter.
            parent = self._parent() if callable(self._parent) else self._parent
            self._span = get_tracer().start_span(
                redact_text(self._name, self._registry),
                context=parent,
                kind=self._kind,
                attributes=redact_attributes(self._attributes, self._registry),
                record_exception=False,
                set_status_on_exception=False,
            )
        finally:
            if token is not None:
                _forced_ids.reset(token)
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        self._start_s = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Record the outcome, end the span and restore the previous context."""
        self.duration_ms = (time.perf_counter() - self._start_s) * 1000.0
        try:
            self._on_exit()
            if exc is not None:
                line = _one_line(exc, self._registry)
                self._span.add_event(
                    "exception",
                    {"exception.type": type(exc).__name__, "exception.message": line},
                )
                self._span.set_status(Status(StatusCode.ERROR, line))
            self._span.end()
        finally:
            if self._token is not None:
                otel_context.detach(self._token)  # type: ignore[arg-type]
                self._token = None

    async def __aenter__(self) -> Self:
        """Same as ``__enter__``, for ``async with``."""
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Same as ``__exit__``, for ``async with``."""
        self.__exit__(exc_type, exc, tb)

    def _on_exit(self) -> None:
        """Hook for subclasses: last attributes before the span ends."""

    # -- setters ---------------------------------------------------------------------------

    @property
    def span(self) -> Span:
        """The underlying OpenTelemetry span (invalid before enter)."""
        return self._span

    @property
    def trace_id(self) -> str:
        """Trace id as 32 hex chars (all zeros when no span)."""
        return format(self._span.get_span_context().trace_id, "032x")

    @property
    def span_id(self) -> str:
        """Span id as 16 hex chars (all zeros when no span)."""
        return format(self._span.get_span_context().span_id, "016x")

    def set(self, key: str, value: Any) -> None:
        """Set one attribute, redacted; None is ignored."""
        self.set_many({key: value})

    def set_many(self, attributes: Mapping[str, Any]) -> None:
        """Set several attributes, redacted; None values are ignored."""
        self._span.set_attributes(redact_attributes(attributes, self._registry))

    def event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        """Add a span event with redacted attributes."""
        self._span.add_event(name, redact_attributes(attributes, self._registry))

    def inject(self) -> dict[str, str]:
        """This span's W3C context as a carrier for an envelope's ``trace`` field."""
        return inject_headers(context=trace.set_span_in_context(self._span))


class TurnSpan(SpanScope):
    """A turn: observe, decide, act, persist."""

    def set_decision(self, action: str, *, outcome: str = "", detail: str = "") -> None:
        """The action chosen and how it went (``ok``, ``retry``, ``failed``, ...)."""
        self.set_many(
            {
                "mesh.turn.action": action,
                "mesh.turn.outcome": outcome or None,
                "mesh.turn.detail": detail or None,
            }
        )


class ReasonerSpan(SpanScope):
    """A reasoner (LLM) call, with OpenTelemetry GenAI semantic-convention attributes."""

    def record_response(
        self,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        finish_reasons: Iterable[str] = (),
        response_model: str | None = None,
        response_id: str | None = None,
    ) -> None:
        """Token usage and why generation stopped, as the provider reported them."""
        self.set_many(
            {
                gen_ai.GEN_AI_USAGE_INPUT_TOKENS: input_tokens,
                gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS: output_tokens,
                gen_ai.GEN_AI_RESPONSE_FINISH_REASONS: tuple(finish_reasons) or None,
                gen_ai.GEN_AI_RESPONSE_MODEL: response_model,
                gen_ai.GEN_AI_RESPONSE_ID: response_id,
            }
        )


class ToolSpan(SpanScope):
    """A side-effecting tool call, keyed by its idempotency key."""

    def set_outcome(self, outcome: str, *, detail: str = "", replayed: bool = False) -> None:
        """How the call ended (``ok``, ``retry``, ``failed``, ``skipped_duplicate``, ...)."""
        self.set_many(
            {
                "mesh.tool.outcome": outcome,
                "mesh.tool.detail": detail or None,
                "mesh.tool.replayed": replayed,
            }
        )


class CheckpointSpan(SpanScope):
    """A checkpoint write; its duration is recorded as an attribute on exit."""

    def set_result(self, *, version: int | None = None, size_bytes: int | None = None) -> None:
        """What was written: version assigned by the store and encoded size."""
        self.set_many({"mesh.checkpoint.version": version, "mesh.checkpoint.bytes": size_bytes})

    def _on_exit(self) -> None:
        if self.duration_ms is not None:
            self._span.set_attribute("mesh.checkpoint.duration_ms", round(self.duration_ms, 3))


def workflow_span(
    workflow_id: str,
    *,
    name: str = "",
    attributes: Mapping[str, Any] | None = None,
    topic: str = "",
    registry: SecretRegistry | None = None,
) -> SpanScope:
    """The root span of a workflow, opened at submit; its ids derive from ``workflow_id``.

    It is always a root (any current span is ignored), so the workflow's trace id is the same
    in every process; ``workflow_root_context`` parents on it without any context travelling.
    With ``topic`` (where ``WorkflowSubmitted`` is published) it carries the messaging ``send``
    attributes: it is the producer span of the submission.
    """
    sent = (
        messaging_attributes(topic, operation="send", operation_type="send", key=workflow_id)
        if topic
        else {}
    )
    return SpanScope(
        name or f"workflow {workflow_id}",
        attributes={"mesh.workflow.id": workflow_id, **sent, **(attributes or {})},
        kind=SpanKind.PRODUCER,
        parent=Context(),
        registry=registry,
        forced_ids=(workflow_trace_id(workflow_id), workflow_span_id(workflow_id)),
    )


def step_span(
    workflow_id: str,
    step_id: str,
    *,
    role: str,
    agent_id: str,
    epoch: int = 0,
    resumed_from_turn: int = 0,
    trace_carrier: Mapping[str, str] | None = None,
    topic: str = "",
    consumer_group: str = "",
    registry: SecretRegistry | None = None,
) -> SpanScope:
    """A step run by its owner; parented on the carried context or the workflow root.

    Pass the triggering envelope's ``trace`` as ``trace_carrier``. With ``topic`` (the workflow
    log the step was read from) it carries the messaging ``process`` attributes: it is the
    consumer span of the submission.
    """
    processed = (
        messaging_attributes(
            topic, operation="process", operation_type="process", key=workflow_id,
            consumer_group=consumer_group,
        )
        if topic
        else {}
    )
    return SpanScope(
        f"step {step_id}",
        attributes={
            **processed,
            "mesh.workflow.id": workflow_id,
            "mesh.step.id": step_id,
            "mesh.role": role,
            "mesh.agent.id": agent_id,
            gen_ai.GEN_AI_AGENT_ID: agent_id,
            "mesh.epoch": epoch,
            "mesh.step.resumed_from_turn": resumed_from_turn,
            "mesh.step.resumed": resumed_from_turn > 0,
        },
        kind=SpanKind.CONSUMER,
        parent=lambda: resolve_parent(trace_carrier, workflow_id=workflow_id),
        registry=registry,
    )


def turn_span(turn: int, *, phase: str = "", registry: SecretRegistry | None = None) -> TurnSpan:
    """One turn of the current step (child of the current span)."""
    return TurnSpan(
        f"turn {turn}",
        attributes={"mesh.turn": turn, "mesh.turn.phase": phase or None},
        registry=registry,
    )


def reasoner_span(
    *,
    model: str,
    temperature: float | None = None,
    max_tokens: int | None = None,
    provider: str = "anthropic",
    operation: str = "chat",
    registry: SecretRegistry | None = None,
) -> ReasonerSpan:
    """A reasoner call named ``{operation} {model}`` as the GenAI conventions ask.

    Sets ``gen_ai.provider.name`` and, for backends that predate it, the deprecated
    ``gen_ai.system`` with the same value.
    """
    return ReasonerSpan(
        f"{operation} {model}",
        attributes={
            gen_ai.GEN_AI_OPERATION_NAME: operation,
            gen_ai.GEN_AI_PROVIDER_NAME: provider,
            gen_ai.GEN_AI_SYSTEM: provider,
            gen_ai.GEN_AI_REQUEST_MODEL: model,
            gen_ai.GEN_AI_REQUEST_TEMPERATURE: temperature,
            gen_ai.GEN_AI_REQUEST_MAX_TOKENS: max_tokens,
        },
        kind=SpanKind.CLIENT,
        registry=registry,
    )


def tool_span(
    tool_name: str,
    *,
    idempotency_key: str,
    call_id: str = "",
    registry: SecretRegistry | None = None,
) -> ToolSpan:
    """A tool (side effect) call named ``execute_tool {tool_name}``."""
    return ToolSpan(
        f"execute_tool {tool_name}",
        attributes={
            gen_ai.GEN_AI_OPERATION_NAME: "execute_tool",
            gen_ai.GEN_AI_TOOL_NAME: tool_name,
            gen_ai.GEN_AI_TOOL_CALL_ID: call_id or None,
            "mesh.tool.idempotency_key": idempotency_key,
        },
        registry=registry,
    )


def checkpoint_span(
    *,
    workflow_id: str,
    step_id: str,
    turn: int,
    epoch: int,
    version: int | None = None,
    size_bytes: int | None = None,
    registry: SecretRegistry | None = None,
) -> CheckpointSpan:
    """A checkpoint write fenced by ``epoch``; size and version may also be set after the write."""
    return CheckpointSpan(
        "checkpoint write",
        attributes={
            "mesh.workflow.id": workflow_id,
            "mesh.step.id": step_id,
            "mesh.turn": turn,
            "mesh.checkpoint.epoch": epoch,
            "mesh.checkpoint.version": version,
            "mesh.checkpoint.bytes": size_bytes,
        },
        registry=registry,
    )


def publish_span(
    topic: str,
    *,
    kind: str,
    workflow_id: str = "",
    step_id: str = "",
    message_id: str = "",
    registry: SecretRegistry | None = None,
) -> SpanScope:
    """Publishing one envelope to Kafka (``send {topic}``, a PRODUCER span).

    Parented on the current span, else on the workflow's derived root (so a publish outside any
    step still lands in the workflow's trace). Inject its context (``SpanScope.inject``) into the
    envelope so the consumer parents on it.
    """
    return SpanScope(
        f"send {topic}",
        attributes={
            **messaging_attributes(
                topic, operation="send", operation_type="send", message_id=message_id,
                key=workflow_id,
            ),
            "mesh.event.kind": kind,
            "mesh.workflow.id": workflow_id or None,
            "mesh.step.id": step_id or None,
        },
        kind=SpanKind.PRODUCER,
        parent=(lambda: resolve_parent(None, workflow_id=workflow_id)) if workflow_id else None,
        registry=registry,
    )


def consume_span(
    topic: str,
    *,
    partition: int,
    offset: int,
    consumer_group: str,
    message_id: str = "",
    key: str = "",
    parent: Context | None = None,
    registry: SecretRegistry | None = None,
) -> SpanScope:
    """Processing one consumed Kafka record (``process {topic}``, a CONSUMER span).

    ``parent`` defaults to the current context.
    """
    return SpanScope(
        f"process {topic}",
        attributes=messaging_attributes(
            topic, operation="process", operation_type="process", message_id=message_id,
            key=key, partition=partition, offset=offset, consumer_group=consumer_group,
        ),
        kind=SpanKind.CONSUMER,
        parent=parent,
        registry=registry,
    )
