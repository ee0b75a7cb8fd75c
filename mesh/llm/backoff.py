"""Retry policy applied on top of the provider SDK's own retries."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["ExponentialBackoff", "RetryPolicy"]


@dataclass(frozen=True)
class ExponentialBackoff:
    """Jittered exponential delay: ``min(cap_s, base_s * 2**(failures-1))`` scaled into ``[1-jitter, 1]``.

    The downward-only jitter spreads out callers that failed together without ever waiting
    longer than the cap.
    """

    base_s: float = 1.0
    """Delay after the first failure, in seconds, before jitter."""

    cap_s: float = 20.0
    """Largest delay, in seconds, before jitter."""

    jitter: float = 0.5
    """Fraction of the delay that is randomized (0 = none, 1 = full jitter)."""

    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)
    """Random source; pass a seeded one for reproducible delays."""

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.cap_s < 0:
            raise ValueError("backoff delays must be >= 0 seconds")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be within [0, 1]")

    def delay_s(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures (``failures >= 1``)."""
        exponent = min(max(failures, 1) - 1, 62)  # keeps 2**exponent finite
        ceiling = min(self.cap_s, self.base_s * (2.0**exponent))
        return ceiling * (1.0 - self.jitter * self.rng.random())


@dataclass(frozen=True)
class RetryPolicy:
    """How often a retryable reasoner failure is tried again, and how long to wait in between."""

    max_attempts: int = 3
    """Total attempts including the first; 1 disables our retries (the SDK still retries)."""

    backoff: ExponentialBackoff = field(default_factory=ExponentialBackoff)
    """Delay between attempts."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
