"""The turn loop's observers (mesh.runtime.observers): what they see, in which order, and that a
failing observer does not fail a turn; KPIs and scratchpads are observers like any other."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from mesh.llm import ActionSpec, Decision, ReasonerRequest, RuleReasoner
from mesh.runtime import (
    Action,
    ActionContext,
    ActionOutcome,
    ContextVariable,
    NewVariable,
    Rehydration,
    StackPromptBuilder,
    StepRunner,
)
from mesh.runtime.observers import (
    ActionDone,
    CheckpointWritten,
    EffectCompleted,
    EffectPending,
    EffectSettled,
    Observers,
    OperatorDecision,
    PromptBuilt,
    ReasonerAnswered,
    ReasonerRejected,
    SecretRefreshed,
    StepClosed,
    StepOpened,
    ToolAttempt,
    TurnEnded,
    TurnObserver,
)
from mesh.store import Checkpoint, InMemoryStateStore
from mesh.telemetry import Kpis, ScratchpadWriter, TraceEventEmitter
from protocols import Envelope, TraceEvent, WorkflowSpec

SPEC = WorkflowSpec.parse(
    {
        "name": "obs",
        "mission": "Count to three.",
        "steps": [{"id": "s", "role": "r", "task": "count"}],
    }
)


class Recorder(TurnObserver):
    def __init__(self) -> None:
        self.seen: list[object] = []

    def step_opened(self, event: StepOpened) -> None:
        self.seen.append(event)

    def prompt_built(self, event: PromptBuilt) -> None:
        self.seen.append(event)

    def checkpoint_written(self, event: CheckpointWritten) -> None:
        self.seen.append(event)

    def turn_ended(self, event: TurnEnded) -> None:
        self.seen.append(event)


class Broken(TurnObserver):
    def turn_ended(self, event: TurnEnded) -> None:
        raise RuntimeError("observer bug")


def _runner(observers: list[TurnObserver], **kw: Any) -> StepRunner:
    async def count(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
        return ActionOutcome(summary=f"counted {ctx.turn}", done=ctx.turn >= 3)

    async def publish(env: Envelope) -> None:
        return None

    def policy(request: ReasonerRequest) -> Decision:
        return Decision(action="count", reasoning="next number")

    return StepRunner(
        RuleReasoner(policy=policy),
        InMemoryStateStore(),
        StackPromptBuilder(window=4000, output_reserve=500),
        publish,
        agent_id="a",
        role="r",
        actions={"count": Action(ActionSpec(name="count", description="Count."), count)},
        observers=observers,
        **kw,
    )


async def test_observers_see_the_step_in_order_and_a_broken_one_fails_no_turn(
    tmp_path: Path,
) -> None:
    first, second = Recorder(), Recorder()
    reader = InMemoryMetricReader()
    kpis = Kpis(MeterProvider(metric_readers=[reader]))
    runner = _runner(
        [first, Broken(), second], kpis=kpis, scratchpad=ScratchpadWriter(tmp_path / "pads")
    )
    state = await runner.run(SPEC, SPEC.steps[0], "wf", rehydration=Rehydration())
    assert state.status == "completed" and state.turn == 3
    assert first.seen == second.seen  # every observer sees the same events despite Broken
    kinds = [type(e).__name__ for e in first.seen]
    assert kinds == ["StepOpened"] + ["PromptBuilt", "CheckpointWritten", "TurnEnded"] * 3
    opened = first.seen[0]
    assert isinstance(opened, StepOpened) and (opened.epoch, opened.resumed_from_turn) == (1, 0)
    ends = [e for e in first.seen if isinstance(e, TurnEnded)]
    assert [(e.turn, e.action, e.outcome, e.reasoning) for e in ends] == [
        (n, "count", "ok", "next number") for n in (1, 2, 3)
    ]
    # The shorthands are observers too: KPIs recorded, scratchpad written.
    summary = kpis.summary()
    assert summary[Kpis.TURN_LATENCY].count == 3 and summary[Kpis.CHECKPOINT_WRITE_TIME].count == 3
    assert summary[Kpis.STEPS_STARTED].count == 1
    pad = (tmp_path / "pads").rglob("*.md")
    text = "".join(p.read_text() for p in pad)
    assert "## Turn 3" in text and "next number" in text


def test_build_worker_hands_its_observers_to_the_runner() -> None:
    from agents.roles import ROLES
    from mesh.bus import InMemoryBroker, InMemoryBus
    from mesh.runtime.agent import build_worker
    from mesh.runtime.observers import SpanObserver
    from protocols import Topics

    topics = Topics(prefix="t")
    probe = Recorder()
    worker = build_worker(
        ROLES["identity"],
        InMemoryBus(InMemoryBroker(), topics=topics, client_id="a"),
        InMemoryStateStore(),
        agent_id="a",
        topics=topics,
        observers=[probe],
    )
    chain = worker.runner.observers.observers
    assert isinstance(chain[0], SpanObserver) and chain[1] is probe


# -- every hook, awaited in order; the trace events are one observer -----------------------------

FAR = 4_102_444_800_000  # 2100-01-01, Unix ms: a token that does not expire during the test


class Trail:
    """One ordered list of what happened: hooks seen, checkpoints written, calls made."""

    def __init__(self) -> None:
        self.lines: list[str] = []


class AsyncRecorder(TurnObserver):
    """Overrides every non-scope hook with an ``async def`` that yields before it records: a hook
    the loop did not await would record late (after the call it precedes) or never."""

    def __init__(self, trail: Trail) -> None:
        self.trail = trail

    async def _note(self, line: str) -> None:
        await asyncio.sleep(0)
        self.trail.lines.append(line)

    async def step_opened(self, event: StepOpened) -> None:
        await self._note("step_opened")

    async def step_started(self, event: StepOpened) -> None:
        await self._note(f"step_started epoch={event.epoch}")

    async def step_closed(self, event: StepClosed) -> None:
        await self._note(f"step_closed {event.status} turns={event.turns}")

    async def prompt_built(self, event: PromptBuilt) -> None:
        await self._note(f"prompt_built {event.turn}")

    async def reasoner_rejected(self, event: ReasonerRejected) -> None:
        await self._note("reasoner_rejected")

    async def reasoner_answered(self, event: ReasonerAnswered) -> None:
        await self._note("reasoner_answered")

    async def effect_pending(self, event: EffectPending) -> None:
        await self._note(f"effect_pending {event.key}")

    async def tool_attempt(self, event: ToolAttempt) -> None:
        await self._note(f"tool_attempt {event.action} {event.outcome}")

    async def action_done(self, event: ActionDone) -> None:
        await self._note(f"action_done {event.action}")

    async def checkpoint_written(self, event: CheckpointWritten) -> None:
        await self._note("checkpoint_written")

    async def effect_completed(self, event: EffectCompleted) -> None:
        await self._note(f"effect_completed {event.key}")

    async def turn_ended(self, event: TurnEnded) -> None:
        await self._note(f"turn_ended {event.turn} {event.outcome}")

    async def effect_settled(self, event: EffectSettled) -> None:
        await self._note(f"effect_settled {event.key} {event.resolution}")

    async def secret_refreshed(self, event: SecretRefreshed) -> None:
        await self._note(f"secret_refreshed {event.variable} {event.why} {event.source}")

    async def operator_decided(self, event: OperatorDecision) -> None:
        await self._note("operator_decided")


class TrailStore(InMemoryStateStore):
    """Notes each write in the trail (``store.write <key>``)."""

    def __init__(self, trail: Trail) -> None:
        super().__init__()
        self.trail = trail

    async def write(
        self, key: str, data: bytes, *, epoch: int, owner: str = "", workflow_id: str | None = None
    ) -> Checkpoint:
        ckpt = await super().write(key, data, epoch=epoch, owner=owner, workflow_id=workflow_id)
        self.trail.lines.append("store.write " + ("secret" if ":secret:" in key else "step"))
        return ckpt


class Killed(BaseException):
    """The process died here (SIGKILL): nothing after it runs, nothing catches it."""


def _refreshing_runner(
    trail: Trail,
    store: InMemoryStateStore,
    events: list[TraceEvent],
    *,
    kill_refresh: bool = False,
) -> StepRunner:
    """A step whose at-most-once ``call`` injects ``auth_token``, refreshed by ``authenticate``."""

    async def call(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
        trail.lines.append(f"call {ctx.idempotency_key} token={params['token']}")
        return ActionOutcome(summary=f"called {ctx.turn}", done=ctx.turn >= 2)

    async def authenticate(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
        trail.lines.append(f"call {ctx.idempotency_key}")
        if kill_refresh:
            raise Killed
        return ActionOutcome(summary="token", variables=(_token("tok-fresh"),))

    async def token_lookup(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome | None:
        trail.lines.append(f"lookup {ctx.idempotency_key}")
        return ActionOutcome(summary="token found", variables=(_token("tok-found"),))

    async def publish_trace(event: TraceEvent) -> None:
        events.append(event)

    async def publish(env: Envelope) -> None:
        trail.lines.append(f"log {env.kind}")

    def policy(request: ReasonerRequest) -> Decision:
        return Decision(action="call", reasoning="call it")

    schema = {"type": "object", "properties": {"token": {"type": "string"}}}
    return StepRunner(
        RuleReasoner(policy=policy),
        store,
        StackPromptBuilder(window=4000, output_reserve=500),
        publish,
        agent_id="a",
        role="r",
        actions={
            "call": Action(
                ActionSpec(name="call", description="Call.", params_schema=schema),
                call,
                inject={"token": "var:auth_token"},
                at_most_once=True,
            )
        },
        refreshers={
            "auth_token": Action(
                ActionSpec(name="authenticate", description="Token."),
                authenticate,
                at_most_once=True,
                lookup=token_lookup,
            )
        },
        trace_events=TraceEventEmitter(publish_trace),
        observers=[AsyncRecorder(trail)],
    )


def _attrs(event: TraceEvent) -> dict[str, Any]:
    """An event's attributes but the ids of the span it was emitted in (set when tracing is on)."""
    return {k: v for k, v in event.attributes.items() if k not in ("trace_id", "span_id")}


