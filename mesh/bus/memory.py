"""In-memory Bus: the same contract as Kafka, inside one process.

A product, not a test hack: partitions keyed by hash, consumer groups that split partitions among
members and rebalance when members come and go, committed offsets per group, and redelivery of
everything after the committed offset. The contract suite in tests/ runs against it and against
Kafka.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mesh.bus._dead_letters import DeadLetterClaims, InMemoryDeadLetterClaims, publish_dead_letter
from mesh.bus._decode import Signer, decode_record, encode_for_publish
from mesh.bus._offsets import OffsetTracker
from mesh.bus.base import (
    Delivery,
    RebalanceListener,
    SubscriptionOptions,
    TopicPartition,
)
from mesh.errors import BusError
from protocols import DeadLetter, Envelope, EnvelopeCodec, Topics

__all__ = ["InMemoryBroker", "InMemoryBus", "InMemorySubscription"]


@dataclass(slots=True)
class _Record:
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int


@dataclass(slots=True)
class _Group:
    members: list[InMemorySubscription] = field(default_factory=list)
    committed: dict[TopicPartition, int] = field(default_factory=dict)


class InMemoryBroker:
    """Topics, partitions and consumer groups shared by every InMemoryBus that points at it."""

    def __init__(self, *, default_partitions: int = 6) -> None:
        """Create an empty broker; topics are created on first use with ``default_partitions``."""
        self.default_partitions = default_partitions
        self._logs: dict[str, list[list[_Record]]] = {}
        self._groups: dict[str, _Group] = {}
        self._changed = asyncio.Event()
        self.dead_letters: DeadLetterClaims = InMemoryDeadLetterClaims()
        """Which consumer dead-letters a bad record: the twin of ``RedisDeadLetterClaims``."""

    def create_topic(self, topic: str, partitions: int | None = None) -> None:
        """Create a topic if it does not exist."""
        if topic not in self._logs:
            self._logs[topic] = [[] for _ in range(partitions or self.default_partitions)]

    def partitions(self, topic: str) -> int:
        """Number of partitions of a topic (creating it if needed)."""
        self.create_topic(topic)
        return len(self._logs[topic])

    def append(self, topic: str, record: _Record) -> tuple[int, int]:
        """Append a record; return (partition, offset)."""
        self.create_topic(topic)
        parts = self._logs[topic]
        if record.key is None:
            partition = int(time.monotonic_ns()) % len(parts)
        else:
            partition = zlib.crc32(record.key) % len(parts)
        parts[partition].append(record)
        self._wake()
        return partition, len(parts[partition]) - 1

    def read(self, tp: TopicPartition, offset: int, limit: int) -> list[_Record]:
        """Records of one partition from ``offset``."""
        return self._logs[tp[0]][tp[1]][offset : offset + limit]

    def end_offset(self, tp: TopicPartition) -> int:
        """Offset the next record of a partition will get."""
        return len(self._logs[tp[0]][tp[1]])

    def committed(self, group: str, tp: TopicPartition) -> int | None:
        """Committed position of a group on a partition."""
        return self._groups.setdefault(group, _Group()).committed.get(tp)

    def commit(self, group: str, tp: TopicPartition, position: int) -> None:
        """Store a group's position."""
        self._groups.setdefault(group, _Group()).committed[tp] = position

    def join(self, group: str, member: InMemorySubscription) -> None:
        """Add a member and rebalance."""
        self._groups.setdefault(group, _Group()).members.append(member)
        self._rebalance(group)

    def leave(self, group: str, member: InMemorySubscription) -> None:
        """Remove a member and rebalance."""
        g = self._groups.get(group)
        if g and member in g.members:
            g.members.remove(member)
            self._rebalance(group)

    def _rebalance(self, group: str) -> None:
        g = self._groups[group]
        if not g.members:
            return
        topics = sorted({t for m in g.members for t in m.topics})
        all_tps = [(t, p) for t in topics for p in range(self.partitions(t))]
        plan: dict[int, set[TopicPartition]] = {id(m): set() for m in g.members}
        members = itertools.cycle(g.members)
        for tp in all_tps:
            # Round-robin over members that subscribe to the topic.
            for _ in range(len(g.members)):
                m = next(members)
                if tp[0] in m.topics:
                    plan[id(m)].add(tp)
                    break
        for m in g.members:
            m._target = plan[id(m)]
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_change(self, timeout_s: float) -> None:
        """Sleep until something is appended or a group changes, or the timeout passes."""
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            pass


