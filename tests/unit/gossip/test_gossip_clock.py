"""The hybrid logical clock: monotonic under skew and jumps back, causal, drift-bounded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.gossip import ClockDriftError, HybridLogicalClock
from protocols import HlcTimestamp


class FakeWall:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_now_follows_the_wall_clock_and_counts_within_a_millisecond():
    wall = FakeWall(1000)
    clock = HybridLogicalClock(wall_ms=wall)
    assert clock.now() == HlcTimestamp(1000, 0)
    assert clock.now() == HlcTimestamp(1000, 1)
    wall.ms = 1005
    assert clock.now() == HlcTimestamp(1005, 0)


def test_wall_clock_jumping_back_never_moves_the_clock_back():
    wall = FakeWall(5000)
    clock = HybridLogicalClock(wall_ms=wall)
    before = clock.now()
    wall.ms = 1000
    after = [clock.now() for _ in range(3)]
    assert after == [HlcTimestamp(5000, 1), HlcTimestamp(5000, 2), HlcTimestamp(5000, 3)]
    assert before < after[0]


def test_update_orders_receive_after_send_and_after_local_events():
    wall = FakeWall(1000)
    clock = HybridLogicalClock(wall_ms=wall)
    clock.now()
    received = clock.update(HlcTimestamp(1010, 7))
    assert received == HlcTimestamp(1010, 8)
    assert clock.update(HlcTimestamp(1010, 2)) == HlcTimestamp(1010, 9)
    assert clock.update(HlcTimestamp(900, 50)) == HlcTimestamp(1010, 10)
    wall.ms = 2000
    assert clock.update(HlcTimestamp(1500, 3)) == HlcTimestamp(2000, 0)


def test_update_rejects_remote_timestamps_too_far_in_the_future_and_stays_put():
    clock = HybridLogicalClock(wall_ms=FakeWall(1000), max_drift_ms=100)
    clock.now()
    clock.update(HlcTimestamp(1100, 0))  # exactly at the bound is fine
    last = clock.last
    with pytest.raises(ClockDriftError) as info:
        clock.update(HlcTimestamp(1101 + 100, 0))
    assert info.value.drift_ms == 201
    assert "over the allowed drift of 100 ms" in str(info.value)
    assert clock.last == last


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["tick", "jump", "send", "recv"]),
            st.integers(min_value=-10_000, max_value=10_000),
            st.integers(min_value=0, max_value=5),
        ),
        min_size=1,
        max_size=60,
    ),
    skew_ms=st.integers(min_value=-5_000, max_value=5_000),
)
def test_two_skewed_clocks_stay_monotonic_and_causal(events, skew_ms):
    wall_a, wall_b = FakeWall(1_000_000), FakeWall(1_000_000 + skew_ms)
    a = HybridLogicalClock(wall_ms=wall_a, max_drift_ms=10**9)
    b = HybridLogicalClock(wall_ms=wall_b, max_drift_ms=10**9)
    last_a, last_b = a.now(), b.now()
    for op, amount, logical in events:
        if op == "tick":
            wall_a.ms += abs(amount)
            wall_b.ms += abs(amount)
        elif op == "jump":  # NTP steps the wall clock of b, possibly backwards
            wall_b.ms = max(0, wall_b.ms + amount)
        if op == "send":
            sent = a.now()
            received = b.update(sent)
            assert received > sent  # causality: a receive orders after its send
        elif op == "recv":
            remote = HlcTimestamp(max(0, wall_a.ms + amount), logical)
            received = a.update(remote)
            assert received > remote
        now_a, now_b = a.now(), b.now()
        assert now_a > last_a and now_b > last_b
        last_a, last_b = now_a, now_b
    # The physical part never runs ahead of the largest wall reading seen anywhere.
    assert a.last.wall_ms <= max(wall_a.ms, wall_b.ms, last_a.wall_ms)
