"""Observers of the turn loop: spans, trace events, KPIs, scratchpads (and anything else that
watches) see each step from outside the loop, the way faststream's telemetry middleware sees each
message.

The turn loop (``StepRunner``) reports what happened as small frozen records (a step started on
this owner, a prompt was built, the reasoner answered, an at-most-once call was recorded in doubt,
a checkpoint was written, a turn ended, an in-doubt effect was settled, a secret was refreshed, a
human's decision was applied or refused); each observer receives the ones it overrides. Five of
them also open a scope around the work they announce (the step, a turn, a reasoner call, a tool
call, a checkpoint write): an observer's ``*_scope`` hook may return a context manager that the
loop holds open around that work, which is how ``SpanObserver`` nests the OpenTelemetry spans.
Adding a sink (a metrics backend, a trace-event topic, a log, a test probe) is one class and one
``observers=[...]`` argument, and the loop's code does not change: ``TraceEventObserver`` is the
trace-event topic's.

Ordering and concurrency: hooks are called on the step's task, in the order the events happen
within one step, and for each event in the order the observers were given; scopes are entered in
that order and left in the reverse one, and an event that happens inside a scope is reported
while it is open. Every hook but the scopes may be a coroutine function (``async def``): the loop
awaits it before it goes on, so what it publishes is out before the work that follows (the trace
event ``effect.in_doubt`` is on the bus before the call it guards is made, ``effect.completed``
only once the checkpoint that holds the call's result is written). Such a hook delays the turn by
as long as it takes: bound it (``TraceEventEmitter`` gives up on a publish after its timeout); a
plain hook must not block at all. Steps of one runner run concurrently, so an observer that keeps
per-step state keys it by ``(workflow_id, step_id)``. A hook that raises is logged and skipped;
telemetry never fails a turn. Cancellation is not an error: it goes through (the step's task is
being stopped).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from mesh.telemetry import (
    Kpis,
    ScratchpadTurn,
    ScratchpadWriter,
    TraceEventEmitter,
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
    "EffectCompleted",
    "EffectPending",
    "EffectSettled",
    "KpiObserver",
    "Notified",
    "Observers",
    "OperatorDecision",
    "PromptBuilt",
    "ReasonerAnswered",
    "ReasonerCall",
    "ReasonerRejected",
    "ScratchpadObserver",
    "SecretRefreshed",
    "SpanObserver",
    "StepClosed",
    "StepOpened",
    "ToolAttempt",
    "ToolCall",
    "TraceEventObserver",
    "TurnEnded",
    "TurnObserver",
    "TurnStarted",
]

Scope = AbstractContextManager[Any] | None
"""What a ``*_scope`` hook returns: a context manager held open around the work, or None."""

Notified = Awaitable[None] | None
"""What any other hook returns: None, or (an ``async def`` hook) an awaitable the loop awaits."""

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
    resumes: int = 0
    """Times an owner other than the one before it resumed the step (``StepState.resumes``)."""


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
class EffectPending:
    """An at-most-once call was checkpointed as in doubt and is about to be made (the hooks are
    awaited before it is: a kill during the call leaves a record of it)."""

    workflow_id: str
    step_id: str
    turn: int
    action: str
    """The action, or the refresher of a secret (``authenticate``)."""
    key: str
    """Idempotency key of the call."""


@dataclass(frozen=True, slots=True)
class EffectCompleted:
    """An at-most-once call's result was checkpointed: it is no longer in doubt."""

    workflow_id: str
    step_id: str
    key: str
    """Idempotency key of the call."""
    turn: int = 0
    action: str = ""
    resumed: bool = False
    """Said again by an owner that resumed the step from the checkpoint holding that result (its
    predecessor may have died before saying it); ``turn`` and ``action`` are then unknown (0, "")."""


@dataclass(frozen=True, slots=True)
class EffectSettled:
    """A call a previous owner left in doubt was settled (``reconciled``, ``absent``, ``repeated``)."""

    workflow_id: str
    step_id: str
    turn: int
    action: str
    resolution: str
    key: str = ""
    """Idempotency key of the call."""


