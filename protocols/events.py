"""Events of the workflow event log (one topic, keyed by workflow id) and side topics."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from protocols.registry import Payload, register_kind
from protocols.workflow import WorkflowSpec

__all__ = [
    "DeadLetter",
    "EditedVariable",
    "EscalationDecided",
    "EscalationKind",
    "StepCompleted",
    "StepEscalated",
    "StepFailed",
    "StepProgress",
    "StepResumeRequested",
    "StepStarted",
    "TokenUsage",
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


class TokenUsage(Payload):
    """Tokens a step (or one turn) spent on reasoner calls, and what they cost by the price table.

    Input and output tokens are the provider's (the response's ``usage``) when it reported them,
    else our tiktoken count of what was sent and received (the rule reasoner, fallbacks).
    """

    input_tokens: int = Field(default=0, ge=0)
    """Prompt tokens."""

    output_tokens: int = Field(default=0, ge=0)
    """Generated tokens."""

    cost_usd: float = Field(default=0.0, ge=0)
    """Estimated cost in US dollars (``mesh.llm.PriceTable``: per model, per million tokens)."""

    calls: int = Field(default=0, ge=0)
    """Reasoner calls counted (repairs included)."""

    @property
    def tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=round(self.cost_usd + other.cost_usd, 9),
            calls=self.calls + other.calls,
        )


EscalationKind = Literal["spinning", "budget", "invalid_decision", "reasoner_unavailable"]
"""Why a step paused, machine-readable: the same decision or no progress for N turns
(``spinning``); the workflow's token or cost budget reached (``budget``); no valid decision after
the repairs (``invalid_decision``); the model provider unavailable after the retries
(``reasoner_unavailable``)."""


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
    turn_usage: TokenUsage = Field(default_factory=TokenUsage)
    """Tokens and cost of this turn's reasoner calls."""
    usage: TokenUsage = Field(default_factory=TokenUsage)
    """The step's total so far (this turn included)."""


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
    usage: TokenUsage = Field(default_factory=TokenUsage)
    """Tokens and cost of the step's reasoner calls, all turns."""


@register_kind("workflow.step_failed")
class StepFailed(Payload):
    """A step gave up (turn limit, permanent error)."""

    error: str
    """One sanitized line, ``ErrorType: root cause``."""
    turns: int = Field(default=0, ge=0)
    owner: str = ""
    usage: TokenUsage = Field(default_factory=TokenUsage)
    """Tokens and cost of the step's reasoner calls, all turns."""


@register_kind("workflow.step_escalated")
class StepEscalated(Payload):
    """A step is paused and asks a human (spinning, a budget reached, a decision it cannot repair).

    Each pause has its own random ``nonce``; only an ``EscalationDecided`` carrying it applies to
    this pause, so an approval given for an earlier pause never lets a later one continue.
    """

    reason: str
    """One line for a human."""
    turn: int = Field(ge=0)
    """The turn that paused."""
    owner: str = ""
    nonce: str = ""
    """Random id of this pause (32 hex); "" only in logs written before nonces existed."""
    kind: EscalationKind = "spinning"
    """Why, machine-readable."""
    usage: TokenUsage = Field(default_factory=TokenUsage)
    """The step's tokens and cost so far."""


class EditedVariable(Payload):
    """A context variable an operator sets when deciding an escalation (``decision="edit"``)."""

    name: str = Field(min_length=1, max_length=128)
    """Variable name."""
    value: Any = None
    """The new value; None for a secret, whose value travels sealed in ``sealed``."""
    secret: bool = False
    """Masked everywhere; the value is sealed with the mesh's data key."""
    sealed: bytes = b""
    """A secret's value sealed (``mesh.security.DataCipher``) for context
    ``("decision", workflow_id, step_id, nonce, name)``; empty for a plain variable."""


@register_kind("workflow.escalation_decided")
class EscalationDecided(Payload):
    """A human's decision on one pause of a step, signed by the client that published it.

    ``resume`` lets the step continue from its checkpoint, ``reject`` fails it, ``edit`` sets
    ``variables`` and then resumes. The owning agent applies it only when ``nonce`` is the nonce
    of the step's current pause (in its checkpoint); any other decision is stale and refused.
    """

    nonce: str = Field(min_length=1, max_length=64)
    """The ``StepEscalated.nonce`` of the pause this decides."""
    decision: Literal["resume", "reject", "edit"]
    operator: str = Field(min_length=1, max_length=200)
    """Who decided (a person); the envelope's signed sender is the client they used."""
    note: str = Field(default="", max_length=2000)
    """Why, for the audit trail."""
    variables: tuple[EditedVariable, ...] = ()
    """What ``edit`` changes (empty for ``resume`` and ``reject``)."""
    decided_at_ms: int = Field(default=0, ge=0)
    """Wall-clock time of the decision, Unix ms."""

    @model_validator(mode="after")
    def _variables_only_for_edit(self) -> EscalationDecided:
        if self.decision == "edit" and not self.variables:
            raise ValueError("an 'edit' decision needs at least one variable")
        if self.decision != "edit" and self.variables:
            raise ValueError(f"a {self.decision!r} decision carries no variables (use 'edit')")
        names = [v.name for v in self.variables]
        if len(set(names)) != len(names):
            raise ValueError(f"variables named twice: {sorted(n for n in set(names) if names.count(n) > 1)}")
        return self


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
    """Legacy: ``mesh resume`` before pauses had nonces. Still decodes; no longer resumes anything
    (it names no pause, so it could approve a later one): ``EscalationDecided`` replaced it."""

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
