"""AnthropicReasoner against the fake Messages API, through the real anthropic SDK."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from llm_helpers import FAST_BACKOFF, FETCH, REPORT, TEST_KEY, decision_request

from mesh.errors import PermanentError, TransientError, UsageError
from mesh.llm import (
    AnthropicReasoner,
    DecisionFormatError,
    Reasoner,
    ReasonerAuthError,
    ReasonerRequestError,
    ReasonerSettings,
    ReasonerUnavailable,
    RetryPolicy,
    Usage,
)
from mesh.testing import FakeAnthropicServer, FakeReply


async def test_valid_decision_is_the_first_tool_use(fake, make_reasoner) -> None:
    fake.script(
        FakeReply(
            content=(
                {"type": "text", "text": "Record 42 is needed."},
                {"type": "tool_use", "name": "fetch_record", "input": {"record_id": 42}},
                {"type": "tool_use", "name": "write_report", "input": {"title": "x"}},
            ),
            stop_reason="tool_use",
        )
    )
    reasoner = make_reasoner()
    assert isinstance(reasoner, Reasoner)
    result = await reasoner.decide(decision_request())
    assert result.decision.action == "fetch_record"
    assert result.decision.params == {"record_id": 42}
    assert result.decision.reasoning == "Record 42 is needed."
    assert "fetch_record" in result.raw and "Record 42 is needed." in result.raw
    assert result.model == reasoner.model


async def test_request_carries_system_tools_and_tool_choice(fake, make_reasoner) -> None:
    await make_reasoner(model="claude-test-1").decide(decision_request(max_tokens=321))
    body = fake.requests[-1].body
    assert body["system"] == "You are the fetch agent. Follow the rules."
    assert body["model"] == "claude-test-1"
    assert body["max_tokens"] == 321
    assert body["messages"] == [{"role": "user", "content": "Task: fetch record 42."}]
    assert body["tool_choice"] == {"type": "any"}
    assert body["tools"] == [
        {"name": a.name, "description": a.description, "input_schema": a.params_schema}
        for a in (FETCH, REPORT)
    ]
    # API version 2026-10-21 rejects sampling parameters: not sent unless asked.
    assert "temperature" not in body


async def test_decision_tokens_capped_from_settings_but_not_free_text(monkeypatch, fake) -> None:
    """MESH_LLM_MAX_DECISION_TOKENS bounds a decision's max_tokens (llama-server: calls until the cap)."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
    monkeypatch.setenv("MESH_LLM_MAX_DECISION_TOKENS", "96")
    reasoner = AnthropicReasoner.from_settings(ReasonerSettings())
    try:
        await reasoner.decide(decision_request(max_tokens=1024))
        await reasoner.decide(decision_request(max_tokens=40))
        fake.script(FakeReply.text("a summary"))
        await reasoner.complete("sys", "summarize", max_tokens=500)
    finally:
        await reasoner.aclose()
    assert [r.body["max_tokens"] for r in fake.requests] == [96, 40, 500]


async def test_temperature_sent_when_enabled(make_reasoner) -> None:
    with FakeAnthropicServer(api_key=TEST_KEY, reject_sampling_params=False) as srv:
        reasoner = make_reasoner(base_url=srv.base_url, send_temperature=True)
        await reasoner.decide(decision_request(temperature=0.7))
        await reasoner.complete("sys", "text", max_tokens=10, temperature=0.5)
        assert [r.body["temperature"] for r in srv.requests] == [0.7, 0.5]


async def test_temperature_rejected_by_current_api_version_is_a_request_error(
    fake, make_reasoner
) -> None:
    with pytest.raises(ReasonerRequestError) as info:
        await make_reasoner(send_temperature=True).decide(decision_request())
    assert info.value.status_code == 400 and "temperature" in str(info.value)
    assert isinstance(info.value, PermanentError) and len(fake.requests) == 1


async def test_schema_without_type_is_sent_as_object_schema(fake, make_reasoner) -> None:
    bare = FETCH.model_copy(update={"name": "ping", "params_schema": {}})
    await make_reasoner().decide(decision_request(actions=[bare]))
    assert fake.requests[-1].body["tools"][0]["input_schema"] == {
        "type": "object",
        "properties": {},
    }
    assert bare.params_schema == {}  # the caller's schema is not mutated


async def test_repair_hint_is_appended_to_the_prompt(fake, make_reasoner) -> None:
    await make_reasoner().decide(decision_request(repair_hint="record_id must be an integer"))
    content = fake.requests[-1].body["messages"][0]["content"]
    assert content.startswith("Task: fetch record 42.")
    assert "record_id must be an integer" in content


