"""RuleReasoner, its policy and rules, make_reasoner, ReasonerSummarizer and the backoff."""

from __future__ import annotations

import random

import pytest
from llm_helpers import FETCH, REPORT, TEST_KEY, decision_request

from mesh.llm import (
    ActionSpec,
    AnthropicReasoner,
    Decision,
    DecisionFormatError,
    ExponentialBackoff,
    FirstFillablePolicy,
    Reasoner,
    ReasonerSettings,
    ReasonerSummarizer,
    RetryPolicy,
    RuleReasoner,
    make_reasoner,
    match_rule,
    prompt_facts,
)


async def test_policy_picks_first_action_whose_required_params_are_known() -> None:
    reasoner = RuleReasoner()
    assert isinstance(reasoner, Reasoner)
    result = await reasoner.decide(decision_request(prompt="Write it up.\ntitle: Q3 audit"))
    assert result.decision == Decision(
        action="write_report", params={"title": "Q3 audit"}, reasoning=result.decision.reasoning
    )
    assert result.usage is None and result.model == "rule"
    assert '"write_report"' in result.raw


async def test_facts_fill_params_and_are_coerced_to_the_schema_type() -> None:
    reasoner = RuleReasoner(facts={"record_id": "42", "verbose": "true"})
    result = await reasoner.decide(decision_request(prompt="record_id: 7"))
    # constructor facts win over the prompt; strings become the schema's types
    assert result.decision.action == "fetch_record"
    assert result.decision.params == {"record_id": 42, "verbose": True}


async def test_later_prompt_lines_win() -> None:
    assert prompt_facts("a: 1\n- b = two\na: 3\nnot a fact") == {"a": "3", "b": "two"}


async def test_nothing_fillable_falls_back_to_first_action_with_partial_params() -> None:
    result = await RuleReasoner().decide(decision_request(prompt="verbose: false"))
    assert result.decision.action == "fetch_record"
    assert result.decision.params == {"verbose": False}
    assert "record_id" in result.decision.reasoning  # says what is missing


async def test_rules_apply_in_order_before_the_policy() -> None:
    reasoner = RuleReasoner(
        [
            match_rule(r"urgent", "write_report", {"title": "urgent"}),
            match_rule(r"record (?P<record_id>\d+)", "fetch_record"),
        ]
    )
    first = await reasoner.decide(decision_request(prompt="fetch record 5"))
    assert first.decision.action == "fetch_record" and first.decision.params == {"record_id": "5"}
    second = await reasoner.decide(decision_request(prompt="urgent: fetch record 5"))
    assert second.decision.params == {"title": "urgent"}


async def test_rule_for_a_disallowed_action_does_not_apply() -> None:
    reasoner = RuleReasoner([match_rule("record", "write_report", {"title": "t"})])
    result = await reasoner.decide(decision_request(actions=[FETCH], prompt="record_id: 3"))
    assert result.decision.action == "fetch_record"


async def test_policy_choosing_an_unknown_action_is_a_format_error() -> None:
    reasoner = RuleReasoner(policy=lambda request: Decision(action="launch_rockets"))
    with pytest.raises(DecisionFormatError, match="launch_rockets"):
        await reasoner.decide(decision_request())


async def test_rule_reasoner_is_deterministic_and_records_requests() -> None:
    requests = [
        decision_request(prompt=f"record_id: {i}\ntitle: t{i}", temperature=0.7) for i in range(5)
    ]
    first, second = RuleReasoner(), RuleReasoner()
    results_a = [await first.decide(r) for r in requests]
    results_b = [await second.decide(r) for r in requests]
    assert results_a == results_b
    assert [r.decision.params["record_id"] for r in results_a] == [0, 1, 2, 3, 4]
    assert list(first.requests) == requests


async def test_complete_is_an_extractive_summary_within_budget() -> None:
    reasoner = RuleReasoner()
    text = "First sentence here. Second one follows! Third is long " + "x" * 100 + "."
    assert await reasoner.complete("sys", text, max_tokens=9) == "First sentence here."
    assert (
        await reasoner.complete("sys", text, max_tokens=10)
        == "First sentence here. Second one follows!"
    )
    assert await reasoner.complete("sys", "y" * 100, max_tokens=2) == "y" * 8
    assert [c.max_tokens for c in reasoner.completions] == [9, 10, 2]


async def test_summarizer_adapts_complete() -> None:
    reasoner = RuleReasoner()
    summary = await ReasonerSummarizer(reasoner).summarize(
        "Fetched page 1. Fetched page 2. Fetched page 3.", max_tokens=8
    )
    assert summary == "Fetched page 1. Fetched page 2."
    call = reasoner.completions[-1]
    assert call.prompt.startswith("Fetched page 1.")  # the text, not the instructions
    assert "8 tokens" in call.system and call.temperature == 0.0


async def test_make_reasoner_without_key_is_rule(monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("MESH_LLM_API_KEY", raising=False)
    reasoner = make_reasoner(facts={"record_id": 1})
    assert isinstance(reasoner, RuleReasoner)
    assert (await reasoner.decide(decision_request(actions=[REPORT, FETCH]))).decision.params == {
        "record_id": 1
    }


async def test_make_reasoner_with_key_is_anthropic(fake) -> None:
    settings = ReasonerSettings(api_key=TEST_KEY, base_url=fake.base_url, model="claude-x")
    reasoner = make_reasoner(settings)
    try:
        assert isinstance(reasoner, AnthropicReasoner) and reasoner.name == "anthropic/claude-x"
        assert TEST_KEY not in repr(reasoner)
    finally:
        await reasoner.aclose()


def test_backoff_grows_exponentially_is_capped_and_jittered_downwards() -> None:
    exact = ExponentialBackoff(base_s=0.5, cap_s=3.0, jitter=0.0)
    assert [exact.delay_s(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    jittered = ExponentialBackoff(base_s=1.0, cap_s=10.0, jitter=0.5, rng=random.Random(1))
    delays = [jittered.delay_s(3) for _ in range(50)]
    assert all(2.0 <= d <= 4.0 for d in delays) and len(set(delays)) > 1
    assert exact.delay_s(10_000) == 3.0  # no overflow


def test_invalid_policies_are_rejected() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        ExponentialBackoff(jitter=1.5)


def test_request_validation() -> None:
    with pytest.raises(ValueError, match="unique"):
        decision_request(actions=[FETCH, FETCH])
    with pytest.raises(ValueError):
        decision_request(actions=[])
    with pytest.raises(ValueError):
        ActionSpec(name="has space", description="d")


def test_policy_is_usable_on_its_own() -> None:
    policy = FirstFillablePolicy({"title": "T"})
    assert policy(decision_request()) == Decision(
        action="write_report", params={"title": "T"}, reasoning=policy(decision_request()).reasoning
    )


async def test_rule_reasoner_keeps_only_recent_requests() -> None:
    # The default reasoner of every agent without an LLM kept every request (its whole prompt)
    # for the life of the process: bench.memory's RSS grew with each workflow.
    reasoner = RuleReasoner()
    for i in range(RuleReasoner.KEPT * 3):
        await reasoner.decide(decision_request(prompt=f"record_id: {i}\ntitle: t{i}"))
    assert len(reasoner.requests) == RuleReasoner.KEPT
    assert "record_id: 299" in str(reasoner.requests[-1])
