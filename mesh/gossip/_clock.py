"""The hybrid logical clock (Kulkarni et al., 2014): physical time plus a logical counter."""

from __future__ import annotations

import time
from collections.abc import Callable

from mesh.errors import PermanentError
from protocols.hlc import HlcTimestamp

__all__ = ["ClockDriftError", "HybridLogicalClock", "wall_clock_ms"]


def wall_clock_ms() -> int:
    """The local wall clock in Unix milliseconds."""
    return time.time_ns() // 1_000_000


class ClockDriftError(PermanentError):
    """A remote timestamp is further ahead of the local wall clock than the allowed drift.

    Accepting it would drag every later local timestamp into the future, so the message carrying
    it is refused instead (a peer with a broken clock, or a forged timestamp).
    """

    def __init__(self, remote: HlcTimestamp, local_wall_ms: int, max_drift_ms: int) -> None:
        drift_ms = remote.wall_ms - local_wall_ms
        super().__init__(
            f"remote HLC {remote} is {drift_ms} ms ahead of the local wall clock "
            f"({local_wall_ms}), over the allowed drift of {max_drift_ms} ms"
        )
        self.remote = remote
        self.drift_ms = drift_ms
        self.max_drift_ms = max_drift_ms


class HybridLogicalClock:
    """Timestamps that follow the wall clock yet never go backwards and respect causality.

    ``now()`` stamps a local event or a send; ``update(remote)`` stamps a receive. Readings are
    strictly increasing even when the wall clock jumps back: the logical counter takes over until
    the wall clock catches up. Not thread-safe (one per event loop).
    """

    def __init__(self, *, wall_ms: Callable[[], int] = wall_clock_ms, max_drift_ms: int = 60_000) -> None:
        """Use ``wall_ms`` as the physical clock; refuse remote readings over ``max_drift_ms`` ahead."""
        self._wall_ms = wall_ms
        self.max_drift_ms = max_drift_ms
        self._last = HlcTimestamp(0, 0)

    @property
    def last(self) -> HlcTimestamp:
        """The latest reading handed out (or observed)."""
        return self._last

    def now(self) -> HlcTimestamp:
        """A new timestamp for a local event, greater than every earlier one."""
        physical = self._wall_ms()
        last = self._last
        if physical > last.wall_ms:
            self._last = HlcTimestamp(physical, 0)
        else:
            self._last = HlcTimestamp(last.wall_ms, last.logical + 1)
        return self._last

    def update(self, remote: HlcTimestamp) -> HlcTimestamp:
        """A new timestamp for receiving ``remote``: greater than it and than every earlier reading.

        Raises ``ClockDriftError`` (and leaves the clock untouched) when ``remote`` is more than
        ``max_drift_ms`` ahead of the local wall clock.
        """
        physical = self._wall_ms()
        if remote.wall_ms - physical > self.max_drift_ms:
            raise ClockDriftError(remote, physical, self.max_drift_ms)
        return self._merge(remote, physical)

    def observe(self, remote: HlcTimestamp) -> HlcTimestamp:
        """Like ``update`` without the drift check, for timestamps already vetted by the caller."""
        return self._merge(remote, self._wall_ms())

    def _merge(self, remote: HlcTimestamp, physical: int) -> HlcTimestamp:
        last = self._last
        wall = max(last.wall_ms, remote.wall_ms, physical)
        if wall == last.wall_ms and wall == remote.wall_ms:
            logical = max(last.logical, remote.logical) + 1
        elif wall == last.wall_ms:
            logical = last.logical + 1
        elif wall == remote.wall_ms:
            logical = remote.logical + 1
        else:
            logical = 0
        self._last = HlcTimestamp(wall, logical)
        return self._last

    def __repr__(self) -> str:
        return f"HybridLogicalClock(last={self._last}, max_drift_ms={self.max_drift_ms})"
