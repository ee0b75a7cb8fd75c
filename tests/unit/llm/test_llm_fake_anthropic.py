"""The fake Messages API: wire shapes, scripting, recording, needle mode, process mode."""

from __future__ import annotations

import asyncio
import sys

import httpx
import pytest
from llm_helpers import FETCH, TEST_KEY, decision_request

from mesh.llm import AnthropicReasoner, RetryPolicy
from mesh.testing import (
    FakeAnthropicServer,
    FakeReply,
    NeedleResponder,
    first_tool_responder,
)

HEADERS = {"x-api-key": TEST_KEY, "anthropic-version": "2026-10-21"}


def test_message_shape_and_recording(fake: FakeAnthropicServer) -> None:
    body = {
        "model": "m",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": FETCH.name, "description": "", "input_schema": FETCH.params_schema}],
    }
    reply = httpx.post(f"{fake.base_url}/v1/messages", json=body, headers=HEADERS)
    assert reply.status_code == 200
    message = reply.json()
    assert {k: message[k] for k in ("type", "role", "model", "stop_reason")} == {
        "type": "message",
        "role": "assistant",
        "model": "m",
        "stop_reason": "tool_use",
    }
    tool = message["content"][-1]
    assert tool["type"] == "tool_use" and tool["id"].startswith("toolu_")
    assert tool["name"] == "fetch_record" and tool["input"] == {"record_id": 1}
    assert message["usage"]["input_tokens"] > 0 and message["usage"]["output_tokens"] > 0
    recorded = fake.requests[-1]
    assert recorded.path == "/v1/messages" and recorded.body == body
    assert "x-api-key" not in recorded.headers  # the key is checked, never stored


@pytest.mark.parametrize(
    ("reply", "status", "error_type"),
    [
        (FakeReply.overloaded(), 529, "overloaded_error"),
        (FakeReply.rate_limited(retry_after_s=2.5), 429, "rate_limit_error"),
        (FakeReply.server_error(), 500, "api_error"),
        (FakeReply.unauthorized(), 401, "authentication_error"),
    ],
)
def test_error_shapes(
    fake: FakeAnthropicServer, reply: FakeReply, status: int, error_type: str
) -> None:
    fake.script(reply)
    answer = httpx.post(f"{fake.base_url}/v1/messages", json={}, headers=HEADERS)
    assert answer.status_code == status
    assert answer.json()["type"] == "error" and answer.json()["error"]["type"] == error_type
    if status == 429:
        assert answer.headers["retry-after"] == "3" and answer.headers["retry-after-ms"] == "2500"


def test_routing_auth_and_sampling_checks(fake: FakeAnthropicServer) -> None:
    url = f"{fake.base_url}/v1/messages"
    assert httpx.post(url, json={}, headers={"x-api-key": "nope"}).status_code == 401
    bearer = {"authorization": f"Bearer {TEST_KEY}"}
    assert httpx.post(url, json={"messages": []}, headers=bearer).status_code == 200
    assert httpx.post(f"{fake.base_url}/v1/other", json={}, headers=HEADERS).status_code == 404
    assert httpx.post(url, content=b"{nope", headers=HEADERS).status_code == 400
    rejected = httpx.post(url, json={"temperature": 1.0}, headers=HEADERS)
    assert rejected.status_code == 400 and "temperature" in rejected.json()["error"]["message"]


def test_script_is_consumed_in_order_then_responder_answers() -> None:
    with FakeAnthropicServer(lambda body: FakeReply.text("default")) as srv:
        srv.script(FakeReply.text("one"), FakeReply.text("two"))
        texts = [
            httpx.post(f"{srv.base_url}/v1/messages", json={}).json()["content"][0]["text"]
            for _ in range(3)
        ]
        assert texts == ["one", "two", "default"] and srv.pending == 0


def test_first_tool_responder_fills_schema_and_summarizes_text() -> None:
    schema = {
        "type": "object",
        "properties": {
            "url": {"type": "string", "format": "uri"},
            "mode": {"enum": ["fast", "slow"]},
            "limit": {"type": "integer", "minimum": 5},
            "page": {"type": "object", "properties": {"n": {"type": "integer"}}},
        },
    }
    reply = first_tool_responder({"tools": [{"name": "t", "input_schema": schema}]})
    assert reply.content[-1]["input"] == {
        "url": "https://example.invalid/url",
        "mode": "fast",
        "limit": 5,
        "page": {"n": 1},
    }
    text = first_tool_responder(
        {"max_tokens": 5, "messages": [{"role": "user", "content": "Short one. Another sentence."}]}
    )
    assert text.content[0]["text"] == "Short one."


def _haystack(needle_at: int, sentences: int = 100) -> str:
    lines = [f"Entry {i} of the log says nothing of interest." for i in range(sentences)]
    lines.insert(needle_at, "The access code for vault 7 is 4417.")
    return "\n".join(lines) + "\nWhat is the access code for vault 7?"


def test_needle_responder_is_u_shaped_and_deterministic() -> None:
    responder = NeedleResponder(middle_recall=0.25, seed=3)
    assert responder.answer(_haystack(0)) == "The access code for vault 7 is 4417."
    assert "4417" in responder.answer(_haystack(99))
    middle_hits = sum("4417" in NeedleResponder(seed=s).answer(_haystack(50)) for s in range(200))
    assert 20 <= middle_hits <= 80  # about middle_recall of 200
    assert responder.answer(_haystack(50)) == responder.answer(_haystack(50))
    assert "cannot find" in responder.answer("Nothing here.\nWhat is the access code for vault 7?")
    assert NeedleResponder(middle_recall=1.0).answer(_haystack(50)).endswith("4417.")
    assert "4417" not in NeedleResponder(middle_recall=0.0).answer(_haystack(50))