def _token(value: str) -> NewVariable:
    return NewVariable("auth_token", value, secret=True, priority=0, expires_at_ms=FAR)


def _expired_token() -> Rehydration:
    return Rehydration(
        variables={"auth_token": ContextVariable("auth_token", "tok-old", secret=True, priority=0, expires_at_ms=1)}
    )


async def test_an_async_observer_sees_every_event_in_order_around_the_calls_and_checkpoints() -> (
    None
):
    trail, events = Trail(), list[TraceEvent]()
    store = TrailStore(trail)
    runner = _refreshing_runner(trail, store, events)
    state = await runner.run(SPEC, SPEC.steps[0], "wf", rehydration=_expired_token())
    assert state.status == "completed" and state.turn == 2
    refresh, call1, call2 = "wf:s:1:authenticate:refresh-1", "wf:s:1:call", "wf:s:2:call"
    assert trail.lines == [
        "log workflow.step_started",
        "step_opened",
        "step_started epoch=1",
        "prompt_built 1",
        # The expired token's refresh: recorded in doubt, announced, made, checkpointed, said.
        "store.write step",
        "checkpoint_written",
        f"effect_pending {refresh}",
        f"call {refresh}",
        "tool_attempt authenticate ok",
        "store.write secret",
        "store.write step",
        "checkpoint_written",
        f"effect_completed {refresh}",
        "secret_refreshed auth_token expired authenticate",
        # The at-most-once call with the fresh token, the same way.
        "store.write step",
        "checkpoint_written",
        f"effect_pending {call1}",
        f"call {call1} token=tok-fresh",
        "tool_attempt call ok",
        "action_done call",
        "store.write step",
        "checkpoint_written",
        f"effect_completed {call1}",
        "log workflow.step_progress",
        "turn_ended 1 ok",
        "prompt_built 2",
        "store.write step",
        "checkpoint_written",
        f"effect_pending {call2}",
        f"call {call2} token=tok-fresh",
        "tool_attempt call ok",
        "action_done call",
        "store.write step",
        "checkpoint_written",
        f"effect_completed {call2}",
        "log workflow.step_progress",
        "turn_ended 2 ok",
        "step_closed completed turns=2",
    ]
    # The trace events come from TraceEventObserver, on the same hooks, in the same order.
    named = [(e.name, e.attributes.get("key", e.attributes.get("turn"))) for e in events]
    assert named == [
        ("step.started", None),
        ("effect.in_doubt", refresh),
        ("effect.completed", refresh),
        ("secret.refreshed", refresh),
        ("effect.in_doubt", call1),
        ("effect.completed", call1),
        ("turn.completed", 1),
        ("effect.in_doubt", call2),
        ("effect.completed", call2),
        ("turn.completed", 2),
        ("step.completed", None),
    ]
    assert _attrs(events[3]) == {
        "workflow_id": "wf",
        "step_id": "s",
        "variable": "auth_token",
        "turn": 1,
        "why": "expired",
        "key": refresh,
        "source": "authenticate",
        "expires_at_ms": FAR,
    }
    assert _attrs(events[0]) == {
        "workflow_id": "wf",
        "step_id": "s",
        "resumed_from_turn": 0,
        "epoch": 1,
    }
    assert "tok-" not in repr([e.model_dump() for e in events])  # names the secret, not its value


