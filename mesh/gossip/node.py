"""One agent's gossip over the bus: throttled, persisted, restored after a crash.

``GossipNode`` wires the pure-logic ``GossipAgent`` to a ``Bus``. It signs and verifies with
what it is given (``sign``, ``verify``: the agent's trust object builds them) and knows nothing
of votes; ``mesh.peer.Peer`` composes it with quorum and trust, routing the votes topic through
the node's one subscription (``route``).

* broadcast: each node is the only member of its own consumer group over the gossip topic (and
  the routed topics), so every node reads every message; it starts at the latest offset (history
  is not replayed: the map comes back from its store and anti-entropy fills the gap);
* every incoming envelope is verified by the subscription's guard before any handler, and a
  refused one is dead-lettered by the bus with its reason (``unsigned``, ``forged``,
  ``replayed``, ``equivocation``) and counted in ``stats``;
* publishing never blocks a write: envelopes go out in the background (at most
  ``max_in_flight`` at once; beyond that, or on a bus error, they are dropped and counted,
  because anti-entropy repairs any loss) so a node cut off from the broker keeps working (AP);
  digests and sync requests are throttled so a healed link does not set off a sync storm;
* each map is saved after it changes (debounced) and every map of the agent is restored on
  ``start``, before the first message is handled.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from mesh.backoff import ExponentialBackoff
from mesh.bus import (
    Bus,
    Delivery,
    Subscription,
    SubscriptionOptions,
    TopicPartition,
    claim_dead_letter,
)
from mesh.bus import EnvelopeRejected as BusEnvelopeRejected
from mesh.errors import BusError, PermanentError, StoreUnavailable, UsageError
from mesh.gossip._agent import GossipAgent, GossipOptions
from mesh.gossip._clock import HybridLogicalClock
from mesh.gossip._entries import VariableEntry
from mesh.gossip._map import ContextMap
from mesh.gossip._persist import ContextMapArchive
from mesh.security import EnvelopeRejected, redact_text
from protocols.envelope import Envelope
from protocols.events import DeadLetter
from protocols.gossip import GossipDelta, GossipDigest, GossipSyncRequest
from protocols.topics import Topics

__all__ = ["GossipNode", "GossipNodeOptions", "Handler", "Sign", "Verify"]

log = logging.getLogger(__name__)

_POLL_BACKOFF = ExponentialBackoff(base_s=0.1, cap_s=2.0, jitter=0.0)
"""Pause after a failed poll: 0.1 s, doubling up to 2 s."""

OnChange = Callable[[str, list[str]], None]
"""Called with a workflow id and the variable names a peer's message changed (same task as handling)."""
Sign = Callable[[Envelope], Envelope]
"""Signs an outgoing envelope (the agent's trust object's signer)."""
Verify = Callable[[Envelope], object]
"""Raises ``mesh.security.EnvelopeRejected`` unless an incoming envelope is authentic (runs in the
bus's poll; what it returns is ignored)."""
Handler = Callable[[Envelope], Awaitable[None]]
"""Handles a verified envelope of a routed topic, on the node's receive task, in log order."""


@dataclass(frozen=True, slots=True)
class GossipNodeOptions:
    """Tuning of one node; the gossip protocol's own knobs are in ``GossipOptions``."""

    persist_debounce_ms: int = 100
    """A changed map is saved at most this long after the change (several changes, one save)."""
    poll_timeout_ms: int = 500
    """Longest wait of one poll; an idle node wakes this often (keep it cheap)."""
    max_in_flight: int = 1000
    """Envelopes being published at once; more are dropped (anti-entropy repairs the loss)."""
    start_timeout_s: float = 30.0
    """How long ``start`` waits for the subscription's first partition assignment."""
    session_timeout_ms: int = 30_000
    """Consumer session timeout: long, so a cut shorter than this keeps the group and resumes at once."""
    group: str = ""
    """Consumer group; default ``<gossip topic>.<agent id>.<random>``: unique per incarnation, so a
    restarted node never waits for its dead predecessor's session to expire."""
    flush_timeout_s: float = 5.0
    """How long ``aclose`` waits for envelopes still being published."""
    sync_fanout: int = 3
    """Expected peers that answer one differing digest with a sync request (0 = every peer).

    Every peer that sees a digest differ would otherwise ask its sender, and each request is a
    broadcast: n^2 messages per stale digest. A few answering peers repair just as well, since
    the digest comes back every period.
    """


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it to end.

    Cancelled again until it ends: on Python 3.11 ``asyncio.wait_for`` (used inside bus polls)
    can swallow a cancellation that races with its inner wait completing.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s had failed", task.get_name(), exc_info=task.exception())


