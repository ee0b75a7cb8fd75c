"""A process that makes reasoner calls through the shared rate limiter, for the rate-limit tests.

Usage: python -m tests.integration.llm_caller BASE_URL REDIS_URL PREFIX NAME CALLS RPM TPM WINDOW_S
Prints ``ready`` once imported and connected, waits for a line on stdin, then makes CALLS
``complete`` calls (prompt ``from NAME #i``), printing ``grant <unix time>`` each time the limiter
lets an attempt go, and ``done`` at the end.
"""

from __future__ import annotations

import asyncio
import sys
import time

from mesh.llm import (
    AnthropicReasoner,
    ExponentialBackoff,
    RateTicket,
    RedisRateLimiter,
    RetryPolicy,
)


class LoggedLimiter(RedisRateLimiter):
    """Prints when each attempt is let through (the arrival at the server lags on a busy machine)."""

    async def acquire(self, tokens: int) -> RateTicket:
        ticket = await super().acquire(tokens)
        print(f"grant {time.time():.6f}", flush=True)
        return ticket


async def main(
    base_url: str,
    redis_url: str,
    prefix: str,
    name: str,
    calls: str,
    rpm: str,
    tpm: str,
    window_s: str,
) -> None:
    limiter = LoggedLimiter.from_url(
        redis_url, prefix=prefix, rpm=int(rpm), tpm=int(tpm), window_s=float(window_s)
    )
    reasoner = AnthropicReasoner(
        api_key="sk-ant-test-0000",
        base_url=base_url,
        model="claude-sonnet-4-6",
        timeout_s=30,
        sdk_max_retries=0,
        retry=RetryPolicy(max_attempts=4, backoff=ExponentialBackoff(base_s=0.01, cap_s=0.02)),
        rate_limiter=limiter,
    )
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    for i in range(int(calls)):
        await reasoner.complete("You count.", f"from {name} #{i}", max_tokens=16)
    print("done", flush=True)
    await reasoner.aclose()
    await limiter.aclose()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