async def test_a_refresh_killed_mid_call_is_settled_and_said_by_the_next_owner() -> None:
    trail, events = Trail(), list[TraceEvent]()
    store = TrailStore(trail)
    with pytest.raises(Killed):
        await _refreshing_runner(trail, store, events, kill_refresh=True).run(
            SPEC, SPEC.steps[0], "wf", rehydration=_expired_token()
        )
    refresh = "wf:s:1:authenticate:refresh-1"
    # effect.in_doubt was out before the call that died.
    assert [e.name for e in events] == ["step.started", "effect.in_doubt"]
    assert trail.lines[-2:] == [f"effect_pending {refresh}", f"call {refresh}"]
    trail.lines.clear()
    events.clear()
    state = await _refreshing_runner(trail, store, events).run(
        SPEC, SPEC.steps[0], "wf", rehydration=_expired_token()
    )
    assert state.status == "completed"
    settled = trail.lines.index(f"effect_settled {refresh} reconciled")
    assert trail.lines[settled - 2 : settled + 4] == [
        f"lookup {refresh}",
        "log workflow.effect_in_doubt",
        f"effect_settled {refresh} reconciled",
        "store.write secret",
        "store.write step",
        "checkpoint_written",
    ]
    assert trail.lines[settled + 4] == "secret_refreshed auth_token reconciled authenticate"
    assert "call wf:s:1:call token=tok-found" in trail.lines  # the found token, not a new call
    names = [e.name for e in events]
    assert names[:3] == ["step.started", "effect.reconciled", "secret.refreshed"]
    assert _attrs(events[1]) == {
        "workflow_id": "wf",
        "step_id": "s",
        "turn": 1,
        "action": "authenticate",
        "key": refresh,
        "resolution": "reconciled",
    }
    assert _attrs(events[2])["why"] == "reconciled"


class AsyncBroken(TurnObserver):
    async def turn_ended(self, event: TurnEnded) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("observer bug")


class Cancelling(TurnObserver):
    async def turn_ended(self, event: TurnEnded) -> None:
        raise asyncio.CancelledError


async def test_a_failing_async_hook_is_contained_and_a_cancellation_goes_through() -> None:
    trail = Trail()
    ended = TurnEnded("wf", "s", 1, "count", "ok", "counted 1", 1.0, "planning", "rule")
    await Observers([AsyncBroken(), Recorder(), AsyncRecorder(trail)]).turn_ended(ended)
    assert trail.lines == ["turn_ended 1 ok"]  # the ones after the broken one still saw it
    with pytest.raises(asyncio.CancelledError):
        await Observers([Cancelling(), AsyncRecorder(trail)]).turn_ended(ended)
    assert trail.lines == ["turn_ended 1 ok"]