async def test_process_mode_serves_the_sdk() -> None:
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "mesh.testing.fake_anthropic", "--port", "0", "--api-key", TEST_KEY],
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode()
        assert "listening on http://127.0.0.1:" in line
        base_url = line.split("listening on ")[1].split()[0]
        reasoner = AnthropicReasoner(
            api_key=TEST_KEY, base_url=base_url, sdk_max_retries=0, retry=RetryPolicy(1)
        )
        try:
            result = await reasoner.decide(decision_request())
        finally:
            await reasoner.aclose()
        assert result.decision.action == "fetch_record"
        assert result.decision.params == {"record_id": 1}
    finally:
        if proc.returncode is None:
            proc.terminate()
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0


# -- llama-server flavor: what the real server of `mesh dev llm` does differently --------------


def test_llama_flavor_message_shape_ids_model_and_cache_usage() -> None:
    body = {
        "model": "whatever-was-asked",
        "max_tokens": 50,
        "temperature": 0.2,  # accepted: llama-server honours sampling parameters
        "system": "You are the fetch agent. " * 20,
        "messages": [{"role": "user", "content": "fetch record 1"}],
        "tools": [{"name": FETCH.name, "description": "", "input_schema": FETCH.params_schema}],
    }
    with FakeAnthropicServer(flavor="llama-server", served_model="qwen-local") as srv:
        first = httpx.post(
            f"{srv.base_url}/v1/messages", json=body, headers={"x-api-key": "anything"}
        )
        again = httpx.post(f"{srv.base_url}/v1/messages", json=body, headers={"x-api-key": "other"})
    assert first.status_code == again.status_code == 200
    message = first.json()
    assert message["model"] == "qwen-local"
    assert message["id"].startswith("chatcmpl-") and len(message["id"]) == len("chatcmpl-") + 32
    tool = message["content"][-1]
    assert tool["type"] == "tool_use" and len(tool["id"]) == 32 and tool["id"].isalnum()
    assert "request-id" not in first.headers
    cold, warm = message["usage"], again.json()["usage"]
    assert cold["cache_read_input_tokens"] == 0 and cold["input_tokens"] > 50
    # The same prompt again: nearly all of it comes from the slot's KV cache, one token is new.
    assert warm["input_tokens"] == 1
    assert warm["cache_read_input_tokens"] + warm["input_tokens"] == cold["input_tokens"]


def test_llama_flavor_errors_have_its_shape_and_no_retry_headers() -> None:
    with FakeAnthropicServer(flavor="llama-server") as srv:
        srv.script(FakeReply.server_error(retry_after_s=2.0))
        failed = httpx.post(f"{srv.base_url}/v1/messages", json={"messages": []})
        srv.loading = True
        loading = httpx.post(f"{srv.base_url}/v1/messages", json={"messages": []})
        srv.loading = False
        missing = httpx.post(f"{srv.base_url}/v1/nope", json={})
    assert failed.status_code == 500
    assert failed.json() == {
        "error": {"code": 500, "message": "Internal server error", "type": "server_error"}
    }
    assert "retry-after" not in failed.headers and "retry-after-ms" not in failed.headers
    assert loading.status_code == 503
    assert loading.json()["error"] == {
        "code": 503,
        "message": "Loading model",
        "type": "unavailable_error",
    }
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "File Not Found"


async def test_llama_flavor_through_the_reasoner() -> None:
    """Unparseable arguments arrive as {}; usage counts cached tokens; 503 is unavailable."""
    from mesh.llm import ReasonerUnavailable

    with FakeAnthropicServer(flavor="llama-server", served_model="qwen-local") as srv:
        reasoner = AnthropicReasoner(
            api_key="ignored", base_url=srv.base_url, model="asked-for", sdk_max_retries=0,
            send_temperature=True, retry=RetryPolicy(max_attempts=1),
        )  # fmt: skip
        try:
            srv.script(FakeReply.tool_use("fetch_record", '{"record_id": 3'))  # truncated JSON
            broken = await reasoner.decide(decision_request())
            cold = await reasoner.decide(decision_request())
            warm = await reasoner.decide(decision_request())
            srv.loading = True
            with pytest.raises(ReasonerUnavailable, match=r"503.*unavailable_error.*Loading model"):
                await reasoner.decide(decision_request())
        finally:
            await reasoner.aclose()
    assert broken.decision.action == "fetch_record" and broken.decision.params == {}
    assert cold.model == warm.model == "qwen-local"
    assert cold.usage is not None and warm.usage is not None
    assert warm.usage.cached_input_tokens > 0 and warm.usage.input_tokens == cold.usage.input_tokens


async def test_llama_flavor_cut_off_answer_is_a_format_error_not_an_outage() -> None:
    """llama-server answers 500 when the model's output does not parse as a tool call: repair it."""
    from mesh.llm import DecisionFormatError, ReasonerUnavailable

    with FakeAnthropicServer(flavor="llama-server") as srv:
        reasoner = AnthropicReasoner(
            api_key="ignored", base_url=srv.base_url, sdk_max_retries=0, retry=RetryPolicy(3)
        )
        try:
            srv.script(FakeReply.unparseable_output("Hermes 2 Pro"))
            with pytest.raises(DecisionFormatError, match="not a complete tool call") as info:
                await reasoner.decide(decision_request())
            assert info.value.status_code == 500
            assert len(srv.requests) == 1  # not retried: the same prompt would give the same answer
            srv.script(FakeReply.server_error(), FakeReply.server_error(), FakeReply.server_error())
            with pytest.raises(ReasonerUnavailable):  # any other 500 is still an outage, retried
                await reasoner.decide(decision_request())
            assert len(srv.requests) == 4
        finally:
            await reasoner.aclose()