@dataclass(frozen=True, slots=True)
class SecretRefreshed:
    """A secret variable got a fresh value (never carried here)."""

    workflow_id: str
    step_id: str
    variable: str
    turn: int
    why: str
    """``expired``, ``refused as expired`` or ``reconciled`` (a refresh left in doubt was found)."""
    source: str
    """The refresher action that got it, or ``shared`` (another step of the workflow had)."""
    key: str = ""
    """Idempotency key of the refresh call; empty when the value was adopted from another step."""
    expires_at_ms: int | None = None
    """Expiry of the new value, when the refresher said."""


@dataclass(frozen=True, slots=True)
class OperatorDecision:
    """A human's decision on a paused step was applied (and checkpointed) or refused as stale
    (its nonce is not the step's current pause)."""

    workflow_id: str
    step_id: str
    nonce: str
    operator: str
    decision: str
    """``resume``, ``edit`` or ``reject``."""
    applied: bool


class TurnObserver:
    """Base of the turn loop's observers: every hook does nothing; override the ones you need.

    Any hook but the ``*_scope`` ones may be overridden with an ``async def``: the loop awaits it.
    """

    def step_opened(self, event: StepOpened) -> Notified:
        """This agent took a step (called before ``step_scope``)."""
        return None

    def step_scope(self, event: StepOpened) -> Scope:
        """Held open while this agent runs the step's turns."""
        return None

    def step_started(self, event: StepOpened) -> Notified:
        """The step's scope is open; its turns (or the settling of an in-doubt call) follow."""
        return None

    def step_closed(self, event: StepClosed) -> Notified:
        """The step's turns stopped here (inside ``step_scope``)."""
        return None

    def turn_scope(self, event: TurnStarted) -> Scope:
        """Held open around one turn."""
        return None

    def prompt_built(self, event: PromptBuilt) -> Notified:
        """A turn's prompt was built."""
        return None

    def reasoner_scope(self, event: ReasonerCall) -> Scope:
        """Held open around one reasoner call."""
        return None

    def reasoner_rejected(self, event: ReasonerRejected) -> Notified:
        """The answer was not a readable decision (a repair follows)."""
        return None

    def reasoner_answered(self, event: ReasonerAnswered) -> Notified:
        """The reasoner answered (with usage)."""
        return None

    def effect_pending(self, event: EffectPending) -> Notified:
        """An at-most-once call was checkpointed in doubt; it is made once this returns."""
        return None

    def tool_scope(self, event: ToolCall) -> Scope:
        """Held open around one attempt of an action's call."""
        return None

    def tool_attempt(self, event: ToolAttempt) -> Notified:
        """An attempt ended (inside ``tool_scope``)."""
        return None

    def action_done(self, event: ActionDone) -> Notified:
        """The turn's action is done."""
        return None

    def checkpoint_scope(self, event: CheckpointWriting) -> Scope:
        """Held open around one checkpoint write."""
        return None

    def checkpoint_written(self, event: CheckpointWritten) -> Notified:
        """A checkpoint was acknowledged (inside ``checkpoint_scope``)."""
        return None

    def effect_completed(self, event: EffectCompleted) -> Notified:
        """An at-most-once call's result was checkpointed (after ``checkpoint_written``)."""
        return None

    def turn_ended(self, event: TurnEnded) -> Notified:
        """A turn was folded and checkpointed (and its progress published)."""
        return None

    def effect_settled(self, event: EffectSettled) -> Notified:
        """An in-doubt call was settled (after its ``EffectInDoubt`` log event was published)."""
        return None

    def secret_refreshed(self, event: SecretRefreshed) -> Notified:
        """A secret variable got a fresh value, checkpointed."""
        return None

    def operator_decided(self, event: OperatorDecision) -> Notified:
        """A human's decision was applied (checkpointed) or refused (before ``step_opened``)."""
        return None


