"""The reasoner path on a real model: llama-server + Qwen2.5-Coder 0.5B through the anthropic SDK.

A private server (own state directory and port) is started for the module, so SIGSTOP and
SIGKILL here never touch a server someone else uses. Each model call takes 5-50 s on a loaded
2-core machine, so the tests make few of them. Without the built server or the model they skip,
unless ``MESH_REQUIRE_LLM=1`` (CI: .ci/tools.d/50-llm.sh), where they fail.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mesh.context import TokenCounter
from mesh.dev import DevConfig, free_port
from mesh.dev._llm import LOCAL_DECISION_TOKENS, MODEL, TOOL_CALL_PREFILL, LlmConfig, LocalLlm
from mesh.llm import (
    ActionSpec,
    AnthropicReasoner,
    DecisionFormatError,
    ReasonerRequest,
    ReasonerUnavailable,
    RetryPolicy,
)
from mesh.llm.backoff import ExponentialBackoff
from mesh.llm.decision import Usage
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

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

LOCAL_KEY = "local-llama-server-no-key"  # llama-server ignores it; the SDK wants one


@pytest.fixture(scope="module")
def local_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalLlm]:
    """A private llama-server with the pinned model, for this module only."""
    if os.environ.get("MESH_REQUIRE_LLM") != "1" and os.environ.get("MESH_LLM_LOCAL_TESTS") != "1":
        pytest.skip("real-model tests are opt-in: MESH_LLM_LOCAL_TESTS=1 (CI: .ci/tools.d/50-llm.sh sets MESH_REQUIRE_LLM=1)")
    local = LocalLlm(
        DevConfig.isolated(tmp_path_factory.mktemp("llm-state")),
        LlmConfig(port=free_port()),
    )
    if not local.installed():
        reason = "llama-server or the model is not cached (run `python -m mesh dev llm` or .ci/tools.d/50-llm.sh)"
        if os.environ.get("MESH_REQUIRE_LLM") == "1":
            pytest.fail(f"MESH_REQUIRE_LLM=1 but {reason}")
        pytest.skip(reason)
    local.up()
    yield local
    local.down()


def reasoner_for(local: LocalLlm, **overrides: Any) -> AnthropicReasoner:
    options: dict[str, Any] = {
        "api_key": LOCAL_KEY,
        "base_url": local.base_url,
        "model": MODEL.name,
        "timeout_s": 240.0,
        "sdk_max_retries": 0,
        "send_temperature": True,
        "tool_prefill": TOOL_CALL_PREFILL,
        "max_decision_tokens": LOCAL_DECISION_TOKENS,
        "retry": RetryPolicy(max_attempts=1),
    }
    options.update(overrides)
    return AnthropicReasoner(**options)


@pytest.fixture
async def reasoner(local_llm: LocalLlm) -> AsyncIterator[AnthropicReasoner]:
    r = reasoner_for(local_llm)
    yield r
    await r.aclose()


LOOKUP = ActionSpec(
    name="lookup_patient",
    description="Look up one patient record by its id.",
    params_schema={
        "type": "object",
        "properties": {"patient_id": {"type": "string", "description": "The patient id, e.g. P-0001."}},
        "required": ["patient_id"],
    },
)
FINISH = ActionSpec(name="finish", description="Stop: there is nothing left to do.", params_schema={"type": "object"})


def lookup_request(**overrides: Any) -> ReasonerRequest:
    values: dict[str, Any] = {
        "system": "You are the fetch agent of a hospital workflow. Pick exactly one action.",
        "prompt": "Task: look up the record of patient P-4417.",
        "actions": [LOOKUP, FINISH],
        "temperature": 0.0,
        "max_tokens": 48,  # the call is ~25 tokens; the model then writes more calls until the cap
    }
    values.update(overrides)
    return ReasonerRequest(**values)


async def test_real_tool_use_decision_with_usage_reported(local_llm: LocalLlm) -> None:
    seen: list[tuple[str, str, Usage]] = []
    reasoner = reasoner_for(local_llm, on_usage=lambda model, text, usage: seen.append((model, text, usage)))
    try:
        result = await reasoner.decide(lookup_request())
    finally:
        await reasoner.aclose()
    assert result.decision.action == "lookup_patient"
    assert "4417" in str(result.decision.params.get("patient_id"))
    assert "tool_use lookup_patient" in result.raw
    # Usage comes from the server's response, not from an estimate.
    assert result.usage is not None and result.usage.input_tokens > 50 and result.usage.output_tokens > 3
    assert result.model == MODEL.name
    assert len(seen) == 1 and seen[0][2] == result.usage and "P-4417" in seen[0][1]


async def test_token_calibration_from_real_usage(local_llm: LocalLlm) -> None:
    """The context engine's tiktoken estimate is calibrated with the server's real prompt size."""
    builder = StackPromptBuilder(model=MODEL.name, counter=TokenCounter())
    assert builder.counter.ratio_for(MODEL.name) == 1.0
    reasoner = reasoner_for(local_llm, on_usage=lambda _m, text, usage: builder.calibrate(text, usage.input_tokens))
    try:
        result = await reasoner.decide(lookup_request())
    finally:
        await reasoner.aclose()
    assert result.usage is not None
    ratio = builder.counter.ratio_for(MODEL.name)
    # The chat template adds the tool instructions and role markers tiktoken never saw: the real
    # prompt is bigger than the estimate of the text we sent, and the ratio says by how much.
    assert ratio != 1.0 and 1.0 < ratio < 5.0


async def test_truncated_answer_is_a_format_error_and_the_repair_succeeds(reasoner: AnthropicReasoner) -> None:
    with pytest.raises(DecisionFormatError, match="max_tokens") as info:
        await reasoner.decide(lookup_request(max_tokens=3))
    repaired = await reasoner.decide(lookup_request(repair_hint=str(info.value)))
    assert repaired.decision.action == "lookup_patient"
    assert "4417" in str(repaired.decision.params.get("patient_id"))


TOKEN = "tok-real-6c1f0e9b2a"
SPEC = WorkflowSpec.parse(
    {
        "name": "local-model",
        "mission": "Record the three items 1, 2 and 3 with the records API, one per turn.",
        "steps": [
            {"id": "record", "role": "recorder", "task": "Record the next item (1, then 2, then 3).",
             "limits": {"max_turns": 6, "max_repairs": 3, "spin_window": 6}},
        ],
    }
)


class RecordsApi:
    """Accepts only the real token; counts what it saw."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def record(self, ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
        self.tokens.append(params["token"])
        n = int(ctx.memory.get("recorded", 0)) + 1
        return ActionOutcome(summary=f"recorded item {params['item']} ({n} of 3 done)", memory={"recorded": n}, done=n >= 3)


