"""Retry policy applied on top of the provider SDK's own retries."""

from __future__ import annotations

from dataclasses import dataclass, field

from mesh.backoff import ExponentialBackoff  # the one backoff strategy of mesh; re-exported here

__all__ = ["ExponentialBackoff", "RetryPolicy"]


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
