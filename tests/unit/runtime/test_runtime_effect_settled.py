"""An at-most-once call whose result was checkpointed is never left looking in doubt.

The owner records the call in doubt (trace ``effect.in_doubt``), makes it, checkpoints the turn
with its result and then says ``effect.completed``. The chaos campaign's kill-agents scenario
SIGKILLs identity right after the token call: when the kill lands between the checkpoint and that
trace event, the successor finds nothing in doubt in the checkpoint (the result is there) and,
before the fix, said nothing either, so the history showed an effect in doubt that was neither
reconciled nor reported (``in_doubt_unresolved``). Here the first owner's process "dies" at that
point (its task is cancelled inside the ``effect.completed`` publish) and a second runner takes
the step over from the same store; the campaign's checker judges the trace both emitted.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mesh.chaos import History, check
from mesh.llm import ActionSpec, Decision, ReasonerRequest, RuleReasoner
from mesh.runtime import Action, ActionContext, ActionOutcome, RuntimeOptions, StepRunner
from mesh.runtime.prompt import StackPromptBuilder
from mesh.runtime.step_runner import Rehydration
from mesh.store import InMemoryStateStore
from mesh.telemetry import TraceEventEmitter
from protocols import Envelope, StepSpec, TraceEvent, WorkflowSpec


def _runner(
    agent: str, store: InMemoryStateStore, history: History, calls: list[str], *, die_at: str = ""
) -> StepRunner:
    async def publish_trace(event: TraceEvent) -> None:
        if event.name == die_at:
            raise asyncio.CancelledError  # SIGKILL here: the checkpoint is written, this event is not
        attrs: dict[str, Any] = dict(event.attributes)
        history.record(
            "trace",
            event.name,
            workflow_id=str(attrs.pop("workflow_id", "")),
            step_id=str(attrs.pop("step_id", "")),
            actor=agent,
            **attrs,
        )

    async def publish(env: Envelope) -> None:
        return None

    async def authenticate(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
        calls.append(ctx.idempotency_key)
        return ActionOutcome(summary="token", outputs={"authenticated": True}, done=True)

    async def lookup(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome | None:
        return None

    def policy(request: ReasonerRequest) -> Decision:
        return Decision(action="authenticate", params={})

    spec = ActionSpec(name="authenticate", description="token", params_schema={"type": "object"})
    return StepRunner(
        RuleReasoner(policy=policy),
        store,
        StackPromptBuilder(window=8000, output_reserve=512),
        publish,
        agent_id=agent,
        role="identity",
        actions={"authenticate": Action(spec, authenticate, at_most_once=True, lookup=lookup)},
        options=RuntimeOptions(),
        trace_events=TraceEventEmitter(publish_trace),
    )


async def test_a_call_checkpointed_before_its_owner_died_is_not_left_in_doubt() -> None:
    store, history = InMemoryStateStore(), History()
    calls: list[str] = []
    step = StepSpec(id="identity", role="identity")
    spec = WorkflowSpec(name="w", steps=(step,))
    history.record(
        "log",
        "workflow.submitted",
        workflow_id="wf-1",
        steps=[{"id": "identity", "role": "identity"}],
    )
    with pytest.raises(asyncio.CancelledError):
        await _runner("identity-a", store, history, calls, die_at="effect.completed").run(
            spec, step, "wf-1", rehydration=Rehydration()
        )
    assert [e.kind for e in history.of("trace")].count("effect.in_doubt") == 1
    state = await _runner("identity-b", store, history, calls).run(
        spec, step, "wf-1", rehydration=Rehydration()
    )
    assert state.status == "completed" and calls == ["wf-1:identity:1:authenticate"], (
        calls
    )  # not repeated
    result = check(history)
    unresolved = [a for a in result.anomalies if a.kind == "in_doubt_unresolved"]
    assert unresolved == [], [a.summary for a in unresolved]