class Observers(TurnObserver):
    """Several observers as one: each hook calls them in order, awaiting ``async`` hooks and logging
    (never raising) failures; a cancellation goes through."""

    def __init__(self, observers: Iterable[TurnObserver] = ()) -> None:
        """Dispatch to ``observers``, in this order."""
        self.observers = list(observers)

    async def _each(self, hook: str, event: object) -> None:
        for observer in self.observers:
            try:
                pending = getattr(observer, hook)(event)
                if pending is not None:
                    await pending
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

    async def step_opened(self, event: StepOpened) -> None:
        """Dispatch ``step_opened``."""
        await self._each("step_opened", event)

    def step_scope(self, event: StepOpened) -> AbstractContextManager[None]:
        """Every observer's step scope, as one."""
        return self._scopes("step_scope", event)

    async def step_started(self, event: StepOpened) -> None:
        """Dispatch ``step_started``."""
        await self._each("step_started", event)

    async def step_closed(self, event: StepClosed) -> None:
        """Dispatch ``step_closed``."""
        await self._each("step_closed", event)

    def turn_scope(self, event: TurnStarted) -> AbstractContextManager[None]:
        """Every observer's turn scope, as one."""
        return self._scopes("turn_scope", event)

    async def prompt_built(self, event: PromptBuilt) -> None:
        """Dispatch ``prompt_built``."""
        await self._each("prompt_built", event)

    def reasoner_scope(self, event: ReasonerCall) -> AbstractContextManager[None]:
        """Every observer's reasoner scope, as one."""
        return self._scopes("reasoner_scope", event)

    async def reasoner_rejected(self, event: ReasonerRejected) -> None:
        """Dispatch ``reasoner_rejected``."""
        await self._each("reasoner_rejected", event)

    async def reasoner_answered(self, event: ReasonerAnswered) -> None:
        """Dispatch ``reasoner_answered``."""
        await self._each("reasoner_answered", event)

    async def effect_pending(self, event: EffectPending) -> None:
        """Dispatch ``effect_pending``."""
        await self._each("effect_pending", event)

    def tool_scope(self, event: ToolCall) -> AbstractContextManager[None]:
        """Every observer's tool scope, as one."""
        return self._scopes("tool_scope", event)

    async def tool_attempt(self, event: ToolAttempt) -> None:
        """Dispatch ``tool_attempt``."""
        await self._each("tool_attempt", event)

    async def action_done(self, event: ActionDone) -> None:
        """Dispatch ``action_done``."""
        await self._each("action_done", event)

    def checkpoint_scope(self, event: CheckpointWriting) -> AbstractContextManager[None]:
        """Every observer's checkpoint scope, as one."""
        return self._scopes("checkpoint_scope", event)

    async def checkpoint_written(self, event: CheckpointWritten) -> None:
        """Dispatch ``checkpoint_written``."""
        await self._each("checkpoint_written", event)

    async def effect_completed(self, event: EffectCompleted) -> None:
        """Dispatch ``effect_completed``."""
        await self._each("effect_completed", event)

    async def turn_ended(self, event: TurnEnded) -> None:
        """Dispatch ``turn_ended``."""
        await self._each("turn_ended", event)

    async def effect_settled(self, event: EffectSettled) -> None:
        """Dispatch ``effect_settled``."""
        await self._each("effect_settled", event)

    async def secret_refreshed(self, event: SecretRefreshed) -> None:
        """Dispatch ``secret_refreshed``."""
        await self._each("secret_refreshed", event)

    async def operator_decided(self, event: OperatorDecision) -> None:
        """Dispatch ``operator_decided``."""
        await self._each("operator_decided", event)


