"""The gossip agent: broadcasts deltas, runs anti-entropy, merges what peers send.

Dissemination is AP: an agent cut off from its peers keeps reading and writing its own replica;
once messages flow again, deltas and digest exchanges make the replicas converge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mesh.gossip._clock import HybridLogicalClock
from mesh.gossip._codec import DEFAULT_COMPRESS_MIN_BYTES, decode_delta, encode_delta
from mesh.gossip._cold import ColdValues
from mesh.gossip._entries import OrSet, VariableEntry
from mesh.gossip._map import ContextMap, Delta
from protocols.envelope import Envelope
from protocols.gossip import GossipDelta, GossipDigest, GossipSyncRequest
from protocols.hlc import HlcTimestamp

__all__ = ["GossipAgent", "GossipOptions", "GossipTransport"]

_RETIRED_KEPT = 10_000
"""Finished workflow ids remembered (about 1 MB): gossip about older ones would re-join them."""

log = logging.getLogger(__name__)


class GossipTransport(Protocol):
    """Sends one envelope to every peer (the gossip topic); the bus adapter implements it.

    Delivery may drop, duplicate or reorder envelopes: the agent is built for that.
    """

    async def __call__(self, envelope: Envelope) -> None:
        """Send ``envelope`` to all peers."""
        ...


@dataclass(frozen=True, slots=True)
class GossipOptions:
    """Tuning of dissemination and anti-entropy."""

    anti_entropy_period_ms: int = 500
    """How often each map's digest is broadcast by ``run``."""
    bucket_count: int = 16
    """Buckets of a digest; more buckets mean smaller sync requests but a larger digest."""
    compress_min_bytes: int = DEFAULT_COMPRESS_MIN_BYTES
    """Deltas at least this large are zlib-compressed."""
    auto_join: bool = True
    """Whether gossip about an unknown workflow creates a replica of it (else it is ignored)."""


