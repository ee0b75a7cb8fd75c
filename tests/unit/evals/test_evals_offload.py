"""The cognitive-offloading evaluation, on a scripted model through the real SDK and fake API."""

from __future__ import annotations

import re
from typing import Any

import pytest

from mesh.evals import OffloadEvalOptions, run_offload_eval
from mesh.llm import AnthropicReasoner, RetryPolicy
from mesh.testing import FakeAnthropicServer, FakeReply


class SloppyCopier:
    """Picks the right patient and item, but copies the token with its last character wrong, and
    answers its first decision of every task in text (no tool call)."""

    def __init__(self) -> None:
        self.seen_prompts: set[str] = set()

    def __call__(self, body: dict[str, Any]) -> FakeReply:
        prompt = body["messages"][0]["content"]
        item = int(re.search(r"Task: file item (\d+) \(patient (P-\d+)\)", prompt).group(1))  # type: ignore[union-attr]
        patient = re.search(r"Task: file item \d+ \(patient (P-\d+)\)", prompt).group(1)  # type: ignore[union-attr]
        if item == 1 and "Your previous" not in prompt and prompt not in self.seen_prompts:
            self.seen_prompts.add(prompt)
            return FakeReply.text('{"name": "file_record"}')
        token = (
            m.group(1)[:-1] + "x"
            if (m := re.search(r"API token: (\S+)", prompt))
            else "tok-unknown"
        )
        wid = m.group(1) if (m := re.search(r"Workflow id: (\S+)", prompt)) else "wf-unknown"
        return FakeReply.tool_use(
            "file_record", {"workflow_id": wid, "token": token, "patient_id": patient, "item": item}
        )


async def test_injection_and_validation_rescue_a_sloppy_copier() -> None:
    with FakeAnthropicServer(SloppyCopier(), flavor="llama-server") as srv:
        reasoner = AnthropicReasoner(
            api_key="k", base_url=srv.base_url, sdk_max_retries=0, retry=RetryPolicy(1)
        )
        try:
            on, off = await run_offload_eval(reasoner, OffloadEvalOptions(trials=3, items=3))
        finally:
            await reasoner.aclose()
    assert (on.mode, off.mode) == ("on", "off")
    # on: the text answer is repaired, token and workflow id are injected, every task succeeds
    assert on.successes == 3 and on.no_tool_call == 3 and on.repairs == 3
    assert on.hallucinated_params == 0 and on.wrong_params_at_api == 0 and on.injected == 2 * 9
    assert on.decisions == 3 * 4
    # off: the first turn of each task is wasted, every call carries a wrong token and is refused
    assert off.successes == 0 and off.no_tool_call == 3 and off.repairs == 0
    assert off.api_calls == off.rejected == 3 * 4 and off.wrong_params_at_api == off.api_calls
    assert off.per_decision(off.hallucinated_params) == pytest.approx(off.api_calls / off.decisions)
    low, high = off.interval
    assert low == 0.0 and 0.4 < high < 0.8
    assert on.elapsed_s > 0 and off.elapsed_s > 0


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="trials"):
        OffloadEvalOptions(trials=0)
