"""The turn loop against the real anthropic SDK talking to the fake Messages API.

Hallucinated parameters corrected by injection, invalid decisions repaired, 529 retried,
spinning escalated and resumed, temperature by phase.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mesh.llm import ActionSpec, AnthropicReasoner, ExponentialBackoff, RetryPolicy
from mesh.runtime import (
    Action,
    ActionContext,
    ActionOutcome,
    ContextVariable,
    Rehydration,
    StackPromptBuilder,
    StepRunner,
)
from mesh.store import InMemoryStateStore
from mesh.testing import FakeAnthropicServer, FakeReply
from protocols import Envelope, EscalationDecided, StepEscalated, StepProgress, WorkflowSpec

TOKEN = "tok-real-1234567890"

SPEC = WorkflowSpec.parse(
    {
        "name": "t",
        "mission": "Call the API three times.",
        "steps": [{"id": "s", "role": "caller", "task": "call the API", "limits": {"max_turns": 6, "spin_window": 3}}],
    }
)


class Api:
    """A stand-in service that only accepts the real token (counts what it saw)."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def call(self, ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
        self.tokens.append(params["token"])
        n = int(ctx.memory.get("calls", 0)) + 1
        return ActionOutcome(summary=f"call {n} ok (item {params['item']})", memory={"calls": n}, done=n >= 3)

    async def idle(self, ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
        return ActionOutcome(summary="nothing changed", progress=False)


def actions(api: Api) -> dict[str, Action]:
    schema = {
        "type": "object",
        "properties": {"item": {"type": "integer", "minimum": 1}, "token": {"type": "string"}},
        "required": ["item", "token"],
        "additionalProperties": False,
    }
    return {
        "call_api": Action(ActionSpec(name="call_api", description="Call the API.", params_schema=schema),
                           api.call, inject={"token": "var:auth_token"}),
        "wait": Action(ActionSpec(name="wait", description="Do nothing.", params_schema={"type": "object"}), api.idle),
    }


@pytest.fixture
def fake() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer(reject_sampling_params=False) as srv:
        yield srv


RUNNERS: list[StepRunner] = []


@pytest.fixture(autouse=True)
async def close_reasoners() -> Any:
    yield
    while RUNNERS:
        await RUNNERS.pop().reasoner.aclose()


def make_runner(fake: FakeAnthropicServer, api: Api, events: list[Envelope]) -> StepRunner:
    reasoner = AnthropicReasoner(
        api_key="sk-ant-test-0000", base_url=fake.base_url, model="claude-sonnet-4-6", timeout_s=5,
        sdk_max_retries=0, send_temperature=True,
        retry=RetryPolicy(max_attempts=3, backoff=ExponentialBackoff(base_s=0.01, cap_s=0.02)),
    )

    async def publish(env: Envelope) -> None:
        events.append(env)

    runner = StepRunner(reasoner, InMemoryStateStore(), StackPromptBuilder(), publish,
                        agent_id="agent-1", role="caller", actions=actions(api))
    RUNNERS.append(runner)
    return runner


REHYDRATE = Rehydration(variables={"auth_token": ContextVariable("auth_token", TOKEN, secret=True, priority=0, origin="identity")})


async def test_hallucinated_token_is_corrected_by_injection(fake: FakeAnthropicServer) -> None:
    api, events = Api(), []  # type: ignore[var-annotated]
    fake.script(
        FakeReply.tool_use("call_api", {"item": 1, "token": "sk-hallucinated"}),
        FakeReply.tool_use("call_api", {"item": 2}),  # left out: filled
        FakeReply.tool_use("call_api", {"item": 3, "token": TOKEN}),  # right: untouched
    )
    runner = make_runner(fake, api, events)
    state = await runner.run(SPEC, SPEC.steps[0], "wf-1", rehydration=REHYDRATE)
    assert state.status == "completed"
    assert api.tokens == [TOKEN, TOKEN, TOKEN]
    assert [h.injected for h in state.history] == [
        ["token (corrected from var:auth_token)"], ["token (filled from var:auth_token)"], []]
    # The token never reached the prompt, the history or the events.
    assert all(TOKEN not in str(r.body) for r in fake.requests)
    assert TOKEN not in repr(state.history)
    assert all(TOKEN not in repr(e.payload) for e in events)


async def test_invalid_decision_is_repaired_with_the_error_fed_back(fake: FakeAnthropicServer) -> None:
    api, events = Api(), []  # type: ignore[var-annotated]
    fake.script(
        FakeReply.tool_use("call_api", {"item": 0, "colour": "red"}),  # below minimum, unknown param
        FakeReply.tool_use("call_api", {"item": 1}),
        FakeReply.text("I think I will call the API."),  # no tool use at all
        FakeReply.tool_use("call_api", {"item": 2}),
        FakeReply.tool_use("call_api", {"item": 3}),
    )
    runner = make_runner(fake, api, events)
    state = await runner.run(SPEC, SPEC.steps[0], "wf-1", rehydration=REHYDRATE)
    assert state.status == "completed"
    assert [h.repairs for h in state.history] == [1, 1, 0]
    repair_prompt = str(fake.requests[1].body["messages"])
    assert "params.item: 0 is below the minimum 1" in repair_prompt
    assert "params.colour: unknown parameter" in repair_prompt


async def test_overloaded_529_is_retried(fake: FakeAnthropicServer) -> None:
    api, events = Api(), []  # type: ignore[var-annotated]
    fake.script(
        FakeReply.overloaded(),
        FakeReply.tool_use("call_api", {"item": 1}),
        FakeReply.rate_limited(),
        FakeReply.tool_use("call_api", {"item": 2}),
        FakeReply.tool_use("call_api", {"item": 3}),
    )
    runner = make_runner(fake, api, events)
    state = await runner.run(SPEC, SPEC.steps[0], "wf-1", rehydration=REHYDRATE)
    assert state.status == "completed"
    assert len(fake.requests) == 5
    assert len(api.tokens) == 3


async def test_spinning_is_escalated_and_resume_continues(fake: FakeAnthropicServer) -> None:
    api, events = Api(), []  # type: ignore[var-annotated]
    runner = make_runner(fake, api, events)
    limits = SPEC.steps[0].limits.model_copy(update={"max_turns": 10})
    spec = SPEC.model_copy(update={"steps": (SPEC.steps[0].model_copy(update={"limits": limits}),)})
    # The same decision three times in a row, changing nothing: spinning.
    fake.script(*[FakeReply.tool_use("wait", {})] * 3)
    state = await runner.run(spec, spec.steps[0], "wf-3", rehydration=REHYDRATE)
    assert state.status == "paused"
    assert "spinning" in state.escalation
    escalations = [e for e in events if e.kind == StepEscalated.KIND and e.workflow_id == "wf-3"]
    assert len(escalations) == 1
    assert escalations[0].payload_model(StepEscalated).turn == 3
    # Not resumed: running it again leaves it paused without asking the model.
    before = len(fake.requests)
    again = await runner.run(spec, spec.steps[0], "wf-3", rehydration=REHYDRATE)
    assert again.status == "paused" and len(fake.requests) == before
    # `mesh resume`: continues from the checkpoint at turn 4.
    fake.script(*[FakeReply.tool_use("call_api", {"item": i}) for i in (1, 2, 3)])
    paused = await runner.load("wf-3", "s")
    assert paused is not None and paused.nonce and paused.escalation_kind == "spinning"
    assert escalations[0].payload_model(StepEscalated).nonce == paused.nonce
    decision = EscalationDecided(nonce=paused.nonce, decision="resume", operator="alice", note="looks fine")
    resumed = await runner.run(spec, spec.steps[0], "wf-3", rehydration=REHYDRATE, decision=decision)
    assert resumed.status == "completed"
    assert [h.turn for h in resumed.history] == [1, 2, 3, 4, 5, 6]
    progress = [e.payload_model(StepProgress).outcome for e in events if e.kind == StepProgress.KIND and e.workflow_id == "wf-3"]
    assert progress == ["ok", "ok", "spinning", "ok", "ok", "ok"]


async def test_temperature_follows_the_phase(fake: FakeAnthropicServer) -> None:
    api, events = Api(), []  # type: ignore[var-annotated]

    async def flaky(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
        from mesh.runtime import ActionError

        if int(ctx.memory.get("failed", 0)) == 0 and ctx.turn == 2:
            raise ActionError("boom")
        return await api.call(ctx, params)

    fake.script(*[FakeReply.tool_use("call_api", {"item": i}) for i in (1, 2, 2, 3)])
    runner = make_runner(fake, api, events)
    runner.actions["call_api"] = Action(runner.actions["call_api"].spec, flaky, inject={"token": "var:auth_token"})
    state = await runner.run(SPEC, SPEC.steps[0], "wf-4", rehydration=REHYDRATE)
    assert state.status == "completed"
    temps = [r.body.get("temperature") for r in fake.requests]
    assert temps == [0.7, 0.2, 0.5, 0.2]  # planning, execution, recovery after the failure, execution
    assert state.history[1].outcome == "failed"
    assert state.history[1].summary == "ActionError: boom"
