"""Kafka Bus on aiokafka: idempotent producer with acks=all, manual commits, topics created at start.

aiokafka exceptions are translated here (``_translate``) and never leak to the runtime.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
)
from aiokafka.structs import TopicPartition as KafkaTP

from mesh.bus._dead_letters import DeadLetterClaims, publish_dead_letter
from mesh.bus._decode import Signer, decode_record, encode_for_publish
from mesh.bus._offsets import OffsetTracker
from mesh.bus._outage import OutageLog, outage_log
from mesh.bus._security import KafkaSecurity
from mesh.bus.base import (
    Delivery,
    RebalanceListener,
    SubscriptionOptions,
    TopicPartition,
)
from mesh.errors import BusError, BusUnavailable
from protocols import DeadLetter, Envelope, EnvelopeCodec, Topics

__all__ = ["KafkaBus", "KafkaSubscription"]

log = logging.getLogger("mesh.bus.kafka")

T = TypeVar("T")

_POLL_GRACE_S = 2.0
"""How long past its own timeout a poll may wait (for a rebalance) before it returns nothing."""

_COMMIT_TIMEOUT_S = 5.0
"""Longest wait for an offset commit."""

_CLOSE_TIMEOUT_S = 5.0
"""Longest wait for a Kafka client to close (a broker outage must not hold a SIGTERM'd agent)."""


class _RetryableBusError(BusError):
    retryable = True


def _translate(exc: BaseException, what: str) -> BusError:
    """Map an aiokafka error to the project's own types; retryability follows Kafka's flag."""
    if isinstance(exc, KafkaConnectionError | KafkaTimeoutError | asyncio.TimeoutError | OSError):
        return BusUnavailable(f"{what}: broker unreachable or slow: {type(exc).__name__}: {exc}")
    if isinstance(exc, KafkaError) and getattr(exc, "retriable", False):
        return _RetryableBusError(f"{what}: {type(exc).__name__}: {exc}")
    return BusError(f"{what}: {type(exc).__name__}: {exc}")


async def _bounded(call: Awaitable[T], timeout_s: float) -> T:
    """``call``'s result, or TimeoutError after ``timeout_s`` without waiting for it to unwind:
    aiokafka's close and commit may swallow a cancellation and keep retrying (``wait_for`` would
    then wait for them anyway); the task is cancelled and left behind."""
    task = asyncio.ensure_future(call)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        task.cancel()
        raise TimeoutError
    return task.result()


async def _guarded(what: str, call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except (TimeoutError, KafkaError, OSError) as exc:
        raise _translate(exc, what) from exc


async def _connecting(what: str, call: Callable[[], Awaitable[T]], bus: KafkaBus) -> T:
    """``_guarded`` for the first connection of a client: a failure names its cause."""
    try:
        return await call()
    except KafkaConnectionError as exc:
        cause = await bus.security.diagnose(bus.bootstrap_servers)
        if cause is None:
            raise _translate(exc, what) from exc
        if bus.security.security_protocol == "PLAINTEXT" or "no answer" in cause:
            raise BusUnavailable(f"{what}: {bus.bootstrap_servers} ({bus.security.describe()}): {cause}") from exc
        # Credentials and certificates do not fix themselves: not retryable.
        raise BusError(f"{what}: {bus.bootstrap_servers} ({bus.security.describe()}): {cause}") from exc
    except (TimeoutError, KafkaError, OSError) as exc:
        raise _translate(exc, what) from exc


class KafkaBus:
    """A Bus over a Kafka cluster."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        codec: EnvelopeCodec | None = None,
        topics: Topics | None = None,
        client_id: str = "mesh",
        partitions: int = 6,
        replication_factor: int | None = None,
        min_insync_replicas: int | None = None,
        create_topics: Sequence[str] | None = None,
        signer: Signer | None = None,
        linger_ms: int = 0,
        request_timeout_ms: int = 30000,
        security: KafkaSecurity | None = None,
        dead_letters: DeadLetterClaims | None = None,
    ) -> None:
        """Configure the client; ``start`` connects and creates topics (all of ``topics`` by default).

        Topics get ``replication_factor`` replicas (default ``min(3, brokers)``, counted when they
        are created) and ``min_insync_replicas`` (default 2 once there are 3 replicas): with the
        producer's acks=all, an acknowledged record survives the loss of any one broker.

        ``security`` (TLS, SASL) applies to every client this bus makes; by default it is read from
        ``MESH_KAFKA_*`` (plaintext when none is set). ``dead_letters`` decides which consumer
        group dead-letters a bad record (one letter per record across groups and processes, e.g.
        ``RedisDeadLetterClaims``); without it every group that refuses a record dead-letters it.
        """
        self.bootstrap_servers = bootstrap_servers
        self.security = security if security is not None else KafkaSecurity.from_env()
        self._client_kwargs = self.security.client_kwargs()
        self.codec = codec if codec is not None else EnvelopeCodec()
        self.topics = topics if topics is not None else Topics()
        self.client_id = client_id
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.min_insync_replicas = min_insync_replicas
        self._create = list(create_topics) if create_topics is not None else list(self.topics.all())
        self._signer = signer
        self._linger_ms = linger_ms
        self._request_timeout_ms = request_timeout_ms
        self.dead_letters = dead_letters
        self.outage: OutageLog = outage_log()
        """The process's Kafka client error flood, aggregated per outage (``tick`` it from a loop)."""
        self._producer: AIOKafkaProducer | None = None
        self._subs: list[KafkaSubscription] = []

    async def __aenter__(self) -> KafkaBus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Connect the producer and create the configured topics."""
        if self._producer is not None:
            return
        await self.ensure_topics(self._create)
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=self._linger_ms,
            max_request_size=max(self.codec.max_bytes + 4096, 1_048_576),
            request_timeout_ms=self._request_timeout_ms,
            **self._client_kwargs,
        )
        try:
            await _connecting("connect producer", producer.start, self)
        except BusError:
            await producer.stop()
            raise
        self._producer = producer

    async def ensure_topics(self, topics: Sequence[str], *, partitions: int | None = None) -> None:
        """Create topics that do not exist yet, so nothing waits on broker auto-creation."""
        if not topics:
            return
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"{self.client_id}-admin",
            request_timeout_ms=self._request_timeout_ms,
            **self._client_kwargs,
        )
        try:
            await _connecting("connect admin client", admin.start, self)
            existing = set(await _guarded("list topics", admin.list_topics))
            missing = [t for t in dict.fromkeys(topics) if t not in existing]
            if missing:
                replicas, topic_configs = await self._replication(admin)
                new = [
                    NewTopic(t, partitions or self.partitions, replicas, topic_configs=topic_configs)
                    for t in missing
                ]
                try:
                    await admin.create_topics(new)
                except TopicAlreadyExistsError:
                    pass  # created concurrently by another agent: fine
                except (KafkaError, OSError) as exc:
                    raise _translate(exc, f"create topics {missing}") from exc
                await self._await_topics(admin, missing)
        finally:
            await admin.close()

    async def _replication(self, admin: AIOKafkaAdminClient) -> tuple[int, dict[str, str]]:
        """Replication factor and topic configs of new topics, defaulted from the cluster's size."""
        replicas = self.replication_factor
        if replicas is None:
            cluster = await _guarded("describe cluster", admin.describe_cluster)
            replicas = min(3, max(1, len(cluster.get("brokers") or ())))
        min_isr = self.min_insync_replicas
        if min_isr is None and replicas >= 3:
            min_isr = 2
        return replicas, ({"min.insync.replicas": str(min_isr)} if min_isr is not None else {})

    async def _await_topics(self, admin: AIOKafkaAdminClient, names: list[str]) -> None:
        # Metadata propagates asynchronously even on one broker; wait until leaders are known.
        for _ in range(100):
            try:
                described = await admin.describe_topics(names)
            except (KafkaError, OSError):
                described = []
            ready = [
                d for d in described
                if d.get("error_code", 1) == 0 and d.get("partitions")
                and all(p.get("leader", -1) >= 0 for p in d["partitions"])
            ]
            if len(ready) == len(names):
                return
            await asyncio.sleep(0.1)
        raise BusUnavailable(f"topics {names} were created but have no leader after 10 s")

    def _require_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise BusError("KafkaBus is not started: call `await bus.start()` or use `async with`")
        return self._producer

    async def publish(
        self,
        topic: str,
        envelope: Envelope,
        *,
        key: str | None = None,
        headers: Mapping[str, bytes] | None = None,
    ) -> None:
        """Append an envelope and wait for acks=all."""
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
        producer = self._require_producer()
        k = key.encode() if isinstance(key, str) else key
        await _guarded(
            f"publish to {topic}",
            lambda: producer.send_and_wait(topic, value, key=k, headers=list(headers)),
        )

    async def subscribe(
        self,
        topics: Sequence[str],
        *,
        group: str,
        member: str = "",
        listener: RebalanceListener | None = None,
        options: SubscriptionOptions | None = None,
    ) -> KafkaSubscription:
        """Join consumer group ``group`` and wait until the first assignment is known."""
        sub = KafkaSubscription(self, list(topics), group, member or self.client_id, listener, options or SubscriptionOptions())
        await sub.start()
        self._subs.append(sub)
        return sub

    async def aclose(self) -> None:
        """Close subscriptions, flush and stop the producer."""
        for sub in list(self._subs):
            await sub.aclose()
        if self._producer is not None:
            producer, self._producer = self._producer, None
            try:
                # Bounded: with the broker down, stop() waits for unsendable batches.
                await _bounded(producer.stop(), _CLOSE_TIMEOUT_S)
            except TimeoutError:
                log.warning("producer stop: broker unreachable; gave up after %.0f s", _CLOSE_TIMEOUT_S)
            except (KafkaError, OSError) as exc:
                log.warning("producer stop failed: %s", exc)


class _ListenerAdapter(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sub: KafkaSubscription) -> None:
        self._sub = sub

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._sub._on_revoked({(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._sub._on_assigned({(tp.topic, tp.partition) for tp in assigned})


class KafkaSubscription:
    """A consumer-group member on Kafka with manual, in-order-safe commits."""

    def __init__(
        self,
        bus: KafkaBus,
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
        self._tracker = OffsetTracker()
        self._owned: set[TopicPartition] = set()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bus.bootstrap_servers,
            group_id=group,
            client_id=member,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if options.from_beginning else "latest",
            session_timeout_ms=options.session_timeout_ms,
            heartbeat_interval_ms=options.heartbeat_interval_ms,
            max_poll_interval_ms=options.max_poll_interval_ms,
            max_poll_records=options.max_poll_records,
            rebalance_timeout_ms=max(options.session_timeout_ms, 10000),
            fetch_max_wait_ms=100,
            metadata_max_age_ms=5000,
            group_instance_id=options.group_instance_id or None,
            **bus._client_kwargs,
        )
        self._closed = False
        self._joined = asyncio.Event()
        self._revocations = 0
        """Times partitions were revoked; a poll that straddles one drops what it read."""

    async def start(self, *, join_timeout_s: float = 30.0) -> None:
        """Connect, subscribe, and wait until the group gave this member its first assignment."""
        try:
            await _connecting("connect consumer", self._consumer.start, self._bus)
            self._consumer.subscribe(self.topics, listener=_ListenerAdapter(self))
        except (BusError, IllegalStateError):
            await self._consumer.stop()
            raise
        # aiokafka joins the group in a background task; waiting here means a caller that says
        # "ready" afterwards is really a member (and will not trigger a rebalance later).
        try:
            await asyncio.wait_for(self._joined.wait(), join_timeout_s)
        except TimeoutError:
            log.warning("%s: no assignment from group %s after %.0f s; continuing", self.member, self.group, join_timeout_s)

    def assignment(self) -> set[TopicPartition]:
        """Partitions owned now."""
        return set(self._owned)

    async def _on_revoked(self, partitions: set[TopicPartition]) -> None:
        # aiokafka calls this from its coordinator task, possibly while ``poll`` is vetting a batch
        # (the guard awaits): that batch belongs to the old assignment and must not be delivered.
        self._revocations += 1
        # Commit what is already done before the partitions move, so the next owner skips it.
        for tp in partitions:
            await self._commit_position(tp)
        if self._listener is not None:
            try:
                await self._listener.on_revoked(partitions)
            except Exception:  # a listener bug must not kill the consumer's coordinator
                log.exception("rebalance listener on_revoked failed")
        self._tracker.forget(partitions)
        self._owned -= partitions

    async def _on_assigned(self, partitions: set[TopicPartition]) -> None:
        self._owned = set(partitions) | self._owned
        self._joined.set()
        if self._listener is not None:
            try:
                await self._listener.on_assigned(partitions)
            except Exception:
                log.exception("rebalance listener on_assigned failed")

    async def poll(self, *, timeout_ms: int = 1000) -> list[Delivery]:
        """Fetch a batch; dead-letter what cannot be decoded or is refused by the guard."""
        if self._closed:
            raise BusError("subscription is closed")
        try:
            # Bounded: during a rebalance aiokafka's getmany waits for the new assignment with no
            # timeout, which with the broker down is forever (and the caller could not stop).
            batches = await _guarded("poll", lambda: asyncio.wait_for(
                self._consumer.getmany(timeout_ms=timeout_ms, max_records=self._options.max_poll_records),
                timeout_ms / 1000 + _POLL_GRACE_S,
            ))
        except BusUnavailable as exc:
            if isinstance(exc.__cause__, TimeoutError):
                return []  # no assignment yet: nothing to deliver, ask again
            raise
        fetched_at = time.monotonic()
        revocations = self._revocations
        out: list[Delivery] = []
        for ktp, records in batches.items():
            tp = (ktp.topic, ktp.partition)
            skipped = False
            for rec in records:
                result = await decode_record(
                    self._bus.codec,
                    (rec.topic, rec.partition, rec.offset, rec.key, rec.value, tuple(rec.headers or ()), rec.timestamp),
                    guard=self._options.guard,
                    consumer=self.member,
                    fetched_at=fetched_at,
                )
                if self._revocations != revocations:
                    # A rebalance ran while this batch was being vetted (the guard awaits): its
                    # records are read again from the committed offset by whoever owns the partition
                    # now. Delivering them would fold a workflow's later events into a view that
                    # lost its start, and commit past it.
                    log.info("%s: dropping a batch read before a rebalance", self.member)
                    return []
                if isinstance(result, DeadLetter):
                    await self._dead_letter(result)
                    if self._revocations != revocations:
                        return []
                    self._tracker.skipped(tp, rec.offset)
                    skipped = True
                else:
                    if self._options.commits:
                        self._tracker.delivered(tp, rec.offset)
                    out.append(result)
            if skipped:
                await self._commit_position(tp)
        return out

    async def _dead_letter(self, letter: DeadLetter) -> None:
        if not self._options.dead_letter:
            return
        await publish_dead_letter(self._bus, letter, sender=self.member, claims=self._bus.dead_letters)

    async def _commit_position(self, tp: TopicPartition) -> bool:
        position = self._tracker.committable(tp)
        if position is None:
            return True
        try:
            # Bounded: with the coordinator unreachable aiokafka retries a commit until it is back.
            # An uncommitted position is committed by a later call; never worth blocking the loop.
            await _bounded(self._consumer.commit({KafkaTP(tp[0], tp[1]): position}), _COMMIT_TIMEOUT_S)
        except TimeoutError:
            log.debug("commit of %s@%d timed out (broker unreachable); later", tp, position)
            return False
        except (CommitFailedError, IllegalStateError) as exc:
            # The partition moved to another member; it will redeliver from the last commit.
            log.info("commit of %s@%d refused (%s); partition moved", tp, position, type(exc).__name__)
            return False
        except (KafkaError, OSError) as exc:
            raise _translate(exc, f"commit {tp[0]}[{tp[1]}]@{position}") from exc
        self._tracker.mark_committed(tp, position)
        return True

    async def commit(self, delivery: Delivery) -> bool:
        """Mark done; False when the partition moved to another member (it will redeliver)."""
        self._tracker.done(delivery.tp, delivery.offset)
        return await self._commit_position(delivery.tp)

    async def aclose(self) -> None:
        """Leave the group promptly so partitions move at once."""
        if self._closed:
            return
        self._closed = True
        try:
            # Bounded: with the broker down, leaving the group waits for a coordinator.
            await _bounded(self._consumer.stop(), _CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning("%s: consumer stop: broker unreachable; gave up after %.0f s", self.member, _CLOSE_TIMEOUT_S)
        except (KafkaError, OSError) as exc:
            log.warning("consumer stop failed: %s", exc)
        if self in self._bus._subs:
            self._bus._subs.remove(self)
