"""The turn loop's observers (mesh.runtime.observers): what they see, in which order, and that a
failing observer does not fail a turn; KPIs and scratchpads are observers like any other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from mesh.llm import ActionSpec, Decision, ReasonerRequest, RuleReasoner
from mesh.runtime import (
    Action,
    ActionContext,
    ActionOutcome,
    Rehydration,
    StackPromptBuilder,
    StepRunner,
)
from mesh.runtime.observers import (
    CheckpointWritten,
    PromptBuilt,
    StepOpened,
    TurnEnded,
    TurnObserver,
)
from mesh.store import InMemoryStateStore
from mesh.telemetry import Kpis, ScratchpadWriter
from protocols import Envelope, WorkflowSpec

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
