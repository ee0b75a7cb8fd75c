"""Observers of the turn loop: KPIs, scratchpads (and anything else that watches) see each step
from outside the loop, the way faststream's telemetry middleware sees each message.

The turn loop (``StepRunner``) reports what happened as small frozen records (a step started on
this owner, a prompt was built, the reasoner answered, a checkpoint was written, a turn ended, an
in-doubt effect was settled); each observer receives the ones it overrides. Five of them also open
a scope around the work they announce (the step, a turn, a reasoner call, a tool call, a
checkpoint write): an observer's ``*_scope`` hook may return a context manager that the loop
holds open around that work, which is how ``SpanObserver`` nests the OpenTelemetry spans. Adding a sink (a
metrics backend, a log, a test probe) is one class and one ``observers=[...]`` argument, and the
loop's code does not change.

Ordering and concurrency: hooks are called synchronously on the step's task, in the order the
events happen within one step, and for each event in the order the observers were given; scopes
are entered in that order and left in the reverse one, and an event that happens inside a scope
is reported while it is open. Steps
of one runner run concurrently, so an observer that keeps per-step state keys it by
``(workflow_id, step_id)``. A hook must not block (no I/O that waits on the network): it runs
inside the turn. A hook that raises is logged and skipped; telemetry never fails a turn.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from mesh.telemetry import (
    Kpis,
    ScratchpadTurn,
    ScratchpadWriter,
    checkpoint_span,
    reasoner_span,
    step_span,
    tool_span,
    turn_span,
)

__all__ = [
    "ActionDone",
    "CheckpointWriting",
    "CheckpointWritten",
    "EffectSettled",
    "KpiObserver",
    "Observers",
    "PromptBuilt",
    "ReasonerAnswered",
    "ReasonerCall",
    "ReasonerRejected",
    "ScratchpadObserver",
    "SpanObserver",
    "StepClosed",
    "StepOpened",
    "ToolAttempt",
    "ToolCall",
    "TurnEnded",
    "TurnObserver",
    "TurnStarted",
]

Scope = AbstractContextManager[Any] | None
"""What a ``*_scope`` hook returns: a context manager held open around the work, or None."""

log = logging.getLogger("mesh.runtime.observers")


@dataclass(frozen=True, slots=True)
class StepOpened:
    """This agent took a step and is about to run its turns."""

    workflow_id: str
    step_id: str
    role: str
    agent_id: str
    epoch: int
    """The owner epoch it claimed."""
    mission: str = ""
    resumed_from_turn: int = 0
    """Last checkpointed turn it continues from (0: a fresh step)."""
    trace: Mapping[str, str] | None = None
    """W3C trace context the step's event carried (its parent span), if any."""
    topic: str = ""
    """Topic the step was read from (messaging attributes of the step span)."""
    consumer_group: str = ""
    """Consumer group that read it."""


@dataclass(frozen=True, slots=True)
class StepClosed:
    """This agent stopped running the step's turns (it ended, paused, or is stopping here)."""

    workflow_id: str
    step_id: str
    status: str
    turns: int
    """Last checkpointed turn."""


@dataclass(frozen=True, slots=True)
class TurnStarted:
    """A turn begins (its scope holds the prompt, the decision, the call and the checkpoint)."""

    workflow_id: str
    step_id: str
    turn: int
    phase: str


@dataclass(frozen=True, slots=True)
class PromptBuilt:
    """A turn's prompt was built."""

    workflow_id: str
    step_id: str
    turn: int
    phase: str
    """``planning``, ``execution`` or ``recovery``."""
    tokens: int
    budget: int
    """Usable tokens of the prompt budget."""
    evictions: int = 0
    """Eviction ledger lines of the prompt (dropped, compressed, decayed, restored blocks)."""


@dataclass(frozen=True, slots=True)
class ReasonerCall:
    """A reasoner call begins."""

    workflow_id: str
    step_id: str
    model: str
    temperature: float
    max_tokens: int
    provider: str


@dataclass(frozen=True, slots=True)
class ReasonerRejected:
    """The reasoner's answer could not be read as a decision."""

    workflow_id: str
    step_id: str
    error_type: str


@dataclass(frozen=True, slots=True)
class ReasonerAnswered:
    """The reasoner answered with provider-reported usage."""

    workflow_id: str
    step_id: str
    model: str
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class ToolCall:
    """An action's call begins (one scope per attempt)."""

    workflow_id: str
    step_id: str
    action: str
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class ToolAttempt:
    """How an attempt of an action's call ended: ``ok``, ``retry`` or ``failed``."""

    workflow_id: str
    step_id: str
    action: str
    outcome: str
    detail: str = ""
    """One sanitized line (the summary, or the error)."""