class _Assigned:
    """Rebalance listener that records when the first assignment arrives."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """Nothing to commit: the node never commits (it always starts at the latest offset)."""

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        """Wake ``start``."""
        self.event.set()


class GossipNode:
    """Runs one agent's gossip over a bus (dissemination only: votes and keys are the peer's).

    Concurrency: one task handles incoming envelopes in order (gossip and every routed topic);
    local calls (``set_variable``, ``delete_variable``) run on the caller's task in the same event
    loop (not thread-safe). The bus is the caller's: ``aclose`` closes the node's subscription,
    not the bus.
    """

    def __init__(
        self,
        agent_id: str,
        bus: Bus,
        *,
        sign: Sign,
        verify: Verify,
        topics: Topics | None = None,
        store: ContextMapArchive | None = None,
        gossip_options: GossipOptions | None = None,
        options: GossipNodeOptions | None = None,
        on_change: OnChange | None = None,
        clock: HybridLogicalClock | None = None,
        is_quarantined: Callable[[str], bool] | None = None,
        peer_count: Callable[[], int] | None = None,
    ) -> None:
        """Gossip as ``agent_id`` over ``bus``, signing with ``sign``, admitting what ``verify`` passes.

        ``is_quarantined``: peers whose gossip is ignored (the quorum's verdict); ``peer_count``:
        how many agents there are (sizes the sync fan-out; default: no fan-out limit).
        """
        self.agent_id = agent_id
        self.bus = bus
        self.topics = topics or Topics()
        self.store = store
        self.options = options or GossipNodeOptions()
        self.on_change = on_change
        self.sign = sign
        self._verify = verify
        self._peer_count = peer_count
        self.stats: Counter[str] = Counter()
        """Node-level counts: published, dropped, rejected_<reason>, saves, handler errors..."""
        self.gossip = GossipAgent(
            agent_id,
            self._send_gossip,
            clock=clock,
            options=gossip_options,
            sign=sign,
            is_quarantined=is_quarantined,
        )
        self.group = self.options.group or f"{self.topics.gossip}.{agent_id}.{uuid.uuid4().hex[:8]}"
        self.restored: dict[str, int] = {}
        """Entries restored from the store on start, by workflow id."""
        self._routes: dict[str, Handler] = {}
        self._sub: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._dirty: set[str] = set()
        self._dirty_event = asyncio.Event()
        self._saved_version: dict[str, int] = {}
        self._digest_in_flight: set[str] = set()
        self._last_sync_ms: dict[tuple[str, str], float] = {}
        self._rng = random.Random()
        self._started = False

    def route(self, topic: str, handler: Handler) -> None:
        """Read ``topic`` too, on the same subscription and guard, handing each envelope to ``handler``.

        Call before ``start``. A handler's ``PermanentError`` dead-letters the envelope; any other
        exception is counted and dead-lettered too, and the receive loop goes on.
        """
        if self._started:
            raise UsageError(f"gossip node {self.agent_id}: route {topic!r} before start()")
        if topic == self.topics.gossip:
            raise UsageError(f"gossip node {self.agent_id}: the gossip topic is the node's own")
        self._routes[topic] = handler

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Restore saved maps, join the topics, wait for the assignment, start background work.

        Raises ``BusError`` when the bus cannot be reached. An unreachable store only logs: the
        node starts empty and anti-entropy brings the maps back from its peers.
        """
        if self._started:
            return
        self._started = True
        await self._restore()
        assigned = _Assigned()
        self._sub = await self.bus.subscribe(
            [self.topics.gossip, *self._routes],
            group=self.group,
            member=self.agent_id,
            listener=assigned,
            options=SubscriptionOptions(
                from_beginning=False,
                commits=False,
                guard=self._guard,
                session_timeout_ms=self.options.session_timeout_ms,
                heartbeat_interval_ms=max(1000, self.options.session_timeout_ms // 10),
                max_poll_interval_ms=max(60_000, self.options.session_timeout_ms),
            ),
        )
        self.spawn(self._receive_loop(), "receive")
        try:
            await asyncio.wait_for(assigned.event.wait(), self.options.start_timeout_s)
        except TimeoutError:
            await self.aclose()
            raise BusError(
                f"gossip node {self.agent_id}: no partition assignment within {self.options.start_timeout_s} s"
            ) from None
        self.gossip.start()
        self.spawn(self._persist_loop(), "persist")
        # Push what was restored: peers that lost it (or never had it) merge it at once.
        for workflow_id in list(self.gossip.maps):
            await self.gossip.flush(workflow_id)

    async def aclose(self) -> None:
        """Stop background work, wait briefly for pending publishes, save dirty maps, leave the group."""
        await self.gossip.aclose()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await _stop(task)
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=self.options.flush_timeout_s)
        await self._save_dirty()
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.aclose()

    async def __aenter__(self) -> GossipNode:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- local API --------------------------------------------------------------------------

    async def set_variable(
        self,
        workflow_id: str,
        name: str,
        value: Any,
        *,
        secret: bool = False,
        priority: int = 1,
        expires_at_ms: int | None = None,
    ) -> VariableEntry:
        """Write a variable locally and broadcast it (never blocks on the bus)."""
        entry = await self.gossip.set(
            workflow_id, name, value, priority=priority, expires_at_ms=expires_at_ms, secret=secret
        )
        self._mark_dirty(workflow_id)
        return entry

    async def delete_variable(self, workflow_id: str, name: str) -> None:
        """Delete a variable and broadcast the tombstone."""
        await self.gossip.delete(workflow_id, name)
        self._mark_dirty(workflow_id)

    async def retire(self, workflow_id: str, *, ttl_s: int = 0) -> None:
        """A workflow finished: stop gossiping it (no digest every period forever), drop its
        replica from memory, and let its saved map expire after ``ttl_s`` (0: now out of the
        restore index only). ``StoreUnavailable`` when the store cannot be reached (retry later)."""
        self.gossip.forget(workflow_id)
        self._dirty.discard(workflow_id)
        self._saved_version.pop(workflow_id, None)
        self.restored.pop(workflow_id, None)
        retire = getattr(self.store, "retire", None)
        if retire is not None:
            await retire(workflow_id, self.agent_id, ttl_s)

    def get(self, workflow_id: str) -> ContextMap:
        """This node's replica of ``workflow_id`` (created empty on first use)."""
        return self.gossip.join(workflow_id)

    async def mark_accepted(self, workflow_id: str, name: str, value_hash: str) -> bool:
        """Flip a tentative variable to accepted (a quorum agreed on its value); True if it changed."""
        changed = await self.gossip.mark_accepted(workflow_id, name, value_hash)
        if changed:
            self._mark_dirty(workflow_id)
        return changed

    # -- receiving --------------------------------------------------------------------------

    def _addressed_elsewhere(self, envelope: Envelope) -> bool:
        # Sync requests and answers are broadcasts addressed to one peer; the others drop them
        # unread (and unverified: signature checks are the bulk of a node's CPU).
        if envelope.kind not in (GossipDelta.KIND, GossipSyncRequest.KIND):
            return False
        to = envelope.payload.get("to", "")
        return bool(to) and to != self.agent_id

    def _guard(self, envelope: Envelope) -> None:
        # Runs inside the bus's poll, before any handler: a refusal here is dead-lettered by the
        # bus with our reason. mesh.security's error is translated to the bus's own type.
        if self._addressed_elsewhere(envelope):
            return  # never reaches a handler: _dispatch drops it
        try:
            self._verify(envelope)
        except EnvelopeRejected as exc:
            self.stats[f"rejected_{exc.reason}"] += 1
            raise BusEnvelopeRejected(str(exc), reason=exc.reason) from None

    async def _receive_loop(self) -> None:
        assert self._sub is not None
        backoff = _POLL_BACKOFF.start()
        while True:
            try:
                deliveries = await self._sub.poll(timeout_ms=self.options.poll_timeout_ms)
            except BusError as exc:
                self.stats["poll_errors"] += 1
                delay_s = backoff.next_delay_s()
                log.warning("gossip node %s: poll failed (%s); retrying in %.1f s", self.agent_id, exc, delay_s)
                await asyncio.sleep(delay_s)
                continue
            backoff.reset()
            for delivery in deliveries:
                await self._dispatch(delivery)

    async def _dispatch(self, delivery: Delivery) -> None:
        envelope = delivery.envelope
        if self._addressed_elsewhere(envelope):
            self.stats["skipped_not_for_me"] += 1
            return
        try:
            if delivery.topic == self.topics.gossip:
                await self._handle_gossip(envelope)
            elif (handler := self._routes.get(delivery.topic)) is not None:
                await handler(envelope)
        except PermanentError as exc:
            # Verified but unusable (a clock far ahead, a corrupt delta): dead-letter it too.
            reason = getattr(exc, "reason", "") or "handler"
            self.stats[f"rejected_{reason}"] += 1
            await self._dead_letter(delivery, reason, str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # containment: one bad message must not end the receive loop
            self.stats["handler_errors"] += 1
            log.warning("gossip node %s: handling %s failed", self.agent_id, envelope.kind, exc_info=True)
            await self._dead_letter(delivery, "handler_error", f"{type(exc).__name__}: {str(exc)[:300]}")

    async def _handle_gossip(self, envelope: Envelope) -> None:
        workflow_id = envelope.workflow_id
        before = self.gossip.maps.get(workflow_id)
        version = before.version if before is not None else 0
        await self.gossip.handle(envelope)
        cmap = self.gossip.maps.get(workflow_id)
        if cmap is None or cmap.version == version:
            return
        self._mark_dirty(workflow_id)
        if self.on_change is not None:
            delta = cmap.delta_since(version)
            self.on_change(workflow_id, [e.name for e in delta.registers] + [s.name for s in delta.sets])

    async def _dead_letter(self, delivery: Delivery, reason: str, error: str) -> None:
        letter = DeadLetter(
            source_topic=delivery.topic,
            partition=delivery.partition,
            offset=delivery.offset,
            reason=reason,
            error=redact_text(error)[:2000],
            key=delivery.key,
            consumer=self.agent_id,
        )
        # One letter per record across every node and group that reads it (a claim keyed by the
        # record's place in the log); the others only count it.
        claims = getattr(self.bus, "dead_letters", None)
        if claims is not None and not await claim_dead_letter(claims, letter):
            self.stats["dead_letter_claimed_elsewhere"] += 1
            return
        self._publish(self.topics.dead_letter, self.sign(Envelope.of(letter, sender=self.agent_id)))

    # -- sending ----------------------------------------------------------------------------

    async def _send_gossip(self, envelope: Envelope) -> None:
        now_ms = time.monotonic() * 1000
        if envelope.kind == GossipDigest.KIND:
            if envelope.workflow_id in self._digest_in_flight:
                # The previous digest is still on its way (broker slow or cut off): a queue of
                # stale digests would only set off a sync storm when the link heals.
                self.stats["skipped_digest"] += 1
                return
            self._digest_in_flight.add(envelope.workflow_id)
        elif envelope.kind == GossipSyncRequest.KIND and not envelope.payload.get("reply"):
            peers = max(1, self._peer_count() - 1) if self._peer_count is not None else 0
            fanout = self.options.sync_fanout
            if fanout and peers > fanout and self._rng.random() >= fanout / peers:
                self.stats["skipped_sync_fanout"] += 1
                return
            target = (envelope.workflow_id, str(envelope.payload.get("to", "")))
            period_ms = self.gossip.options.anti_entropy_period_ms
            if now_ms - self._last_sync_ms.get(target, -period_ms) < period_ms:
                self.stats["skipped_sync_recent"] += 1
                return
            self._last_sync_ms[target] = now_ms
        self._publish(self.topics.gossip, envelope)

    def publish(self, topic: str, envelope: Envelope) -> None:
        """Hand a signed envelope to the bus in the background (dropped and counted past ``max_in_flight``)."""
        self._publish(topic, envelope)

    def _publish(self, topic: str, envelope: Envelope) -> None:
        # Fire and forget: the caller (a local write, or the receive loop answering a digest)
        # must not wait on a broker that may be cut off. Kafka keeps per-partition order of
        # what is handed over in order, and gossip tolerates loss and reordering anyway.
        if len(self._in_flight) >= self.options.max_in_flight:
            self.stats["dropped_backlog"] += 1
            if envelope.kind == GossipDigest.KIND:
                self._digest_in_flight.discard(envelope.workflow_id)
            return
        task = asyncio.create_task(self._publish_one(topic, envelope))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _publish_one(self, topic: str, envelope: Envelope) -> None:
        try:
            await self.bus.publish(topic, envelope)
        except BusError as exc:
            self.stats["dropped_bus_error"] += 1
            log.info("gossip node %s: publish to %s dropped: %s", self.agent_id, topic, exc)
        else:
            self.stats["published"] += 1
        finally:
            if envelope.kind == GossipDigest.KIND:
                self._digest_in_flight.discard(envelope.workflow_id)

    # -- background work --------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` for the node's lifetime: ``aclose`` cancels it (first spawned, first stopped)."""
        self._tasks.append(asyncio.create_task(coro, name=f"gossip-node-{self.agent_id}-{name}"))

    def _mark_dirty(self, workflow_id: str) -> None:
        if self.store is not None:
            self._dirty.add(workflow_id)
            self._dirty_event.set()

    async def _persist_loop(self) -> None:
        debounce_s = self.options.persist_debounce_ms / 1000
        while True:
            await self._dirty_event.wait()
            await asyncio.sleep(debounce_s)
            self._dirty_event.clear()
            if not await self._save_dirty():
                # Store unreachable: keep the maps dirty and try again after a pause.
                await asyncio.sleep(max(debounce_s, 0.5))
                self._dirty_event.set()

    async def _save_dirty(self) -> bool:
        """Save every dirty map; False if the store was unreachable (they stay dirty)."""
        if self.store is None:
            return True
        for workflow_id in sorted(self._dirty):
            cmap = self.gossip.maps.get(workflow_id)
            self._dirty.discard(workflow_id)
            if cmap is None or self._saved_version.get(workflow_id) == cmap.version:
                continue
            version = cmap.version
            try:
                await self.store.save(cmap)
            except StoreUnavailable as exc:
                self._dirty.add(workflow_id)
                self.stats["save_errors"] += 1
                log.info("gossip node %s: saving %s failed: %s", self.agent_id, workflow_id, exc)
                return False
            self._saved_version[workflow_id] = version
            self.stats["saves"] += 1
        return True

    async def _restore(self) -> None:
        if self.store is None:
            return
        try:
            workflow_ids = await self.store.workflows(self.agent_id)
            for workflow_id in workflow_ids:
                saved = await self.store.load(workflow_id, self.agent_id)
                if saved is None:
                    continue
                cmap = self.gossip.join(workflow_id)
                cmap.merge(saved.delta_since(0))
                self._saved_version[workflow_id] = cmap.version
                self.restored[workflow_id] = len(cmap)
        except StoreUnavailable as exc:
            self.stats["restore_errors"] += 1
            log.warning("gossip node %s: cannot restore maps (%s); starting from peers", self.agent_id, exc)

    def summary(self) -> dict[str, Any]:
        """Counters of the node and its gossip agent (for logs and tests)."""
        out: dict[str, Any] = {f"node.{k}": v for k, v in self.stats.items()}
        out.update({f"gossip.{k}": v for k, v in self.gossip.stats.items()})
        return out

    def __repr__(self) -> str:
        return f"GossipNode(agent_id={self.agent_id!r}, group={self.group!r}, workflows={sorted(self.gossip.maps)})"
