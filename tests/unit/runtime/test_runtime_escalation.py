"""Human decisions bound to one pause (nonce), token/cost accounting per turn and step, budgets.

The turn loop runs against the real anthropic SDK talking to the fake Messages API (usage comes
from the response) and against the rule reasoner (usage counted with tiktoken).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mesh.llm import (
    ActionSpec,
    AnthropicReasoner,
    ExponentialBackoff,
    PriceTable,
    RetryPolicy,
    RuleReasoner,
)
from mesh.runtime import (
    Action,
    ActionContext,
    ActionOutcome,
    Rehydration,
    RuntimeOptions,
    StackPromptBuilder,
    StepRunner,
)
from mesh.store import InMemoryStateStore
from mesh.testing import FakeAnthropicServer, FakeReply
from protocols import (
    Envelope,
    EscalationDecided,
    StepEscalated,
    StepProgress,
    TokenUsage,
    WorkflowSpec,
)

MODEL = "claude-sonnet-4-6"


def spec(*, budget: dict[str, Any] | None = None, max_turns: int = 8) -> WorkflowSpec:
    data: dict[str, Any] = {
        "name": "t",
        "mission": "Count to three.",
        "steps": [
            {
                "id": "s",
                "role": "counter",
                "task": "count",
                "limits": {"max_turns": max_turns, "spin_window": 3},
            }
        ],
    }
    if budget is not None:
        data["budget"] = budget
    return WorkflowSpec.parse(data)


async def count(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
    n = int(ctx.memory.get("n", 0)) + 1
    limit = int(ctx.variable("limit", 3))
    return ActionOutcome(summary=f"n={n}", memory={"n": n}, done=n >= limit)


async def idle(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
    return ActionOutcome(summary="nothing changed", progress=False)


ACTIONS = {
    "count": Action(
        ActionSpec(name="count", description="Count one more.", params_schema={"type": "object"}),
        count,
    ),
    "wait": Action(
        ActionSpec(name="wait", description="Do nothing.", params_schema={"type": "object"}), idle
    ),
}


@pytest.fixture
def fake() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer(reject_sampling_params=False) as srv:
        yield srv


class Harness:
    def __init__(self, runner: StepRunner, events: list[Envelope]) -> None:
        self.runner, self.events = runner, events

    def of(self, kind: str) -> list[Envelope]:
        return [e for e in self.events if e.kind == kind]


@pytest.fixture
async def sdk(fake: FakeAnthropicServer) -> Any:
    events: list[Envelope] = []
    reasoner = AnthropicReasoner(
        api_key="sk-ant-test-0000",
        base_url=fake.base_url,
        model=MODEL,
        timeout_s=5,
        sdk_max_retries=0,
        retry=RetryPolicy(max_attempts=2, backoff=ExponentialBackoff(base_s=0.01, cap_s=0.02)),
    )

    async def publish(env: Envelope) -> None:
        events.append(env)

    runner = StepRunner(
        reasoner,
        InMemoryStateStore(),
        StackPromptBuilder(),
        publish,
        agent_id="agent-1",
        role="counter",
        actions=ACTIONS,
        options=RuntimeOptions(prices=PriceTable()),
    )
    yield Harness(runner, events)
    await reasoner.aclose()


async def test_usage_is_recorded_from_the_response_per_turn_and_step(
    fake: FakeAnthropicServer, sdk: Harness
) -> None:
    fake.script(
        FakeReply.tool_use("count", {}, usage=(1200, 40)),
        FakeReply.tool_use("count", {}, usage=(1300, 50)),
        FakeReply.tool_use("count", {}, usage=(1400, 60)),
    )
    state = await sdk.runner.run(spec(), spec().steps[0], "wf-u", rehydration=Rehydration())
    assert state.status == "completed"
    per_turn = [(h.input_tokens, h.output_tokens, h.calls) for h in state.history]
    assert per_turn == [(1200, 40, 1), (1300, 50, 1), (1400, 60, 1)]
    assert (state.input_tokens, state.output_tokens, state.calls) == (3900, 150, 3)
    # Sonnet: $3 / $15 per million tokens.
    assert state.history[0].cost_usd == pytest.approx((1200 * 3 + 40 * 15) / 1e6)
    assert state.cost_usd == pytest.approx((3900 * 3 + 150 * 15) / 1e6)
    progress = [e.payload_model(StepProgress) for e in sdk.of(StepProgress.KIND)]
    assert [p.turn_usage.input_tokens for p in progress] == [1200, 1300, 1400]
    assert progress[-1].usage == state.usage()


async def test_an_unusable_answer_is_still_counted(fake: FakeAnthropicServer, sdk: Harness) -> None:
    fake.script(
        FakeReply.text("I would rather chat.", usage=(900, 30)),
        FakeReply.tool_use("count", {}, usage=(950, 20)),
    )
    state = await sdk.runner.run(spec(), spec().steps[0], "wf-r", rehydration=Rehydration())
    assert state.history[0].calls == 2
    assert (state.history[0].input_tokens, state.history[0].output_tokens) == (1850, 50)


async def test_budget_pauses_before_a_further_call_and_a_resume_grants_more(
    fake: FakeAnthropicServer, sdk: Harness
) -> None:
    wf = spec(budget={"max_tokens": 2250})
    fake.script(*[FakeReply.tool_use("count", {}, usage=(1000, 100))] * 2)
    state = await sdk.runner.run(wf, wf.steps[0], "wf-b", rehydration=Rehydration())
    # 2 x 1100 tokens spent; a third call (its prompt alone is counted before sending) would cross 2250.
    assert state.status == "paused" and state.escalation_kind == "budget", state.escalation
    assert len(fake.requests) == 2, "a call was made past the budget"
    assert state.turn == 2 and state.input_tokens == 2000
    (esc,) = [e.payload_model(StepEscalated) for e in sdk.of(StepEscalated.KIND)]
    assert esc.kind == "budget" and esc.nonce == state.nonce and esc.usage.tokens == 2200
    # Other steps' spending counts too: with 2000 tokens spent elsewhere, nothing more is called.
    again = await sdk.runner.run(wf, wf.steps[0], "wf-b", rehydration=Rehydration())
    assert again.status == "paused" and len(fake.requests) == 2
    # The operator lets it go on: one more budget's worth from here; it completes.
    fake.script(FakeReply.tool_use("count", {}, usage=(1000, 100)))
    done = await sdk.runner.run(
        wf,
        wf.steps[0],
        "wf-b",
        rehydration=Rehydration(),
        decision=EscalationDecided(nonce=state.nonce, decision="resume", operator="bob"),
    )
    assert done.status == "completed" and len(fake.requests) == 3
    assert done.decisions[0]["operator"] == "bob" and done.decisions[0]["kind"] == "budget"


async def test_budget_counts_the_other_steps(fake: FakeAnthropicServer, sdk: Harness) -> None:
    wf = spec(budget={"max_tokens": 5000})
    elsewhere = TokenUsage(input_tokens=4900, output_tokens=50)
    state = await sdk.runner.run(
        wf, wf.steps[0], "wf-o", rehydration=Rehydration(spent_elsewhere=lambda: elsewhere)
    )
    assert state.status == "paused" and state.escalation_kind == "budget"
    assert fake.requests == []


async def test_cost_budget(fake: FakeAnthropicServer, sdk: Harness) -> None:
    wf = spec(budget={"max_cost_usd": 0.01})
    fake.script(*[FakeReply.tool_use("count", {}, usage=(2000, 100))] * 3)  # $0.0075 per call
    state = await sdk.runner.run(wf, wf.steps[0], "wf-c", rehydration=Rehydration())
    assert state.status == "paused" and state.escalation_kind == "budget"
    # The check is made before each call on what was spent plus the next prompt's input cost; the
    # second call's answer overshoots (its output cannot be known in advance), the third is never made.
    assert len(fake.requests) == 2 and "spent $0.0150 of $0.0100" in state.escalation


async def test_a_stale_decision_is_refused_and_the_current_one_applies(
    fake: FakeAnthropicServer, sdk: Harness
) -> None:
    wf = spec(max_turns=20)
    step = wf.steps[0]
    fake.script(*[FakeReply.tool_use("wait", {})] * 3)
    first = await sdk.runner.run(wf, step, "wf-n", rehydration=Rehydration())
    assert (
        first.status == "paused" and first.escalation_kind == "spinning" and len(first.nonce) == 32
    )
    nonce_1 = first.nonce
    # A decision naming another pause changes nothing and calls nothing.
    forged = EscalationDecided(nonce="0" * 32, decision="resume", operator="mallory")
    stale = await sdk.runner.run(wf, step, "wf-n", rehydration=Rehydration(), decision=forged)
    assert stale.status == "paused" and stale.nonce == nonce_1 and len(fake.requests) == 3
    # The right one resumes; it spins again: a new pause, a new nonce.
    fake.script(*[FakeReply.tool_use("wait", {})] * 3)
    approval = EscalationDecided(nonce=nonce_1, decision="resume", operator="alice")
    second = await sdk.runner.run(wf, step, "wf-n", rehydration=Rehydration(), decision=approval)
    assert second.status == "paused" and second.nonce not in ("", nonce_1)
    # The first approval, replayed (a redelivery, a restart), does not apply to the second pause.
    replayed = await sdk.runner.run(wf, step, "wf-n", rehydration=Rehydration(), decision=approval)
    assert (
        replayed.status == "paused" and replayed.nonce == second.nonce and len(fake.requests) == 6
    )
    nonces = [e.payload_model(StepEscalated).nonce for e in sdk.of(StepEscalated.KIND)]
    assert nonces == [nonce_1, second.nonce]
    assert [d["operator"] for d in replayed.decisions] == ["alice"]


async def test_reject_fails_the_step(fake: FakeAnthropicServer, sdk: Harness) -> None:
    wf = spec()
    fake.script(*[FakeReply.tool_use("wait", {})] * 3)
    paused = await sdk.runner.run(wf, wf.steps[0], "wf-j", rehydration=Rehydration())
    rejected = await sdk.runner.run(
        wf,
        wf.steps[0],
        "wf-j",
        rehydration=Rehydration(),
        decision=EscalationDecided(
            nonce=paused.nonce, decision="reject", operator="carol", note="looping on nothing"
        ),
    )
    assert rejected.status == "failed"
    assert rejected.error == "Rejected: by carol (spinning): looping on nothing"
    assert len(fake.requests) == 3


async def test_edit_sets_the_variable_then_resumes(fake: FakeAnthropicServer, sdk: Harness) -> None:
    from protocols import EditedVariable

    wf = spec(max_turns=20)
    fake.script(*[FakeReply.tool_use("wait", {})] * 3)
    paused = await sdk.runner.run(wf, wf.steps[0], "wf-e", rehydration=Rehydration())
    fake.script(FakeReply.tool_use("count", {}))
    inherited = Rehydration(variables={})
    done = await sdk.runner.run(
        wf,
        wf.steps[0],
        "wf-e",
        rehydration=inherited,
        decision=EscalationDecided(
            nonce=paused.nonce,
            decision="edit",
            operator="dave",
            variables=(EditedVariable(name="limit", value=1),),
        ),
    )
    assert done.status == "completed" and done.memory["n"] == 1
    assert done.variables["limit"].origin == "operator:dave" and done.edited == ["limit"]


async def test_rule_reasoner_usage_is_counted_with_tiktoken() -> None:
    events: list[Envelope] = []

    async def publish(env: Envelope) -> None:
        events.append(env)

    def policy(request: Any) -> Any:
        from mesh.llm import Decision

        return Decision(action="count", params={})

    runner = StepRunner(
        RuleReasoner(policy=policy, name="rule/counter"),
        InMemoryStateStore(),
        StackPromptBuilder(),
        publish,
        agent_id="a",
        role="counter",
        actions=ACTIONS,
    )
    state = await runner.run(spec(), spec().steps[0], "wf-t", rehydration=Rehydration())
    assert state.status == "completed"
    assert all(h.input_tokens > 20 and h.output_tokens > 0 and h.calls == 1 for h in state.history)
    assert state.cost_usd == 0.0  # no provider, no cost


async def test_a_pause_the_log_never_saw_is_published_by_the_next_owner(
    fake: FakeAnthropicServer,
) -> None:
    # The owner checkpoints the pause, then dies before its StepEscalated reaches the log.
    events: list[Envelope] = []
    store = InMemoryStateStore()

    async def dies_before_escalating(env: Envelope) -> None:
        if env.kind == StepEscalated.KIND:
            raise RuntimeError("killed")
        events.append(env)

    async def publish(env: Envelope) -> None:
        events.append(env)

    def runner(agent: str, publisher: Any) -> StepRunner:
        from mesh.llm import Decision

        reasoner = RuleReasoner(policy=lambda request: Decision(action="wait"))
        return StepRunner(
            reasoner,
            store,
            StackPromptBuilder(),
            publisher,
            agent_id=agent,
            role="counter",
            actions=ACTIONS,
        )

    wf = spec()
    with pytest.raises(RuntimeError, match="killed"):
        await runner("agent-1", dies_before_escalating).run(
            wf, wf.steps[0], "wf-x", rehydration=Rehydration()
        )
    assert not [e for e in events if e.kind == StepEscalated.KIND]
    # The next owner, finding the pause in the checkpoint and none on the log, publishes it.
    state = await runner("agent-2", publish).run(wf, wf.steps[0], "wf-x", rehydration=Rehydration())
    assert state.status == "paused" and state.nonce
    (esc,) = [e for e in events if e.kind == StepEscalated.KIND]
    assert esc.sender == "agent-2" and esc.payload_model(StepEscalated).nonce == state.nonce
    assert events[-2].kind == "workflow.step_started" and events[-2].sender == "agent-2"
