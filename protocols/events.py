"""Events of the workflow event log (one topic, keyed by workflow id) and side topics."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from protocols.registry import Payload, register_kind
from protocols.workflow import WorkflowSpec

__all__ = [
    "DeadLetter",
    "StepCompleted",
    "StepEscalated",
    "StepFailed",
    "StepProgress",
    "StepResumeRequested",
    "StepStarted",
    "TraceEvent",
    "VariableRecord",
    "WorkflowCompleted",
    "WorkflowSubmitted",
    "deterministic_event_id",
]


def deterministic_event_id(*parts: object) -> str:
    """An event id derived from what the event is about, so a re-sent duplicate folds to nothing."""
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=16)
    return digest.hexdigest()


class VariableRecord(Payload):
    """A context variable as it travels in step results (values of secret ones stay in the store)."""

    name: str
    """Variable name, e.g. ``auth_token``."""

    value: Any = None
    """The value; None for secrets, whose value is fetched from the state store by reference."""

    secret: bool = False
    """Never rendered in logs, spans, events or scratchpads."""

    priority: int = Field(default=1, ge=0, le=3)
    """Context priority (0 = never evicted)."""

    expires_at_ms: int | None = None
    """Wall-clock expiry in Unix milliseconds, if any."""

    ref: str = ""
    """Where a secret or oversized value is kept (a state-store key)."""


@register_kind("workflow.submitted")
class WorkflowSubmitted(Payload):
    """A client asks the mesh to run a workflow."""

    spec: WorkflowSpec
    """The DAG to run."""

    submitted_by: str = ""
    """Who asked (a user or client id), for audit."""


@register_kind("workflow.step_started")
class StepStarted(Payload):
    """An owner took a step (first start or resume after failover)."""

    role: str
    owner: str
    """Agent id of the owner."""
    epoch: int = Field(ge=0)
    """Owner epoch fencing its checkpoint writes."""
    resumed_from_turn: int = Field(default=0, ge=0)
    """0 on a fresh start, else the last checkpointed turn it continues after."""


@register_kind("workflow.step_progress")
class StepProgress(Payload):
    """One finished turn of a step (for ``mesh watch``; not needed to fold state)."""

    turn: int = Field(ge=0)
    action: str
    outcome: Literal["ok", "retry", "failed", "invalid", "spinning"]
    detail: str = ""
    """One sanitized line."""
    owner: str = ""


@register_kind("workflow.step_completed")
class StepCompleted(Payload):
    """A step finished; its outputs and discovered variables flow to its dependents."""

    outputs: Mapping[str, Any] = Field(default_factory=dict)
    variables: tuple[VariableRecord, ...] = ()
    summary: str = ""
    """History summary handed to dependents (re-hydration)."""
    turns: int = Field(default=0, ge=0)
    owner: str = ""
    resumes: int = Field(default=0, ge=0)
    """How many times the step was resumed from a checkpoint by a new owner."""


@register_kind("workflow.step_failed")
class StepFailed(Payload):
    """A step gave up (turn limit, permanent error)."""

    error: str
    """One sanitized line, ``ErrorType: root cause``."""
    turns: int = Field(default=0, ge=0)
    owner: str = ""


@register_kind("workflow.step_escalated")
class StepEscalated(Payload):
    """A step is paused and asks a human (spinning, or a decision it cannot repair)."""

    reason: str
    turn: int = Field(ge=0)
    owner: str = ""


@register_kind("workflow.effect_in_doubt")
class EffectInDoubt(Payload):
    """A side effect that may have happened before its owner died, and what the new owner did.

    An action whose effect is not deduplicated by the outside service (``Action.at_most_once``,
    e.g. an OAuth token call) is recorded as in doubt in the step's checkpoint before it is sent;
    the owner that resumes the step finds the record and settles it: ``reconciled`` (the action's
    lookup found the effect and its outcome was used, nothing repeated), ``absent`` (the lookup
    found no effect: the call is made, once), or ``repeated`` (no lookup, or the lookup failed:
    the call is made again, and this event is the report of a possible duplicate).
    """

    turn: int = Field(ge=1)
    action: str
    idempotency_key: str
    resolution: Literal["reconciled", "absent", "repeated"]
    detail: str = ""
    owner: str = ""


@register_kind("workflow.step_resume_requested")
class StepResumeRequested(Payload):
    """A human (``mesh resume``) lets a paused step continue."""

    requested_by: str = "cli"
    note: str = ""


@register_kind("workflow.completed")
class WorkflowCompleted(Payload):
    """Every step completed (or one failed)."""

    status: Literal["succeeded", "failed"]
    steps: int = Field(ge=0)


@register_kind("mesh.dead_letter")
class DeadLetter(Payload):
    """A message a consumer could not accept, with why; the raw bytes are kept for inspection."""

    source_topic: str
    partition: int
    offset: int
    reason: str
    """Short code: malformed, oversize, unknown_kind, schema, unsigned, forged, replayed, handler."""
    error: str
    key: bytes | None = None
    raw: bytes = b""
    consumer: str = ""


@register_kind("mesh.trace_event")
class TraceEvent(Payload):
    """A structured trace event (mirrors span events) for consumers without a tracing backend."""

    name: str
    attributes: Mapping[str, str | int | float | bool] = Field(default_factory=dict)
