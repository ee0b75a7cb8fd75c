"""The Bus seam: publish envelopes, consume them as a member of a consumer group, commit.

Why a boundary here: the runtime must not know it talks to Kafka. Everything it needs from a log
(ordered partitions keyed by workflow id, consumer groups that split partitions among members,
offsets committed only after effects are durable) fits in three calls, so the runtime is
testable against the in-memory bus and runs unchanged against a real broker. aiokafka errors
never cross this boundary: they become ``mesh.errors.BusError`` subclasses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from mesh.errors import EnvelopeRejected
from protocols import Envelope

__all__ = [
    "Bus",
    "Delivery",
    "EnvelopeGuard",
    "EnvelopeRejected",
    "RebalanceListener",
    "Subscription",
    "SubscriptionOptions",
    "TopicPartition",
    "record_fetched_at",
]

TopicPartition = tuple[str, int]
"""A (topic, partition) pair."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One consumed message: where it came from and its decoded envelope."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    envelope: Envelope
    timestamp_ms: int = 0

    @property
    def tp(self) -> TopicPartition:
        """The (topic, partition) it came from."""
        return (self.topic, self.partition)

    def header(self, name: str) -> bytes | None:
        """The last value of a header, or None."""
        for key, value in reversed(self.headers):
            if key == name:
                return value
        return None


EnvelopeGuard = Callable[[Envelope], object]
"""Called on every decoded envelope before it is delivered (sync, or async when it returns an
awaitable); raises ``EnvelopeRejected`` (``mesh.errors``; or any ``DecodeError`` with a ``reason``) to
refuse it: signature checks, replay windows, quarantined senders. Calls are sequential per
subscription, in delivery order. During a call, ``record_fetched_at()`` says when the record was
fetched."""

_FETCHED_AT: ContextVar[float | None] = ContextVar("mesh_bus_record_fetched_at", default=None)


def record_fetched_at() -> float | None:
    """When the record a guard is vetting was fetched from the broker (``time.monotonic()``).

    None outside a guard call. A guard that consults an eventually consistent view (the keyring
    in Redis) uses it to tell whether its view predates the record: a view read after the fetch
    holds everything its sender published before sending it, so looking again cannot help.
    """
    return _FETCHED_AT.get()


class RebalanceListener(Protocol):
    """Told when this member's partitions change.

    Ordering and concurrency: both callbacks are awaited from inside ``Subscription.poll``, one at a
    time, never concurrently with a poll of the same subscription. ``on_revoked`` runs before the
    partitions go to another member (commit what is durable there); ``on_assigned`` runs after
    the new assignment is known and before any message of it is delivered.
    """

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """Partitions this member is about to lose."""

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        """Partitions this member now owns."""


@dataclass(frozen=True, slots=True)
class SubscriptionOptions:
    """How a consumer-group member behaves."""

    from_beginning: bool = True
    """With no committed offset, start at the earliest message (else the latest)."""

    session_timeout_ms: int = 6000
    """A member silent this long is evicted and its partitions reassigned (Kafka's default is 45000)."""

    heartbeat_interval_ms: int = 1000
    """How often a member tells the coordinator it is alive; about a third of the session timeout."""

    max_poll_interval_ms: int = 60000
    """Longest allowed gap between polls before the member is considered stuck."""

    max_poll_records: int = 500
    """Largest batch one poll returns."""

    guard: EnvelopeGuard | None = field(default=None, compare=False)
    """Check run on each decoded envelope before delivery; refusals are dead-lettered."""

    dead_letter: bool = True
    """Send undecodable or refused messages to the dead-letter topic (else only log and skip)."""

    group_instance_id: str = ""
    """A stable member identity (static membership, KIP-345), e.g. the pod name: a member that
    restarts within the session timeout gets its partitions back without a rebalance of the whole
    group. Empty: a dynamic member (it leaves the group on close; its partitions move at once)."""

    commits: bool = True
    """The member commits what it handled (``Subscription.commit``). False for a reader that never
    does (gossip: it starts at the latest message each time): nothing is tracked per delivery for
    it, so its memory does not grow with every message it reads."""


@runtime_checkable
class Subscription(Protocol):
    """A consumer-group member over some topics.

    Delivery is at-least-once: a message is redelivered after a crash or rebalance unless its
    offset was committed. ``commit`` may be called out of order; the committed position of a
    partition only advances past messages that were all committed (or dead-lettered).
    """

    async def poll(self, *, timeout_ms: int = 1000) -> list[Delivery]:
        """Wait up to ``timeout_ms`` for messages; undecodable ones are dead-lettered, not returned."""
        ...

    async def commit(self, delivery: Delivery) -> bool:
        """Mark a delivery as done; its partition's committed offset advances when it can.

        Returns False when the partition moved to another member meanwhile (it will redeliver).
        """
        ...

    def assignment(self) -> set[TopicPartition]:
        """The partitions this member owns right now."""
        ...

    async def aclose(self) -> None:
        """Leave the group (partitions go to other members at once) and release resources."""
        ...


@runtime_checkable
class Bus(Protocol):
    """A partitioned, replayable message log with consumer groups."""

    async def publish(
        self,
        topic: str,
        envelope: Envelope,
        *,
        key: str | None = None,
        headers: Mapping[str, bytes] | None = None,
    ) -> None:
        """Append an envelope durably (acks=all); ``key`` defaults to its workflow id."""
        ...

    async def subscribe(
        self,
        topics: Sequence[str],
        *,
        group: str,
        member: str = "",
        listener: RebalanceListener | None = None,
        options: SubscriptionOptions | None = None,
    ) -> Subscription:
        """Join consumer group ``group`` over ``topics`` and return the started member."""
        ...

    async def aclose(self) -> None:
        """Flush pending publishes and release connections."""
        ...