@dataclass(frozen=True, slots=True)
class ActionDone:
    """The turn's action is done, before its outcome is folded into the state."""

    workflow_id: str
    step_id: str
    turn: int
    action: str
    error: str = ""
    """One sanitized line when it failed, else empty."""


@dataclass(frozen=True, slots=True)
class CheckpointWriting:
    """A checkpoint write begins."""

    workflow_id: str
    step_id: str
    turn: int
    epoch: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class CheckpointWritten:
    """A checkpoint of the step was acknowledged by the store."""

    workflow_id: str
    step_id: str
    turn: int
    duration_ms: float
    size_bytes: int
    version: int = 0
    """The version the store gave it."""


@dataclass(frozen=True, slots=True)
class TurnEnded:
    """A turn was folded and checkpointed."""

    workflow_id: str
    step_id: str
    turn: int
    action: str
    outcome: str
    """``ok``, ``failed`` or ``spinning`` (the step paused for a human)."""
    summary: str
    """One sanitized line."""
    latency_ms: float
    phase: str
    model: str
    params: Mapping[str, Any] = field(default_factory=dict)
    """Parameters as executed, secrets masked."""
    reasoning: str = ""
    injected: tuple[str, ...] = ()
    """Names of parameters filled or corrected from state."""
    escalation: str = ""
    """Why the step paused, when ``outcome`` is ``spinning``."""


@dataclass(frozen=True, slots=True)
class EffectSettled:
    """A call a previous owner left in doubt was settled (``reconciled``, ``absent``, ``repeated``)."""

    workflow_id: str
    step_id: str
    turn: int
    action: str
    resolution: str


class TurnObserver:
    """Base of the turn loop's observers: every hook does nothing; override the ones you need."""

    def step_opened(self, event: StepOpened) -> None:
        """This agent took a step (called before ``step_scope``)."""

    def step_scope(self, event: StepOpened) -> Scope:
        """Held open while this agent runs the step's turns."""
        return None

    def step_closed(self, event: StepClosed) -> None:
        """The step's turns stopped here (inside ``step_scope``)."""

    def turn_scope(self, event: TurnStarted) -> Scope:
        """Held open around one turn."""
        return None

    def prompt_built(self, event: PromptBuilt) -> None:
        """A turn's prompt was built."""

    def reasoner_scope(self, event: ReasonerCall) -> Scope:
        """Held open around one reasoner call."""
        return None

    def reasoner_rejected(self, event: ReasonerRejected) -> None:
        """The answer was not a readable decision (a repair follows)."""

    def reasoner_answered(self, event: ReasonerAnswered) -> None:
        """The reasoner answered (with usage)."""

    def tool_scope(self, event: ToolCall) -> Scope:
        """Held open around one attempt of an action's call."""
        return None

    def tool_attempt(self, event: ToolAttempt) -> None:
        """An attempt ended (inside ``tool_scope``)."""

    def action_done(self, event: ActionDone) -> None:
        """The turn's action is done."""

    def checkpoint_scope(self, event: CheckpointWriting) -> Scope:
        """Held open around one checkpoint write."""
        return None

    def checkpoint_written(self, event: CheckpointWritten) -> None:
        """A checkpoint was acknowledged (inside ``checkpoint_scope``)."""

    def turn_ended(self, event: TurnEnded) -> None:
        """A turn was folded and checkpointed."""

    def effect_settled(self, event: EffectSettled) -> None:
        """An in-doubt call was settled."""


