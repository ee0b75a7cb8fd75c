"""Backoff: the one delay strategy of every retry and poll loop in ``mesh``; delays are in seconds.

``ExponentialBackoff`` is the strategy (frozen, shareable, in options dataclasses); ``Backoff`` is
one loop's running count of failures (``policy.start()``), in the spirit of redis-py's
``redis/backoff.py`` plus ``Retry``: the loop asks for the next delay, sleeps, and resets on
success. No other module computes exponential delays itself (``tests/unit/test_backoff.py``).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

__all__ = ["Backoff", "ExponentialBackoff"]


@dataclass(frozen=True)
class ExponentialBackoff:
    """Jittered exponential delay: ``min(cap_s, base_s * factor**(failures-1))`` scaled into ``[1-jitter, 1]``.

    The downward-only jitter spreads out callers that failed together without ever waiting
    longer than the cap.
    """

    base_s: float = 1.0
    """Delay after the first failure, in seconds, before jitter."""

    cap_s: float = 20.0
    """Largest delay, in seconds, before jitter."""

    jitter: float = 0.5
    """Fraction of the delay that is randomized (0 = none, 1 = full jitter)."""

    factor: float = 2.0
    """Growth of the delay per further failure (>= 1)."""

    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)
    """Random source; pass a seeded one for reproducible delays."""

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.cap_s < 0:
            raise ValueError("backoff delays must be >= 0 seconds")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be within [0, 1]")
        if self.factor < 1.0:
            raise ValueError("factor must be >= 1")

    def delay_s(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures (``failures >= 1``)."""
        exponent = min(max(failures, 1) - 1, 62)  # keeps factor**exponent finite for factor 2
        try:
            growth = self.factor**exponent
        except OverflowError:
            growth = float("inf")
        ceiling = min(self.cap_s, self.base_s * growth)
        return ceiling * (1.0 - self.jitter * self.rng.random())

    def start(self) -> Backoff:
        """A running backoff for one loop, at zero failures."""
        return Backoff(self)


class Backoff:
    """One loop's backoff: counts consecutive failures and sleeps accordingly.

    Not shared between tasks: each loop starts its own (``ExponentialBackoff.start()``).
    """

    def __init__(self, policy: ExponentialBackoff) -> None:
        """Start at zero failures under ``policy``."""
        self.policy = policy
        self.failures = 0
        """Consecutive failures since the last ``reset``."""

    def next_delay_s(self) -> float:
        """Count one more failure; the seconds to wait before trying again."""
        self.failures += 1
        return self.policy.delay_s(self.failures)

    async def sleep(self) -> float:
        """Count a failure and wait (asyncio); return the seconds waited."""
        delay = self.next_delay_s()
        await asyncio.sleep(delay)
        return delay

    def sleep_blocking(self) -> float:
        """Count a failure and wait, blocking the thread (synchronous code only); return the seconds."""
        delay = self.next_delay_s()
        time.sleep(delay)
        return delay

    def reset(self) -> None:
        """The operation succeeded: the next failure waits ``base_s`` again."""
        self.failures = 0
