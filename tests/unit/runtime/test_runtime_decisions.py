"""How the log folds escalations and decisions (every reader agrees on which decision applies),
secret edits sealed on the way, and the price table."""

from __future__ import annotations

import pytest

from mesh.bus import InMemoryBus, SubscriptionOptions
from mesh.llm import ActionSpec, PriceTable, RuleReasoner
from mesh.runtime import (
    Action,
    ActionContext,
    ActionOutcome,
    MeshClient,
    Rehydration,
    StackPromptBuilder,
    StepRunner,
    WorkflowView,
)
from mesh.runtime.view import run_summary
from mesh.security import redact_text
from mesh.store import InMemoryStateStore, step_key
from protocols import (
    EditedVariable,
    Envelope,
    EnvelopeCodec,
    EscalationDecided,
    StepEscalated,
    StepResumeRequested,
    StepStarted,
    TokenUsage,
    Topics,
    WorkflowSpec,
    WorkflowSubmitted,
)

SPEC = WorkflowSpec.parse(
    {
        "name": "t",
        "budget": {"max_tokens": 900},
        "steps": [{"id": "s", "role": "r"}, {"id": "u", "role": "r", "depends_on": ["s"]}],
    }
)


def ev(payload: object, *, sender: str = "agent-1", step: str = "s") -> Envelope:
    return Envelope.of(payload, sender=sender, workflow_id="wf", step_id=step)  # type: ignore[arg-type]


def paused_view(nonce: str) -> WorkflowView:
    view = WorkflowView("wf")
    view.apply(ev(WorkflowSubmitted(spec=SPEC), sender="client"))
    view.apply(ev(StepStarted(role="r", owner="agent-1", epoch=1)))
    view.apply(
        ev(
            StepEscalated(
                reason="spinning: x",
                turn=3,
                owner="agent-1",
                nonce=nonce,
                kind="spinning",
                usage=TokenUsage(input_tokens=500, output_tokens=20, calls=3),
            )
        )
    )
    return view


def test_only_a_decision_on_the_current_pause_is_folded() -> None:
    view = paused_view("n1")
    summary = run_summary(view)
    assert (
        summary.steps[0].status,
        summary.steps[0].escalation_nonce,
        summary.steps[0].escalation_kind,
    ) == ("paused", "n1", "spinning")
    assert (summary.input_tokens, summary.output_tokens, summary.budget_tokens) == (500, 20, 900)
    # Wrong nonce, legacy resume without one: ignored, still paused.
    assert not view.apply(
        ev(EscalationDecided(nonce="n0", decision="resume", operator="m"), sender="cli")
    )
    assert not view.apply(ev(StepResumeRequested(note="go"), sender="cli"))
    assert view.status_of("s") == "paused" and view.resume_requests == {}
    # The right one: accepted once; the same decision again (a new envelope) is stale.
    assert view.apply(
        ev(EscalationDecided(nonce="n1", decision="resume", operator="alice"), sender="cli")
    )
    assert view.resume_requests == {"s": 1} and view.decisions["s"].operator == "alice"
    assert view.decided_by["s"] == "cli" and view.status_of("s") == "running"
    assert not view.apply(
        ev(EscalationDecided(nonce="n1", decision="reject", operator="bob"), sender="cli")
    )
    # A later pause: the old approval does not release it.
    view.apply(ev(StepStarted(role="r", owner="agent-1", epoch=2, resumed_from_turn=3)))
    view.apply(
        ev(StepEscalated(reason="budget: ...", turn=4, owner="agent-1", nonce="n2", kind="budget"))
    )
    assert not view.apply(
        ev(EscalationDecided(nonce="n1", decision="resume", operator="alice"), sender="cli")
    )
    assert view.status_of("s") == "paused" and view.resume_requests == {"s": 1}
    assert run_summary(view).steps[0].escalation_kind == "budget"
    assert len(view.ignored) == 4


def test_a_decision_payload_is_checked() -> None:
    with pytest.raises(ValueError, match="needs at least one variable"):
        EscalationDecided(nonce="n", decision="edit", operator="a")
    with pytest.raises(ValueError, match="carries no variables"):
        EscalationDecided(
            nonce="n",
            decision="resume",
            operator="a",
            variables=(EditedVariable(name="x", value=1),),
        )
    with pytest.raises(ValueError):
        EscalationDecided(nonce="", decision="resume", operator="a")