async def test_hallucinated_and_missing_params_pass_through(fake, make_reasoner) -> None:
    fake.script(
        FakeReply.tool_use("fetch_record", {"record_id": 1, "made_up": "yes"}),
        FakeReply.tool_use("fetch_record", {}),
    )
    reasoner = make_reasoner()
    hallucinated = await reasoner.decide(decision_request())
    assert hallucinated.decision.params == {"record_id": 1, "made_up": "yes"}
    missing = await reasoner.decide(decision_request())
    assert missing.decision.params == {}


@pytest.mark.parametrize(
    ("reply", "fragment"),
    [
        (FakeReply.text("I think we should fetch record 42."), "without calling a tool"),
        (FakeReply.text("Let me think", stop_reason="max_tokens"), "max_tokens"),
        (FakeReply.tool_use("delete_everything", {}), "unknown action 'delete_everything'"),
        (FakeReply.tool_use("fetch_record", "{record_id: 42"), "must be a JSON object"),
    ],
    ids=["plain-text", "truncated", "unknown-tool", "invalid-json-input"],
)
async def test_unusable_answers_are_decision_format_errors(
    fake, make_reasoner, reply: FakeReply, fragment: str
) -> None:
    fake.script(reply)
    with pytest.raises(DecisionFormatError) as info:
        await make_reasoner().decide(decision_request())
    assert fragment in str(info.value)
    assert "fetch_record" in str(info.value)  # the repair hint names the allowed actions
    assert not info.value.retryable
    assert len(fake.requests) == 1  # a format error is not retried by the reasoner


async def test_overloaded_then_success_is_retried_by_the_sdk(fake, make_reasoner) -> None:
    fake.script(FakeReply.overloaded(), FakeReply.tool_use("fetch_record", {"record_id": 7}))
    result = await make_reasoner(sdk_max_retries=2).decide(decision_request())
    assert result.decision.params == {"record_id": 7}
    assert len(fake.requests) == 2
    assert fake.requests[1].headers["x-stainless-retry-count"] == "1"


async def test_rate_limited_then_success_is_retried(fake, make_reasoner) -> None:
    fake.script(FakeReply.rate_limited(), FakeReply.tool_use("fetch_record", {"record_id": 8}))
    result = await make_reasoner(sdk_max_retries=2).decide(decision_request())
    assert result.decision.params == {"record_id": 8}
    assert len(fake.requests) == 2


async def test_our_policy_retries_after_the_sdk_gave_up(fake, make_reasoner) -> None:
    fake.script(
        FakeReply.overloaded(),
        FakeReply.server_error(),
        FakeReply.tool_use("fetch_record", {"record_id": 9}),
    )
    reasoner = make_reasoner(sdk_max_retries=0, retry=RetryPolicy(3, FAST_BACKOFF))
    result = await reasoner.decide(decision_request())
    assert result.decision.params == {"record_id": 9}
    assert len(fake.requests) == 3
    # each of our attempts is a fresh SDK call, not an SDK retry
    assert {r.headers["x-stainless-retry-count"] for r in fake.requests} == {"0"}


async def test_persistent_overload_is_unavailable_after_bounded_attempts(
    fake, make_reasoner
) -> None:
    fake.script(*[FakeReply.overloaded() for _ in range(10)])
    reasoner = make_reasoner(sdk_max_retries=1, retry=RetryPolicy(2, FAST_BACKOFF))
    with pytest.raises(ReasonerUnavailable) as info:
        await reasoner.decide(decision_request())
    assert info.value.status_code == 529 and "overloaded_error" in str(info.value)
    assert isinstance(info.value, TransientError) and info.value.retryable
    assert len(fake.requests) == 4  # (1 + 1 SDK retry) x 2 attempts, then it stops