class TraceEventObserver(TurnObserver):
    """Publishes the turn loop's structured trace events through a ``TraceEventEmitter`` (the
    trace-event topic: ``mesh watch``, the console, the chaos checker read them).

    Events, each with the step's ``workflow_id`` and ``step_id``: ``step.started``
    (``resumed_from_turn``, ``epoch``), ``turn.completed`` (``turn``, ``action``, ``outcome``,
    ``latency_ms``, ``injected``: how many parameters were filled from state), ``step.<status>``
    (``turns``, ``resumes``), ``effect.in_doubt`` and ``effect.completed`` (``turn``, ``action``,
    ``key``; a resuming owner's ``effect.completed`` has ``key`` and ``resumed``),
    ``effect.reconciled`` or ``effect.in_doubt_reported`` (``repeated``) with ``resolution``,
    ``secret.refreshed`` (``variable``, ``turn``, ``why``, ``source``, ``key`` and
    ``expires_at_ms`` when known; never the value), ``escalation.decided`` and
    ``escalation.stale_decision`` (``nonce``, ``operator``, ``decision``).

    Its hooks are awaited where the loop reports them, and the order is the chaos checker's
    evidence (``mesh.chaos``): ``effect.in_doubt`` is published after the in-doubt checkpoint and
    before the call, ``effect.completed`` after the checkpoint holding the result. Put it right
    after the ``SpanObserver`` (``StepRunner(trace_events=...)`` does) so each event carries, and
    is mirrored on, the span it happened in. The emitter redacts secrets and never raises, except
    to let a cancellation through.
    """

    def __init__(self, emitter: TraceEventEmitter) -> None:
        """Publish through ``emitter``."""
        self.emitter = emitter

    async def _emit(self, name: str, workflow_id: str, step_id: str, **attributes: Any) -> None:
        await self.emitter.emit(
            name, {"workflow_id": workflow_id, "step_id": step_id, **attributes}
        )

    async def step_started(self, event: StepOpened) -> None:
        """``step.started``."""
        await self._emit(
            "step.started",
            event.workflow_id,
            event.step_id,
            resumed_from_turn=event.resumed_from_turn,
            epoch=event.epoch,
        )

    async def step_closed(self, event: StepClosed) -> None:
        """``step.<status>`` (``step.completed``, ``step.failed``, ``step.paused``, ``step.running``)."""
        await self._emit(
            f"step.{event.status}",
            event.workflow_id,
            event.step_id,
            turns=event.turns,
            resumes=event.resumes,
        )

    async def effect_pending(self, event: EffectPending) -> None:
        """``effect.in_doubt``."""
        await self._emit(
            "effect.in_doubt",
            event.workflow_id,
            event.step_id,
            turn=event.turn,
            action=event.action,
            key=event.key,
        )

    async def effect_completed(self, event: EffectCompleted) -> None:
        """``effect.completed``."""
        if event.resumed:
            await self._emit(
                "effect.completed", event.workflow_id, event.step_id, key=event.key, resumed=True
            )
            return
        await self._emit(
            "effect.completed",
            event.workflow_id,
            event.step_id,
            turn=event.turn,
            action=event.action,
            key=event.key,
        )

    async def turn_ended(self, event: TurnEnded) -> None:
        """``turn.completed``."""
        await self._emit(
            "turn.completed",
            event.workflow_id,
            event.step_id,
            turn=event.turn,
            action=event.action,
            outcome=event.outcome,
            latency_ms=round(event.latency_ms, 3),
            injected=len(event.injected),
        )

    async def effect_settled(self, event: EffectSettled) -> None:
        """``effect.reconciled`` (found or absent) or ``effect.in_doubt_reported`` (repeated)."""
        name = "effect.in_doubt_reported" if event.resolution == "repeated" else "effect.reconciled"
        await self._emit(
            name,
            event.workflow_id,
            event.step_id,
            turn=event.turn,
            action=event.action,
            key=event.key,
            resolution=event.resolution,
        )

    async def secret_refreshed(self, event: SecretRefreshed) -> None:
        """``secret.refreshed`` (the variable's name, never its value)."""
        await self._emit(
            "secret.refreshed",
            event.workflow_id,
            event.step_id,
            variable=event.variable,
            turn=event.turn,
            why=event.why,
            key=event.key or None,  # adopted from another step: no call, no key
            source=event.source,
            expires_at_ms=event.expires_at_ms,
        )

    async def operator_decided(self, event: OperatorDecision) -> None:
        """``escalation.decided``, or ``escalation.stale_decision`` when refused."""
        await self._emit(
            "escalation.decided" if event.applied else "escalation.stale_decision",
            event.workflow_id,
            event.step_id,
            nonce=event.nonce,
            operator=event.operator,
            decision=event.decision,
        )


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
