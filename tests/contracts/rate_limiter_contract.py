"""The RateLimiter contract (subclass and provide ``make_limiter``: keyword options -> a new limiter).

Times are real: a window of ``WINDOW_S``; "at once" is well under it, so a loaded machine does not
fail these, and a wait is measured on the limiter's own clock (``granted_at_ms``) from the grant
it waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from mesh.store import RateLimiter, RateTicket

WINDOW_S = 1.0
"""The sliding window of every limiter here, in seconds."""

AT_ONCE_S = 0.5
"""A grant that waited less than this did not wait for the window."""

WINDOW_MS = int(WINDOW_S * 1000) - 5
"""A grant that waited for an earlier one to leave the window is at least this many ms after it."""

MakeLimiter = Callable[..., RateLimiter]


class RateLimiterContract:
    """Behaviour every RateLimiter must show: requests and tokens per sliding window, settling, holds."""

    async def test_requests_beyond_rpm_wait_for_the_oldest_to_leave_the_window(
        self, make_limiter: MakeLimiter
    ) -> None:
        limiter = make_limiter(rpm=3, window_s=WINDOW_S)
        first = [await limiter.acquire(10) for _ in range(3)]
        assert all(t.waited_s < AT_ONCE_S for t in first), first
        fourth = await limiter.acquire(10)
        assert fourth.granted_at_ms - first[0].granted_at_ms >= WINDOW_MS, (first, fourth)
        assert fourth.waited_s < WINDOW_S + AT_ONCE_S

    async def test_tokens_beyond_tpm_wait_for_room(self, make_limiter: MakeLimiter) -> None:
        limiter = make_limiter(tpm=100, window_s=WINDOW_S)
        a = await limiter.acquire(60)
        b = await limiter.acquire(30)  # 90 of 100: fits
        assert a.waited_s < AT_ONCE_S and b.waited_s < AT_ONCE_S
        assert (a.tokens, b.tokens) == (60, 30)
        c = await limiter.acquire(20)  # 110 of 100: waits for a to leave
        assert c.granted_at_ms - a.granted_at_ms >= WINDOW_MS, (a, c)

    async def test_settling_replaces_the_estimate(self, make_limiter: MakeLimiter) -> None:
        limiter = make_limiter(tpm=100, window_s=WINDOW_S)
        estimated = await limiter.acquire(90)
        await limiter.settle(estimated, 10)  # the provider counted 10
        fits = await limiter.acquire(80)  # 10 + 80: fits only because of the settlement
        assert fits.waited_s < AT_ONCE_S
        await limiter.settle(fits, 95)  # and 95 for this one: 105 in the window now
        late = await limiter.acquire(1)
        assert late.granted_at_ms - estimated.granted_at_ms >= WINDOW_MS, (estimated, late)

    async def test_a_call_larger_than_tpm_goes_alone(self, make_limiter: MakeLimiter) -> None:
        limiter = make_limiter(tpm=100, window_s=WINDOW_S)
        big = await limiter.acquire(500)
        assert big.tokens == 100 and big.waited_s < AT_ONCE_S
        after = await limiter.acquire(1)
        assert after.granted_at_ms - big.granted_at_ms >= WINDOW_MS, (big, after)

    async def test_concurrent_callers_never_overshoot(self, make_limiter: MakeLimiter) -> None:
        limiter = make_limiter(rpm=4, window_s=WINDOW_S)
        tickets = await asyncio.gather(*(limiter.acquire(1) for _ in range(6)))
        grants = sorted(t.granted_at_ms for t in tickets)
        # 4 per window: any 5 consecutive grants span a full window.
        assert grants[4] - grants[0] >= WINDOW_MS and grants[5] - grants[1] >= WINDOW_MS, grants
        assert sum(t.waited_s < AT_ONCE_S for t in tickets) == 4

    async def test_a_hold_stops_every_caller_until_it_ends(self, make_limiter: MakeLimiter) -> None:
        limiter = make_limiter(window_s=WINDOW_S)  # no rpm, no tpm: only the hold paces
        await limiter.hold(0.6)
        await limiter.hold(0.1)  # a shorter hold does not cut a longer one short
        await limiter.hold(0)  # nothing
        tickets = await asyncio.gather(*(limiter.acquire(1) for _ in range(3)))
        assert all(0.5 <= t.waited_s < 0.6 + AT_ONCE_S for t in tickets), tickets
        after = await limiter.acquire(1)
        assert after.waited_s < AT_ONCE_S

    async def test_without_limits_nobody_waits(self, make_limiter: MakeLimiter) -> None:
        limiter = make_limiter(window_s=WINDOW_S)
        tickets = [await limiter.acquire(10_000) for _ in range(50)]
        assert sum(t.waited_s for t in tickets) < AT_ONCE_S
        assert all(t.tokens == 10_000 for t in tickets)

    async def test_settling_what_was_never_recorded_is_harmless(
        self, make_limiter: MakeLimiter
    ) -> None:
        limiter = make_limiter(tpm=100, window_s=WINDOW_S)
        await limiter.settle(RateTicket("", 5, 0.0), 10)  # a ticket of a limiter that was away
        assert (await limiter.acquire(100)).waited_s < AT_ONCE_S
        assert isinstance(limiter, RateLimiter)

    def test_nonsense_limits_are_refused(self, make_limiter: MakeLimiter) -> None:
        for bad in ({"rpm": -1}, {"tpm": -1}, {"window_s": 0.0}):
            with pytest.raises(ValueError):
                make_limiter(**bad)