async def test_timeout_is_unavailable(fake, make_reasoner) -> None:
    fake.script(FakeReply.tool_use("fetch_record", {"record_id": 1}).delayed(5.0))
    reasoner = make_reasoner(timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(ReasonerUnavailable, match="timed out"):
        await reasoner.decide(decision_request())
    assert time.monotonic() - started < 3.0
    assert len(fake.requests) == 1


async def test_connection_refused_is_unavailable(make_reasoner) -> None:
    with FakeAnthropicServer() as srv:
        dead_url = srv.base_url  # the port is free again once the server stopped
    with pytest.raises(ReasonerUnavailable, match="unreachable"):
        await make_reasoner(base_url=dead_url).complete("s", "p", max_tokens=5)


async def test_wrong_key_is_auth_error_and_never_leaks(fake, make_reasoner, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk-ant-WRONG-KEY-do-not-print-1234"
    reasoner = make_reasoner(api_key=wrong, sdk_max_retries=2, retry=RetryPolicy(3, FAST_BACKOFF))
    with pytest.raises(ReasonerAuthError) as info:
        await reasoner.decide(decision_request())
    err = info.value
    assert err.status_code == 401 and isinstance(err, UsageError) and not err.retryable
    assert len(fake.requests) == 1  # auth errors are not retried
    assert (
        err.__cause__ is None and err.__suppress_context__
    )  # the SDK error (with headers) is dropped
    for text in (str(err), repr(err), repr(reasoner), caplog.text):
        assert wrong not in text


async def test_key_never_logged_nor_in_errors_on_retries(fake, make_reasoner, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    fake.script(*[FakeReply.overloaded() for _ in range(4)])
    reasoner = make_reasoner(sdk_max_retries=1, retry=RetryPolicy(2, FAST_BACKOFF))
    with pytest.raises(ReasonerUnavailable) as info:
        await reasoner.decide(decision_request())
    await reasoner.complete("s", "p", max_tokens=5)
    assert "retrying" in caplog.text  # our retry was logged ...
    for text in (str(info.value), repr(info.value), caplog.text, repr(reasoner)):
        assert TEST_KEY not in text  # ... without the key
    assert not any(TEST_KEY in str(r.headers) for r in fake.requests)


async def test_error_messages_scrub_an_echoed_key(fake, make_reasoner) -> None:
    fake.script(FakeReply.error(400, "invalid_request_error", f"bad key {TEST_KEY} in body"))
    with pytest.raises(ReasonerRequestError) as info:
        await make_reasoner().decide(decision_request())
    assert TEST_KEY not in str(info.value) and "[redacted]" in str(info.value)


async def test_usage_callback_gets_provider_usage(fake, make_reasoner) -> None:
    seen: list[tuple[str, str, Usage]] = []
    fake.script(FakeReply.tool_use("fetch_record", {"record_id": 3}, usage=(1234, 56)))
    reasoner = make_reasoner(on_usage=lambda m, text, u: seen.append((m, text, u)))
    result = await reasoner.decide(decision_request())
    assert result.usage == Usage(input_tokens=1234, output_tokens=56)
    assert len(seen) == 1
    model, text, usage = seen[0]
    assert model == reasoner.model and usage == result.usage
    assert "You are the fetch agent" in text and "Task: fetch record 42." in text
    assert "fetch_record" in text  # tool definitions count towards input tokens too


async def test_failing_usage_callback_does_not_fail_the_call(fake, make_reasoner, caplog) -> None:
    def broken(model: str, text: str, usage: Usage) -> None:
        raise RuntimeError("telemetry down")

    result = await make_reasoner(on_usage=broken).decide(decision_request())
    assert result.decision.action == "fetch_record"
    assert "on_usage callback" in caplog.text


async def test_complete_returns_text_blocks(fake, make_reasoner) -> None:
    fake.script(
        FakeReply(content=({"type": "text", "text": "Hello "}, {"type": "text", "text": "world"}))
    )
    calls: list[Any] = []
    text = await make_reasoner(on_usage=lambda *a: calls.append(a)).complete(
        "Be brief.", "Say hello.", max_tokens=20
    )
    assert text == "Hello world"
    body = fake.requests[-1].body
    assert body["system"] == "Be brief." and body["max_tokens"] == 20 and "tools" not in body
    assert len(calls) == 1


async def test_from_settings_without_key_is_auth_error() -> None:
    with pytest.raises(ReasonerAuthError):
        AnthropicReasoner.from_settings(ReasonerSettings(api_key=None))


async def test_settings_read_env_and_hide_key(monkeypatch, fake) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
    monkeypatch.setenv("MESH_LLM_MODEL", "claude-env-model")
    monkeypatch.setenv("MESH_LLM_SDK_MAX_RETRIES", "0")
    settings = ReasonerSettings()
    assert settings.model == "claude-env-model" and settings.base_url == fake.base_url
    assert TEST_KEY not in repr(settings) and TEST_KEY not in str(settings)
    reasoner = AnthropicReasoner.from_settings(settings)
    try:
        assert (await reasoner.decide(decision_request())).decision.action == "fetch_record"
        assert fake.requests[-1].body["model"] == "claude-env-model"
    finally:
        await reasoner.aclose()
