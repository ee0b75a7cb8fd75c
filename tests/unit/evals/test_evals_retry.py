"""The p^k retry measurement: the Wilson interval and a small run through the real retry layer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.evals import run_retry_eval, wilson_interval


@given(counts=st.integers(1, 10_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_holds_the_rate_and_stays_in_0_1(counts: tuple[int, int]) -> None:
    successes, trials = counts
    low, high = wilson_interval(successes, trials)
    assert 0.0 <= low <= successes / trials <= high <= 1.0


def test_wilson_interval_narrows_with_trials() -> None:
    small, large = wilson_interval(36, 100), wilson_interval(3600, 10_000)
    assert large[1] - large[0] < small[1] - small[0]


async def test_retries_turn_p_into_p_to_the_k() -> None:
    # p = 0.3 over 5 steps: (0.7)^5 = 16.8% without retry, (1 - 0.027)^5 = 87.2% with k = 3.
    once, thrice = await run_retry_eval(p=0.3, steps=5, attempts=(1, 3), trials=60, seed=1)
    assert once.predicted == pytest.approx(0.7**5) and thrice.predicted == pytest.approx(
        (1 - 0.3**3) ** 5
    )
    for result in (once, thrice):
        low, high = result.interval
        assert low - 0.1 <= result.predicted <= high + 0.1, result
    assert thrice.rate > once.rate + 0.4
    assert thrice.calls > 60 * 5  # the retries really went over HTTP


async def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="0 <= p < 1"):
        await run_retry_eval(p=1.0)