class InMemoryBus:
    """A Bus over an InMemoryBroker."""

    def __init__(
        self,
        broker: InMemoryBroker | None = None,
        *,
        codec: EnvelopeCodec | None = None,
        topics: Topics | None = None,
        client_id: str = "mesh",
        signer: Signer | None = None,
    ) -> None:
        """Create a client; several buses sharing one broker behave like processes on one cluster."""
        self.broker = broker if broker is not None else InMemoryBroker()
        self.codec = codec if codec is not None else EnvelopeCodec()
        self.topics = topics if topics is not None else Topics()
        self.client_id = client_id
        self._signer = signer
        self.dead_letters: DeadLetterClaims | None = self.broker.dead_letters
        self._closed = False
        self._subs: list[InMemorySubscription] = []

    async def start(self) -> None:
        """Nothing to connect; present so both buses have the same lifecycle."""

    async def ensure_topics(self, topics: Sequence[str], *, partitions: int | None = None) -> None:
        """Create topics that do not exist."""
        for t in topics:
            self.broker.create_topic(t, partitions)

    async def publish(
        self,
        topic: str,
        envelope: Envelope,
        *,
        key: str | None = None,
        headers: Mapping[str, bytes] | None = None,
    ) -> None:
        """Append an envelope to a topic."""
        value, key, all_headers = encode_for_publish(self.codec, self._signer, envelope, key=key, headers=headers)
        await self.publish_raw(topic, value, key=key, headers=all_headers)

    async def publish_raw(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: str | bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Append raw bytes (bridges, tests of malformed input)."""
        if self._closed:
            raise BusError("bus is closed")
        k = key.encode() if isinstance(key, str) else key
        self.broker.append(topic, _Record(k, value, tuple(headers), int(time.time() * 1000)))
        await asyncio.sleep(0)

    async def subscribe(
        self,
        topics: Sequence[str],
        *,
        group: str,
        member: str = "",
        listener: RebalanceListener | None = None,
        options: SubscriptionOptions | None = None,
    ) -> InMemorySubscription:
        """Join a consumer group."""
        sub = InMemorySubscription(self, list(topics), group, member or self.client_id, listener, options or SubscriptionOptions())
        self.broker.join(group, sub)
        self._subs.append(sub)
        return sub

    async def aclose(self) -> None:
        """Close every subscription of this client."""
        for sub in list(self._subs):
            await sub.aclose()
        self._closed = True


class InMemorySubscription:
    """A consumer-group member of the in-memory broker."""

    def __init__(
        self,
        bus: InMemoryBus,
        topics: list[str],
        group: str,
        member: str,
        listener: RebalanceListener | None,
        options: SubscriptionOptions,
    ) -> None:
        self._bus = bus
        self.topics = topics
        self.group = group
        self.member = member
        self._listener = listener
        self._options = options
        self._owned: set[TopicPartition] = set()
        self._target: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        self._tracker = OffsetTracker()
        self._closed = False

    def assignment(self) -> set[TopicPartition]:
        """Partitions owned now."""
        return set(self._owned)

    async def _apply_rebalance(self) -> None:
        if self._target == self._owned:
            return
        lost = self._owned - self._target
        gained = self._target - self._owned
        if lost:
            if self._listener is not None:
                await self._listener.on_revoked(lost)
            self._tracker.forget(lost)
            for tp in lost:
                self._positions.pop(tp, None)
        self._owned = set(self._target)
        broker = self._bus.broker
        for tp in gained:
            committed = broker.committed(self.group, tp)
            if committed is None:
                committed = 0 if self._options.from_beginning else broker.end_offset(tp)
            self._positions[tp] = committed
        if gained and self._listener is not None:
            await self._listener.on_assigned(gained)

    async def poll(self, *, timeout_ms: int = 1000) -> list[Delivery]:
        """Deliver new messages of owned partitions, waiting up to ``timeout_ms``."""
        if self._closed:
            raise BusError("subscription is closed")
        deadline = time.monotonic() + timeout_ms / 1000
        broker = self._bus.broker
        while True:
            await self._apply_rebalance()
            out: list[Delivery] = []
            budget = self._options.max_poll_records
            for tp in sorted(self._owned):
                if budget <= 0:
                    break
                pos = self._positions[tp]
                records = broker.read(tp, pos, budget)
                fetched_at = time.monotonic()
                for i, rec in enumerate(records):
                    offset = pos + i
                    result = await decode_record(
                        self._bus.codec,
                        (tp[0], tp[1], offset, rec.key, rec.value, rec.headers, rec.timestamp_ms),
                        guard=self._options.guard,
                        consumer=self.member,
                        fetched_at=fetched_at,
                    )
                    if isinstance(result, DeadLetter):
                        self._tracker.skipped(tp, offset)
                        await self._dead_letter(result)
                    else:
                        if self._options.commits:
                            self._tracker.delivered(tp, offset)
                        out.append(result)
                self._positions[tp] = pos + len(records)
                budget -= len(records)
                self._commit_if_possible(tp)
            if out:
                return out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            await broker.wait_for_change(remaining)

    async def _dead_letter(self, letter: DeadLetter) -> None:
        if not self._options.dead_letter:
            return
        await publish_dead_letter(self._bus, letter, sender=self.member, claims=self._bus.dead_letters)

    def _commit_if_possible(self, tp: TopicPartition) -> bool:
        position = self._tracker.committable(tp)
        if position is None:
            return True
        if tp not in self._owned:
            return False
        self._bus.broker.commit(self.group, tp, position)
        self._tracker.mark_committed(tp, position)
        return True

    async def commit(self, delivery: Delivery) -> bool:
        """Mark done; False when the partition is no longer owned (another member will redeliver)."""
        self._tracker.done(delivery.tp, delivery.offset)
        if delivery.tp not in self._owned:
            return False
        return self._commit_if_possible(delivery.tp)

    async def aclose(self) -> None:
        """Leave the group."""
        if self._closed:
            return
        self._closed = True
        self._bus.broker.leave(self.group, self)
        if self._bus._subs and self in self._bus._subs:
            self._bus._subs.remove(self)