async def test_a_secret_edit_is_sealed_in_the_log_and_opened_by_the_owner() -> None:
    topics = Topics(prefix="t")
    bus = InMemoryBus(topics=topics, client_id="cli")
    await bus.ensure_topics([topics.workflow_events])
    seen: list[str] = []

    async def use_token(ctx: ActionContext, params: dict[str, object]) -> ActionOutcome:
        seen.append(str(ctx.variable("api_token")))
        return ActionOutcome(summary="used the token", done=len(seen) >= 1)

    async def idle(ctx: ActionContext, params: dict[str, object]) -> ActionOutcome:
        return ActionOutcome(summary="nothing", progress=False)

    turns = iter(["wait", "wait", "wait", "use"])

    def policy(request: object) -> object:
        from mesh.llm import Decision

        return Decision(action=next(turns), params={})

    actions = {
        "wait": Action(
            ActionSpec(name="wait", description="w", params_schema={"type": "object"}), idle
        ),
        "use": Action(
            ActionSpec(name="use", description="u", params_schema={"type": "object"}), use_token
        ),
    }
    store = InMemoryStateStore()

    async def publish(env: Envelope) -> None:
        pass

    runner = StepRunner(
        RuleReasoner(policy=policy),
        store,
        StackPromptBuilder(),
        publish,
        agent_id="a",
        role="r",
        actions=actions,
    )
    spec = WorkflowSpec.parse({"name": "t", "steps": [{"id": "s", "role": "r"}]})
    state = await runner.run(spec, spec.steps[0], "wf", rehydration=Rehydration())
    assert state.status == "paused"
    secret = "tok-live-9f8e7d6c5b4a"
    client = MeshClient(bus, topics=topics, client_id="cli")
    await client.decide_escalation(
        "wf",
        "s",
        nonce=state.nonce,
        decision="edit",
        operator="dave",
        variables={"api_token": secret},
    )
    sub = await bus.subscribe(
        [topics.workflow_events], group="reader", options=SubscriptionOptions(from_beginning=True)
    )
    (delivery,) = await sub.poll(timeout_ms=100)
    assert secret.encode() not in EnvelopeCodec().encode(delivery.envelope)
    decision = delivery.envelope.payload_model(EscalationDecided)
    assert decision.variables[0].secret and decision.variables[0].value is None
    done = await runner.run(spec, spec.steps[0], "wf", rehydration=Rehydration(), decision=decision)
    assert done.status == "completed" and seen == [secret]
    assert done.variables["api_token"].secret
    assert secret.encode() not in (await store.read(step_key("wf", "s"))).data
    assert secret not in redact_text(f"token {secret}")


def test_price_table() -> None:
    table = PriceTable.with_overrides({"local-qwen": (0, 0), "claude-sonnet-4-6": (2.0, 10.0)})
    assert table.cost_usd("claude-sonnet-4-6", 1_000_000, 100_000) == pytest.approx(3.0)
    assert table.cost_usd("anthropic/claude-haiku-4-5-20251001", 1_000_000, 0) == pytest.approx(1.0)
    assert table.cost_usd("local-qwen2.5-0.5b", 10**6, 10**6) == 0.0
    assert table.cost_usd("rule/fetch", 10**6, 10**6) == 0.0
    assert table.cost_usd("some-new-model", 10**6, 0) == pytest.approx(
        3.0
    )  # "*": never free by accident
    with pytest.raises(ValueError):
        PriceTable.with_overrides({"x": (1.0,)})  # type: ignore[dict-item]


def test_run_summary_round_trips_usage_and_pause_and_reads_older_documents() -> None:
    import json

    from mesh.store import RunSummary

    run = run_summary(paused_view("n1"))
    again = RunSummary.from_json(run.to_json())
    assert again == run and again.steps[0].escalation_nonce == "n1" and again.input_tokens == 500
    old = json.loads(run.to_json())
    for key in ("input_tokens", "output_tokens", "cost_usd", "budget_tokens", "budget_cost_usd"):
        old.pop(key)
    for step in old["steps"]:
        for key in (
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "escalation_nonce",
            "escalation_kind",
        ):
            step.pop(key)
    older = RunSummary.from_json(json.dumps(old))
    assert (
        older.input_tokens == 0
        and older.steps[0].escalation_nonce == ""
        and older.steps[0].status == "paused"
    )
