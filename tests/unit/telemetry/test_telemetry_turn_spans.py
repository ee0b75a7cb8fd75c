"""The turn loop's spans come from its SpanObserver: step, turns, reasoner calls, tool calls and
checkpoints nest as the work does and carry the loop's events as attributes."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mesh.llm import ActionSpec, Decision, ReasonerRequest, RuleReasoner
from mesh.runtime import (
    Action,
    ActionContext,
    ActionOutcome,
    Rehydration,
    StackPromptBuilder,
    StepRunner,
)
from mesh.store import InMemoryStateStore
from mesh.telemetry import flush_tracing
from protocols import Envelope, WorkflowSpec

SPEC = WorkflowSpec.parse({"name": "spans", "steps": [{"id": "s", "role": "r", "task": "count"}]})


async def test_telemetry_turn_loop_spans_nest_step_turn_call_tool_checkpoint(
    exporter: InMemorySpanExporter,
) -> None:
    async def count(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
        return ActionOutcome(summary=f"counted {ctx.turn}", done=ctx.turn >= 2)

    async def publish(env: Envelope) -> None:
        return None

    def policy(request: ReasonerRequest) -> Decision:
        return Decision(action="count")

    runner = StepRunner(
        RuleReasoner(policy=policy),
        InMemoryStateStore(),
        StackPromptBuilder(window=4000, output_reserve=500),
        publish,
        agent_id="a",
        role="r",
        actions={"count": Action(ActionSpec(name="count", description="Count."), count)},
    )
    state = await runner.run(SPEC, SPEC.steps[0], "wf", rehydration=Rehydration())
    assert state.status == "completed"
    assert flush_tracing(5_000)
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}

    def parent(name: str) -> str:
        (span,) = [s for s in spans if s.name == name]
        assert span.parent is not None
        return by_id[span.parent.span_id].name

    (step,) = [s for s in spans if s.name == "step s"]
    assert step.attributes is not None
    assert (step.attributes["mesh.step.status"], step.attributes["mesh.step.turns"]) == (
        "completed",
        2,
    )
    assert parent("turn 1") == "step s" and parent("turn 2") == "step s"
    turn = next(s for s in spans if s.name == "turn 2")
    assert turn.attributes is not None
    assert (
        turn.attributes["mesh.turn.action"] == "count"
        and turn.attributes["mesh.turn.outcome"] == "ok"
    )
    assert int(turn.attributes["mesh.context.tokens"]) > 0  # type: ignore[arg-type]
    children = {
        by_id[s.context.span_id].name
        for s in spans
        if s.parent and s.parent.span_id == turn.context.span_id
    }
    assert {"execute_tool count"} <= children and any(n.startswith("chat ") for n in children)
    assert any("checkpoint" in n for n in children), children
