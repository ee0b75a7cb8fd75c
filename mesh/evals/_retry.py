"""The p^k retry claim, measured through the real retry layer.

DESIGN.md: a step that fails with probability ``p`` makes an ``N``-step workflow succeed with
``(1-p)^N`` (0.98^50 = 36.4%); retrying each step up to ``k`` times makes a step fail with
``p^k`` only, so the workflow succeeds with ``(1-p^k)^N`` (k=3: 99.96%).

Here every step is one ``AnthropicReasoner.decide`` call through the real ``anthropic`` SDK to
the fake Messages API, which answers HTTP 500 with probability ``p`` (seeded) and a valid tool
call otherwise; ``RetryPolicy(max_attempts=k)`` is the layer under test. A workflow succeeds when
all its ``N`` steps got a decision. The failure source is synthetic on purpose: the claim is
about the retry arithmetic, which a real model's rarer, correlated failures would only blur.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

from mesh.evals._stats import wilson_interval
from mesh.llm.anthropic_reasoner import AnthropicReasoner
from mesh.llm.backoff import ExponentialBackoff, RetryPolicy
from mesh.llm.decision import ActionSpec, ReasonerRequest
from mesh.llm.errors import ReasonerError
from mesh.testing import FakeAnthropicServer, FakeReply, first_tool_responder

__all__ = ["RetryEvalResult", "run_retry_eval"]

_FAKE_KEY = "fake-key-for-local-server"


@dataclass(frozen=True)
class RetryEvalResult:
    """Measured and predicted success of ``trials`` workflows of ``steps`` steps at one ``attempts``."""

    p: float
    """Failure probability of one call."""

    steps: int
    """Steps per workflow (N)."""

    attempts: int
    """Attempts per step (k); 1 = no retry."""

    trials: int
    """Workflows run."""

    successes: int
    """Workflows whose every step got a decision."""

    calls: int
    """Calls the server answered (retries included)."""

    elapsed_s: float
    """Wall time of these trials, in seconds."""

    @property
    def rate(self) -> float:
        """Measured workflow success rate."""
        return self.successes / self.trials

    @property
    def interval(self) -> tuple[float, float]:
        """95% Wilson interval of :attr:`rate`."""
        return wilson_interval(self.successes, self.trials)

    @property
    def predicted(self) -> float:
        """``(1 - p^k)^N``."""
        return float((1 - self.p**self.attempts) ** self.steps)


async def _one_config(
    p: float, steps: int, attempts: int, trials: int, seed: int, concurrency: int
) -> RetryEvalResult:
    rng = random.Random(f"{seed}:{p}:{attempts}")

    def responder(body: dict[str, Any]) -> FakeReply:
        if rng.random() < p:
            return FakeReply.server_error(retry_after_s=0.0)
        return first_tool_responder(body)

    action = ActionSpec(
        name="advance", description="Do the next step.", params_schema={"type": "object"}
    )
    started = time.monotonic()
    with FakeAnthropicServer(responder, reject_sampling_params=False) as srv:
        reasoner = AnthropicReasoner(
            api_key=_FAKE_KEY,
            base_url=srv.base_url,
            model="fake-p-failure",
            timeout_s=30,
            sdk_max_retries=0,
            retry=RetryPolicy(
                max_attempts=attempts, backoff=ExponentialBackoff(base_s=0.0, cap_s=0.0)
            ),
        )
        gate = asyncio.Semaphore(concurrency)

        async def workflow(index: int) -> bool:
            async with gate:
                for step in range(steps):
                    request = ReasonerRequest(
                        system="eval",
                        prompt=f"workflow {index} step {step}",
                        actions=[action],
                        temperature=0.0,
                        max_tokens=16,
                    )
                    try:
                        await reasoner.decide(request)
                    except ReasonerError:
                        return False
                return True

        try:
            outcomes = await asyncio.gather(*(workflow(i) for i in range(trials)))
        finally:
            await reasoner.aclose()
        calls = len(srv.requests)
    return RetryEvalResult(
        p, steps, attempts, trials, sum(outcomes), calls, time.monotonic() - started
    )


async def run_retry_eval(
    *,
    p: float = 0.02,
    steps: int = 50,
    attempts: tuple[int, ...] = (1, 3),
    trials: int = 200,
    seed: int = 0,
    concurrency: int = 8,
) -> list[RetryEvalResult]:
    """One result per entry of ``attempts``."""
    if not 0 <= p < 1 or steps < 1 or trials < 1 or not attempts or min(attempts) < 1:
        raise ValueError("need 0 <= p < 1, steps >= 1, trials >= 1 and attempts >= 1")
    return [await _one_config(p, steps, k, trials, seed, concurrency) for k in attempts]