class Observers(TurnObserver):
    """Several observers as one: each hook calls them in order, logging (never raising) failures."""

    def __init__(self, observers: Iterable[TurnObserver] = ()) -> None:
        """Dispatch to ``observers``, in this order."""
        self.observers = list(observers)

    def _each(self, hook: str, event: object) -> None:
        for observer in self.observers:
            try:
                getattr(observer, hook)(event)
            except Exception:  # telemetry never fails a turn
                log.warning(
                    "observer %s failed in %s", type(observer).__name__, hook, exc_info=True
                )

    @contextmanager
    def _scopes(self, hook: str, event: object) -> Iterator[None]:
        with ExitStack() as stack:
            for observer in self.observers:
                try:
                    scope = getattr(observer, hook)(event)
                    if scope is not None:
                        stack.enter_context(scope)
                except Exception:  # telemetry never fails a turn
                    log.warning(
                        "observer %s failed in %s", type(observer).__name__, hook, exc_info=True
                    )
            yield

    def step_scope(self, event: StepOpened) -> AbstractContextManager[None]:
        """Every observer's step scope, as one."""
        return self._scopes("step_scope", event)

    def step_closed(self, event: StepClosed) -> None:
        """Dispatch ``step_closed``."""
        self._each("step_closed", event)

    def turn_scope(self, event: TurnStarted) -> AbstractContextManager[None]:
        """Every observer's turn scope, as one."""
        return self._scopes("turn_scope", event)

    def reasoner_scope(self, event: ReasonerCall) -> AbstractContextManager[None]:
        """Every observer's reasoner scope, as one."""
        return self._scopes("reasoner_scope", event)

    def reasoner_rejected(self, event: ReasonerRejected) -> None:
        """Dispatch ``reasoner_rejected``."""
        self._each("reasoner_rejected", event)

    def tool_scope(self, event: ToolCall) -> AbstractContextManager[None]:
        """Every observer's tool scope, as one."""
        return self._scopes("tool_scope", event)

    def tool_attempt(self, event: ToolAttempt) -> None:
        """Dispatch ``tool_attempt``."""
        self._each("tool_attempt", event)

    def action_done(self, event: ActionDone) -> None:
        """Dispatch ``action_done``."""
        self._each("action_done", event)

    def checkpoint_scope(self, event: CheckpointWriting) -> AbstractContextManager[None]:
        """Every observer's checkpoint scope, as one."""
        return self._scopes("checkpoint_scope", event)

    def step_opened(self, event: StepOpened) -> None:
        """Dispatch ``step_opened``."""
        self._each("step_opened", event)

    def prompt_built(self, event: PromptBuilt) -> None:
        """Dispatch ``prompt_built``."""
        self._each("prompt_built", event)

    def reasoner_answered(self, event: ReasonerAnswered) -> None:
        """Dispatch ``reasoner_answered``."""
        self._each("reasoner_answered", event)

    def checkpoint_written(self, event: CheckpointWritten) -> None:
        """Dispatch ``checkpoint_written``."""
        self._each("checkpoint_written", event)

    def turn_ended(self, event: TurnEnded) -> None:
        """Dispatch ``turn_ended``."""
        self._each("turn_ended", event)

    def effect_settled(self, event: EffectSettled) -> None:
        """Dispatch ``effect_settled``."""
        self._each("effect_settled", event)


class KpiObserver(TurnObserver):
    """Records the runtime's KPIs (``mesh.telemetry.Kpis``) from the turn loop's events."""

    def __init__(self, kpis: Kpis) -> None:
        """Record into ``kpis``."""
        self.kpis = kpis

    def step_opened(self, event: StepOpened) -> None:
        """A step taken: a recovery when it resumes from a checkpoint."""
        self.kpis.record_step_started(resumed=event.resumed_from_turn > 0)

    def prompt_built(self, event: PromptBuilt) -> None:
        """Context utilization of the turn."""
        self.kpis.record_context_utilization(event.tokens, event.budget, phase=event.phase)

    def reasoner_answered(self, event: ReasonerAnswered) -> None:
        """Provider-reported token usage."""
        self.kpis.record_token_usage(
            model=event.model, input_tokens=event.input_tokens, output_tokens=event.output_tokens
        )

    def checkpoint_written(self, event: CheckpointWritten) -> None:
        """Checkpoint write time and state size."""
        self.kpis.record_checkpoint_write(event.duration_ms, size_bytes=event.size_bytes)

    def turn_ended(self, event: TurnEnded) -> None:
        """Turn latency, and spinning when the turn paused the step."""
        if event.outcome == "spinning":
            self.kpis.record_spinning(reason=event.escalation.split(":")[0])
        self.kpis.record_turn_latency(event.latency_ms, outcome=event.outcome)

    def effect_settled(self, event: EffectSettled) -> None:
        """In-doubt effects, by resolution (when the KPIs count them)."""
        record = getattr(self.kpis, "record_effect_in_doubt", None)
        if record is not None:
            record(resolution=event.resolution)


class ScratchpadObserver(TurnObserver):
    """Writes each step's markdown scratchpad (``mesh.telemetry.ScratchpadWriter``)."""

    def __init__(self, scratchpad: ScratchpadWriter) -> None:
        """Write through ``scratchpad``."""
        self.scratchpad = scratchpad

    def step_opened(self, event: StepOpened) -> None:
        """The header, or a "resumed" note."""
        self.scratchpad.open_step(
            event.workflow_id,
            event.step_id,
            role=event.role,
            agent_id=event.agent_id,
            epoch=event.epoch,
            mission=event.mission,
            resumed_from_turn=event.resumed_from_turn,
        )

    def turn_ended(self, event: TurnEnded) -> None:
        """One turn block: decision, reasoning, outcome."""
        self.scratchpad.append_turn(
            event.workflow_id,
            event.step_id,
            ScratchpadTurn(
                turn=event.turn,
                action=event.action,
                params=event.params,
                reasoning=event.reasoning,
                outcome=f"{event.outcome}: {event.summary}",
                latency_ms=event.latency_ms,
                phase=event.phase,
                model=event.model,
                injected=event.injected,
            ),
        )