class GossipAgent:
    """Keeps this agent's context maps (one per workflow) in sync with its peers.

    ``handle`` must be called with every envelope from the gossip topic, already verified
    (signature, replay) by the consumer; calls must not overlap (one consumer task). Local
    writes (``set``, ``add``...) broadcast a delta immediately; ``run`` broadcasts digests every
    ``anti_entropy_period_ms``. Envelopes from quarantined peers, and entries they wrote, are
    ignored.
    """

    def __init__(
        self,
        agent_id: str,
        send: GossipTransport | Callable[[Envelope], Awaitable[None]],
        *,
        clock: HybridLogicalClock | None = None,
        options: GossipOptions | None = None,
        sign: Callable[[Envelope], Envelope] | None = None,
        is_quarantined: Callable[[str], bool] | None = None,
        cold: ColdValues | None = None,
    ) -> None:
        """Gossip as ``agent_id`` through ``send``; sign outgoing envelopes with ``sign`` if given."""
        self.agent_id = agent_id
        self._send = send
        self.clock = clock or HybridLogicalClock()
        self.options = options or GossipOptions()
        self._sign = sign
        self._is_quarantined = is_quarantined or (lambda _peer: False)
        self.cold = cold
        self.maps: dict[str, ContextMap] = {}
        self._broadcast_version: dict[str, int] = {}
        self._retired: OrderedDict[str, None] = OrderedDict()
        """Finished workflows (the latest ``_RETIRED_KEPT``): their gossip is ignored, not re-joined."""
        self.stats: Counter[str] = Counter()
        """Messages sent and received by kind, ignored ones by reason, for metrics."""
        self._task: asyncio.Task[None] | None = None

    # -- local API ------------------------------------------------------------------------

    def join(self, workflow_id: str) -> ContextMap:
        """The replica of ``workflow_id``, created empty on first use."""
        cmap = self.maps.get(workflow_id)
        if cmap is None:
            cmap = self.maps[workflow_id] = ContextMap(workflow_id, self.agent_id, clock=self.clock)
            self._broadcast_version[workflow_id] = 0
        return cmap

    def forget(self, workflow_id: str) -> bool:
        """Drop the replica of a finished workflow: no more digests of it, and gossip about it
        from peers that have not forgotten it yet is ignored. True if there was a replica."""
        self._retired[workflow_id] = None
        self._retired.move_to_end(workflow_id)
        while len(self._retired) > _RETIRED_KEPT:
            self._retired.popitem(last=False)
        self._broadcast_version.pop(workflow_id, None)
        return self.maps.pop(workflow_id, None) is not None

    async def set(
        self,
        workflow_id: str,
        name: str,
        value: Any,
        *,
        priority: int = 1,
        expires_at_ms: int | None = None,
        secret: bool = False,
    ) -> VariableEntry:
        """Write a variable (moved to cold storage when over budget) and broadcast it."""
        cmap = self.join(workflow_id)
        if self.cold is not None:
            compacted = await self.cold.compact(workflow_id, name, value, secret=secret)
            entry = cmap.set(
                name,
                compacted.value,
                priority=priority,
                expires_at_ms=expires_at_ms,
                secret=secret,
                cold_ref=compacted.cold_ref,
                value_hash=compacted.value_hash,
            )
        else:
            entry = cmap.set(name, value, priority=priority, expires_at_ms=expires_at_ms, secret=secret)
        await self.flush(workflow_id)
        return entry

    async def delete(self, workflow_id: str, name: str) -> None:
        """Delete a variable and broadcast the tombstone."""
        self.join(workflow_id).delete(name)
        await self.flush(workflow_id)

    async def add(self, workflow_id: str, name: str, *elements: Any) -> OrSet:
        """Add elements to a set variable and broadcast them."""
        s = self.join(workflow_id).add(name, *elements)
        await self.flush(workflow_id)
        return s

    async def discard(self, workflow_id: str, name: str, *elements: Any) -> OrSet:
        """Remove elements from a set variable and broadcast the removal."""
        s = self.join(workflow_id).discard(name, *elements)
        await self.flush(workflow_id)
        return s

    async def mark_accepted(self, workflow_id: str, name: str, value_hash: str) -> bool:
        """Flip a variable to accepted (after a quorum) and broadcast the new status."""
        flipped = self.join(workflow_id).mark_accepted(name, value_hash)
        if flipped:
            await self.flush(workflow_id)
        return flipped

    async def flush(self, workflow_id: str) -> int:
        """Broadcast what changed in ``workflow_id`` since the last broadcast; return entries sent."""
        cmap = self.join(workflow_id)
        delta = cmap.delta_since(self._broadcast_version[workflow_id])
        self._broadcast_version[workflow_id] = cmap.version
        if len(delta):
            await self._send_delta(workflow_id, delta, to="")
        return len(delta)

    async def send_digest(self, workflow_id: str | None = None) -> None:
        """Broadcast the digest of one map (or of every map)."""
        for wf in [workflow_id] if workflow_id is not None else list(self.maps):
            cmap = self.join(wf)
            await self._emit(
                wf, GossipDigest(buckets=tuple(cmap.digest(self.options.bucket_count)), entries=len(cmap))
            )

    # -- receiving ------------------------------------------------------------------------

    async def handle(self, envelope: Envelope) -> None:
        """Process one envelope from the gossip topic (others' kinds are ignored).

        Raises ``ClockDriftError`` for a timestamp too far ahead and ``DecodeError`` for a
        corrupt delta: both permanent, for the consumer to dead-letter.
        """
        if envelope.sender == self.agent_id:
            return
        if self._is_quarantined(envelope.sender):
            self.stats["ignored_quarantined"] += 1
            return
        cmap = self.maps.get(envelope.workflow_id)
        if cmap is None:
            if envelope.workflow_id in self._retired:
                self.stats["ignored_retired"] += 1
                return
            if not self.options.auto_join:
                self.stats["ignored_unjoined"] += 1
                return
            cmap = self.join(envelope.workflow_id)
        if envelope.kind == GossipDelta.KIND:
            self.clock.update(envelope.hlc)
            await self._on_delta(cmap, envelope.payload_model(GossipDelta), envelope.hlc)
        elif envelope.kind == GossipDigest.KIND:
            self.clock.update(envelope.hlc)
            await self._on_digest(cmap, envelope.sender, envelope.payload_model(GossipDigest))
        elif envelope.kind == GossipSyncRequest.KIND:
            self.clock.update(envelope.hlc)
            await self._on_sync(cmap, envelope.sender, envelope.payload_model(GossipSyncRequest))
        else:
            self.stats["ignored_kind"] += 1

    async def _on_delta(self, cmap: ContextMap, payload: GossipDelta, sent_at: HlcTimestamp) -> None:
        if payload.to and payload.to != self.agent_id:
            return
        self.stats["recv_delta"] += 1
        delta = decode_delta(payload)
        # An honest sender's clock has passed every entry it holds, so an entry stamped after
        # the envelope is forged to win last-writer-wins forever: drop it.
        registers = tuple(
            e for e in delta.registers if not self._is_quarantined(e.origin) and e.hlc <= sent_at
        )
        sets = tuple(s for s in delta.sets if all(tag[0] <= sent_at for tag in s.tags()))
        dropped = len(delta) - len(registers) - len(sets)
        if dropped:
            self.stats["ignored_entries"] += dropped
        changed = cmap.merge(Delta(registers, sets))
        self.stats["merged_entries"] += len(changed)

    async def _on_digest(self, cmap: ContextMap, sender: str, payload: GossipDigest) -> None:
        self.stats["recv_digest"] += 1
        count = len(payload.buckets)
        if count < 1:
            return
        mine = cmap.digest(count)
        differing = tuple(i for i in range(count) if mine[i] != payload.buckets[i])
        if not differing:
            return
        registers, sets = cmap.stamps(set(differing), count)
        await self._emit(
            cmap.workflow_id,
            GossipSyncRequest(to=sender, bucket_count=count, buckets=differing, registers=registers, sets=sets),
        )

    async def _on_sync(self, cmap: ContextMap, sender: str, payload: GossipSyncRequest) -> None:
        if payload.to != self.agent_id:
            return
        self.stats["recv_sync"] += 1
        buckets = set(payload.buckets)
        missing = cmap.missing_for(payload.registers, payload.sets, buckets, payload.bucket_count)
        if len(missing):
            await self._send_delta(cmap.workflow_id, missing, to=sender)
        if not payload.reply and cmap.is_behind(payload.registers, payload.sets):
            # The requester holds news this replica lacks: ask back, once (reply=True stops loops).
            registers, sets = cmap.stamps(buckets, payload.bucket_count)
            await self._emit(
                cmap.workflow_id,
                GossipSyncRequest(
                    to=sender,
                    bucket_count=payload.bucket_count,
                    buckets=payload.buckets,
                    registers=registers,
                    sets=sets,
                    reply=True,
                ),
            )

    # -- periodic anti-entropy ------------------------------------------------------------

    async def run(self) -> None:
        """Broadcast digests every ``anti_entropy_period_ms`` until cancelled."""
        period_s = self.options.anti_entropy_period_ms / 1000
        while True:
            await asyncio.sleep(period_s)
            try:
                await self.send_digest()
            except Exception:  # one failed round must not end anti-entropy
                log.warning("gossip digest round failed", exc_info=True)

    def start(self) -> None:
        """Start ``run`` as a background task."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"gossip-anti-entropy-{self.agent_id}")

    async def aclose(self) -> None:
        """Stop the background task."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- sending --------------------------------------------------------------------------

    async def _send_delta(self, workflow_id: str, delta: Delta, *, to: str) -> None:
        payload = encode_delta(delta, to=to, compress_min_bytes=self.options.compress_min_bytes)
        await self._emit(workflow_id, payload)

    async def _emit(self, workflow_id: str, payload: GossipDelta | GossipDigest | GossipSyncRequest) -> None:
        envelope = Envelope.of(payload, sender=self.agent_id, workflow_id=workflow_id, hlc=self.clock.now())
        if self._sign is not None:
            envelope = self._sign(envelope)
        self.stats[f"sent_{payload.KIND.removeprefix('gossip.')}"] += 1
        await self._send(envelope)

    def __repr__(self) -> str:
        return f"GossipAgent(agent_id={self.agent_id!r}, workflows={sorted(self.maps)})"