async def test_a_step_runs_on_the_real_model_with_the_token_injected(local_llm: LocalLlm) -> None:
    """The whole turn loop: real decisions, validation, repairs, the secret token injected."""
    api = RecordsApi()
    schema = {
        "type": "object",
        "properties": {"item": {"type": "integer", "minimum": 1, "maximum": 3}, "token": {"type": "string"}},
        "required": ["item", "token"],
        "additionalProperties": False,
    }
    actions = {"record_item": Action(ActionSpec(name="record_item", description="Record one item.", params_schema=schema),
                                     api.record, inject={"token": "var:api_token"})}
    events: list[Envelope] = []

    async def publish(env: Envelope) -> None:
        events.append(env)

    reasoner = reasoner_for(local_llm)
    runner = StepRunner(reasoner, InMemoryStateStore(), StackPromptBuilder(model=MODEL.name), publish,
                        agent_id="llm-1", role="recorder", actions=actions)
    rehydration = Rehydration(variables={"api_token": ContextVariable("api_token", TOKEN, secret=True, priority=0, origin="identity")})
    try:
        state = await runner.run(SPEC, SPEC.steps[0], "wf-llm", rehydration=rehydration)
    finally:
        await reasoner.aclose()
    assert state.status == "completed", (state.status, state.error, state.escalation)
    assert api.tokens == [TOKEN] * 3  # whatever the model wrote, the real token reached the API
    # The model never saw the token, so each call's token was filled or corrected by injection.
    assert all(h.injected and h.injected[0].startswith("token (") for h in state.history)
    assert TOKEN not in repr(state.history) and all(TOKEN not in repr(e.payload) for e in events)


def _signal(local: LocalLlm, sig: signal.Signals) -> int:
    pid = local.service().pid()
    assert pid is not None, "the local server is not running"
    os.kill(pid, sig)
    return pid


