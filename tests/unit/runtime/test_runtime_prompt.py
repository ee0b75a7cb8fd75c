"""The step prompt over a long run: within budget, P0 intact, history compressed, secrets redacted."""

from __future__ import annotations

from typing import Any

from mesh.context import TokenCounter
from mesh.llm import ActionSpec, Decision, ReasonerRequest, RuleReasoner
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
from protocols import Envelope, WorkflowSpec

SECRET = "tok-secret-abcdef123456"
SPEC = WorkflowSpec.parse({
    "name": "long", "mission": "Process every item of a long queue.", "rules": ["Never skip an item."],
    "steps": [{"id": "s", "role": "worker", "task": "process the queue until it is empty",
               "limits": {"max_turns": 200, "spin_window": 50}}],
})


async def test_two_hundred_turns_stay_within_a_small_budget() -> None:
    seen_prompts: list[str] = []

    async def work(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
        n = int(ctx.memory.get("n", 0)) + 1
        noisy = f"item {n} processed with token {SECRET}; " + "log line " * 20
        return ActionOutcome(summary=noisy, memory={"n": n}, done=n >= 200)

    def policy(request: ReasonerRequest) -> Decision:
        seen_prompts.append(request.prompt)
        return Decision(action="work")

    reasoner = RuleReasoner(policy=policy)
    counter = TokenCounter()
    prompts = StackPromptBuilder(window=3000, output_reserve=500, counter=counter)
    events: list[Envelope] = []

    async def publish(env: Envelope) -> None:
        events.append(env)

    runner = StepRunner(reasoner, InMemoryStateStore(), prompts, publish, agent_id="a", role="worker",
                        actions={"work": Action(ActionSpec(name="work", description="Process one item."), work)})
    state = await runner.run(SPEC, SPEC.steps[0], "wf", rehydration=Rehydration(
        variables={"auth_token": ContextVariable("auth_token", SECRET, secret=True, priority=0)}))
    assert state.status == "completed" and state.turn == 200
    budget = prompts.budget.usable
    for prompt in seen_prompts:
        assert counter.count(prompt) <= budget
        assert "MISSION: Process every item" in prompt and "TASK: process the queue" in prompt
        assert SECRET not in prompt
    # The newest turn is always in view; the oldest fell to compression or eviction markers.
    assert "turn 199: work" in seen_prompts[-1]
    assert "turn 1: work" not in seen_prompts[-1]
    assert any("evicted" in p or "ummary" in p for p in seen_prompts[-50:])
