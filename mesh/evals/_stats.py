"""Small statistics shared by the evaluations: a binomial confidence interval."""

from __future__ import annotations

import math

__all__ = ["wilson_interval"]


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% (``z=1.96``) Wilson score interval of a success rate; good at rates near 0 or 1."""
    if trials <= 0:
        return (0.0, 1.0)
    rate = successes / trials
    denom = 1 + z * z / trials
    centre = (rate + z * z / (2 * trials)) / denom
    half = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / denom
    # min/max with the rate: at 0 or 1 successes the bounds equal it up to float rounding.
    return (max(0.0, min(rate, centre - half)), min(1.0, max(rate, centre + half)))