async def test_a_stopped_server_times_out_and_the_retry_recovers_when_it_resumes(local_llm: LocalLlm) -> None:
    reasoner = reasoner_for(local_llm, timeout_s=4.0)
    pid = _signal(local_llm, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(ReasonerUnavailable, match="timed out"):
            await reasoner.decide(lookup_request())
        assert 3.5 < time.monotonic() - started < 30
    finally:
        os.kill(pid, signal.SIGCONT)
        await reasoner.aclose()
    # Frozen again, thawed by a timer while our retry layer backs off: the next attempt answers.
    # An attempt may take a minute on a loaded 2-core machine; the freeze outlasts the first.
    retrying = reasoner_for(local_llm, timeout_s=60.0,
                            retry=RetryPolicy(max_attempts=3, backoff=ExponentialBackoff(base_s=1.0, cap_s=2.0, jitter=0)))
    _signal(local_llm, signal.SIGSTOP)
    thaw = threading.Timer(65.0, os.kill, (pid, signal.SIGCONT))
    thaw.start()
    started = time.monotonic()
    try:
        result = await retrying.decide(lookup_request())
    finally:
        thaw.join()
        os.kill(pid, signal.SIGCONT)
        await retrying.aclose()
    assert result.decision.action == "lookup_patient"
    assert time.monotonic() - started > 60  # the first attempt timed out; a retry got the answer


async def test_a_killed_server_is_unavailable_then_serves_again_after_restart(local_llm: LocalLlm) -> None:
    reasoner = reasoner_for(local_llm, timeout_s=10.0,
                            retry=RetryPolicy(max_attempts=2, backoff=ExponentialBackoff(base_s=0.2, cap_s=0.2)))
    service = local_llm.service()
    assert service.stop(kill=True)  # SIGKILL
    try:
        started = time.monotonic()
        with pytest.raises(ReasonerUnavailable, match="unreachable"):
            await reasoner.decide(lookup_request())
        assert time.monotonic() - started < 10  # refused at once, not a timeout
    finally:
        await reasoner.aclose()
        local_llm.up()
    # After the restart the KV cache is cold: the first answer takes a whole prompt evaluation.
    restarted = reasoner_for(local_llm)
    try:
        result = await restarted.decide(lookup_request())
    finally:
        await restarted.aclose()
    assert result.decision.action == "lookup_patient"


def test_the_cached_model_is_the_pinned_one(local_llm: LocalLlm) -> None:
    from mesh.dev._llm import check_gguf_header, model_path

    path = model_path(local_llm.config)
    assert path.stat().st_size == MODEL.size
    check_gguf_header(Path(path), architecture=MODEL.architecture)


def _shape(message: dict[str, Any]) -> dict[str, Any]:
    """What the fake must reproduce: keys, id formats, block types, usage keys, the model's name."""
    return {
        "keys": sorted(message),
        "id": (message["id"].split("-")[0], len(message["id"])),
        "blocks": [(b["type"], sorted(b), len(b.get("id", ""))) for b in message["content"]],
        "usage": sorted(message["usage"]),
        "model": message["model"],
        "stop_reason": message["stop_reason"],
    }


def test_the_fake_llama_flavor_answers_like_the_real_server(local_llm: LocalLlm) -> None:
    """The fast tests' llama-server flavor, compared with the real server on the same requests."""
    import httpx

    from mesh.testing import FakeAnthropicServer, FakeReply

    body = {
        "model": "asked-for-another-model",
        "max_tokens": 48,
        "temperature": 0.0,
        "system": "You are the fetch agent of a hospital workflow. Pick exactly one action.",
        "messages": [
            {"role": "user", "content": "Task: look up the record of patient P-4417."},
            {"role": "assistant", "content": TOOL_CALL_PREFILL},
        ],
        "tools": [{"name": LOOKUP.name, "description": LOOKUP.description, "input_schema": LOOKUP.params_schema}],
        "tool_choice": {"type": "any"},
    }
    bad = {"model": "m", "max_tokens": 5}  # no messages
    headers = {"x-api-key": "whatever", "anthropic-version": "2023-06-01"}
    with FakeAnthropicServer(flavor="llama-server", served_model=MODEL.name) as fake:
        fake.script(FakeReply.tool_use(LOOKUP.name, {"patient_id": "P-4417"}), FakeReply.tool_use(LOOKUP.name, {"patient_id": "P-4417"}))
        answers = {}
        for name, base in (("real", local_llm.base_url), ("fake", fake.base_url)):
            with httpx.Client(base_url=base, headers=headers, timeout=240) as http:
                first, again = http.post("/v1/messages", json=body), http.post("/v1/messages", json=body)
                answers[name] = (first, again, http.post("/v1/messages", json=bad), http.post("/v1/no-such-route", json=bad))
    (real, real_again, real_bad, real_404), (fake_first, fake_again, fake_bad, fake_404) = answers["real"], answers["fake"]
    assert real.status_code == fake_first.status_code == 200, real.text
    assert _shape(real.json()) == _shape(fake_first.json())
    # The repeated prompt comes out of the one slot's KV cache, in both.
    for again in (real_again.json(), fake_again.json()):
        assert again["usage"]["cache_read_input_tokens"] > 0 and again["usage"]["input_tokens"] < 5, again["usage"]
    assert real_again.json()["usage"]["cache_read_input_tokens"] + real_again.json()["usage"]["input_tokens"] == (
        real.json()["usage"]["input_tokens"] + real.json()["usage"]["cache_read_input_tokens"]
    )
    for r, f in ((real_bad, fake_bad), (real_404, fake_404)):
        assert r.status_code == f.status_code and sorted(r.json()["error"]) == sorted(f.json()["error"]), (r.text, f.text)
        assert r.json()["error"]["type"] == f.json()["error"]["type"]
        assert "request-id" not in r.headers and "request-id" not in f.headers