class SpanObserver(TurnObserver):
    """The OpenTelemetry spans of a step (``mesh.telemetry``): step, turn, reasoner call (GenAI
    attributes), tool call and checkpoint, nested as the work is, with the loop's events as their
    attributes. One per runner; steps running concurrently each keep their own open spans."""

    def __init__(self) -> None:
        """No span is open."""
        # (kind, workflow id, step id) -> the open spans of that kind, innermost last (a refresh
        # call runs inside the tool call that needed it).
        self._open: dict[tuple[str, str, str], list[Any]] = {}

    @contextmanager
    def _hold(self, kind: str, workflow_id: str, step_id: str, scope: Any) -> Iterator[None]:
        key = (kind, workflow_id, step_id)
        with scope as span:
            self._open.setdefault(key, []).append(span)
            try:
                yield
            finally:
                stack = self._open[key]
                stack.pop()
                if not stack:
                    del self._open[key]

    def _current(self, kind: str, workflow_id: str, step_id: str) -> Any:
        stack = self._open.get((kind, workflow_id, step_id))
        return stack[-1] if stack else None

    def step_scope(self, event: StepOpened) -> Scope:
        """The step span (a consumer span under the event's trace context)."""
        span = step_span(
            event.workflow_id,
            event.step_id,
            role=event.role,
            agent_id=event.agent_id,
            epoch=event.epoch,
            resumed_from_turn=event.resumed_from_turn,
            trace_carrier=event.trace,
            topic=event.topic,
            consumer_group=event.consumer_group,
        )
        return self._hold("step", event.workflow_id, event.step_id, span)

    def step_closed(self, event: StepClosed) -> None:
        """The step's status and turns on its span."""
        span = self._current("step", event.workflow_id, event.step_id)
        if span is not None:
            span.set_many({"mesh.step.status": event.status, "mesh.step.turns": event.turns})

    def turn_scope(self, event: TurnStarted) -> Scope:
        """The turn span."""
        span = turn_span(event.turn, phase=event.phase)
        return self._hold("turn", event.workflow_id, event.step_id, span)

    def prompt_built(self, event: PromptBuilt) -> None:
        """The prompt's size, budget and evictions on the turn span."""
        span = self._current("turn", event.workflow_id, event.step_id)
        if span is not None:
            span.set_many(
                {
                    "mesh.context.tokens": event.tokens,
                    "mesh.context.budget": event.budget,
                    "mesh.context.evictions": event.evictions,
                }
            )

    def reasoner_scope(self, event: ReasonerCall) -> Scope:
        """The reasoner span (GenAI conventions)."""
        span = reasoner_span(
            model=event.model,
            temperature=event.temperature,
            max_tokens=event.max_tokens,
            provider=event.provider,
        )
        return self._hold("reasoner", event.workflow_id, event.step_id, span)

    def reasoner_rejected(self, event: ReasonerRejected) -> None:
        """``error.type`` on the reasoner span."""
        span = self._current("reasoner", event.workflow_id, event.step_id)
        if span is not None:
            span.set("error.type", event.error_type)

    def reasoner_answered(self, event: ReasonerAnswered) -> None:
        """Provider-reported usage on the reasoner span."""
        span = self._current("reasoner", event.workflow_id, event.step_id)
        if span is not None:
            span.record_response(
                input_tokens=event.input_tokens,
                output_tokens=event.output_tokens,
                finish_reasons=["tool_use"],
            )

    def tool_scope(self, event: ToolCall) -> Scope:
        """The tool span of one attempt."""
        span = tool_span(event.action, idempotency_key=event.idempotency_key)
        return self._hold("tool", event.workflow_id, event.step_id, span)

    def tool_attempt(self, event: ToolAttempt) -> None:
        """The attempt's outcome on its tool span."""
        span = self._current("tool", event.workflow_id, event.step_id)
        if span is not None:
            span.set_outcome(event.outcome, detail=event.detail)

    def action_done(self, event: ActionDone) -> None:
        """The decision and how its action ended, on the turn span."""
        span = self._current("turn", event.workflow_id, event.step_id)
        if span is not None:
            span.set_decision(
                event.action, outcome="failed" if event.error else "ok", detail=event.error
            )

    def checkpoint_scope(self, event: CheckpointWriting) -> Scope:
        """The checkpoint span."""
        span = checkpoint_span(
            workflow_id=event.workflow_id,
            step_id=event.step_id,
            turn=event.turn,
            epoch=event.epoch,
            size_bytes=event.size_bytes,
        )
        return self._hold("checkpoint", event.workflow_id, event.step_id, span)

    def checkpoint_written(self, event: CheckpointWritten) -> None:
        """The stored version on the checkpoint span."""
        span = self._current("checkpoint", event.workflow_id, event.step_id)
        if span is not None:
            span.set_result(version=event.version)
