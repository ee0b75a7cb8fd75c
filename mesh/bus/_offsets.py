"""Commit-position bookkeeping shared by every Bus implementation."""

from __future__ import annotations

import heapq

from mesh.bus.base import TopicPartition

__all__ = ["OffsetTracker"]


class OffsetTracker:
    """Tracks delivered-but-unfinished offsets per partition and the position safe to commit.

    The safe position of a partition is the lowest offset still in flight, or one past the
    highest offset seen when nothing is in flight. Committing it never skips an unfinished
    message, even when messages finish out of order.
    """

    def __init__(self) -> None:
        self._in_flight: dict[TopicPartition, set[int]] = {}
        self._heaps: dict[TopicPartition, list[int]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def delivered(self, tp: TopicPartition, offset: int) -> None:
        """A message was handed to the application."""
        self._in_flight.setdefault(tp, set()).add(offset)
        heapq.heappush(self._heaps.setdefault(tp, []), offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def skipped(self, tp: TopicPartition, offset: int) -> None:
        """A message was consumed without delivery (dead-lettered); it needs no commit."""
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def done(self, tp: TopicPartition, offset: int) -> None:
        """The application finished a message."""
        self._in_flight.get(tp, set()).discard(offset)

    def committable(self, tp: TopicPartition) -> int | None:
        """The position to commit now, or None if it would not move forward."""
        flight = self._in_flight.get(tp, set())
        heap = self._heaps.get(tp, [])
        while heap and heap[0] not in flight:
            heapq.heappop(heap)
        position = heap[0] if heap else self._next.get(tp)
        if position is None or position <= self._committed.get(tp, -1):
            return None
        return position

    def mark_committed(self, tp: TopicPartition, position: int) -> None:
        """Record a successful commit."""
        self._committed[tp] = max(self._committed.get(tp, -1), position)

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop state of partitions this member lost."""
        for tp in partitions:
            self._in_flight.pop(tp, None)
            self._heaps.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)
