"""An in-memory gossip network with faults: drops, duplicates and reordering, seeded."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from protocols.codec import EnvelopeCodec
from protocols.envelope import Envelope

__all__ = ["MemoryGossipNetwork", "NetworkFaults"]

Handler = Callable[[Envelope], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class NetworkFaults:
    """What the network does wrong, per delivery."""

    drop_rate: float = 0.0
    """Probability that one recipient does not get one envelope."""
    duplicate_rate: float = 0.0
    """Probability that one recipient gets one envelope twice."""
    reorder: bool = False
    """Deliver queued envelopes in random order instead of FIFO."""
    wire: bool = True
    """Round-trip every envelope through the codec, as over Kafka."""


class MemoryGossipNetwork:
    """A broadcast medium between gossip agents, driven step by step (no timers).

    ``transport(agent_id)`` gives the send callable of one agent; ``register`` wires its
    handler. ``pump`` delivers queued envelopes, including those sent while handling, until the
    queue is empty or a message budget runs out. Partitions block delivery between groups.
    """

    def __init__(self, *, faults: NetworkFaults | None = None, seed: int = 0) -> None:
        """A network with ``faults``, deterministic for a given ``seed``."""
        self.faults = faults or NetworkFaults()
        self._rng = random.Random(seed)
        self._handlers: dict[str, Handler] = {}
        self._queue: list[tuple[str, bytes | Envelope]] = []
        self._codec = EnvelopeCodec()
        self._partition: dict[str, int] = {}
        self.sent = 0
        """Envelopes sent."""
        self.delivered = 0
        """Deliveries made (one envelope to one recipient)."""
        self.bytes_sent = 0
        """Encoded bytes sent (when ``wire``)."""

    def register(self, agent_id: str, handler: Handler) -> None:
        """Deliver envelopes to ``handler`` as ``agent_id``."""
        self._handlers[agent_id] = handler

    def transport(self, agent_id: str) -> Callable[[Envelope], Awaitable[None]]:
        """The send callable for ``agent_id``."""

        async def send(envelope: Envelope) -> None:
            self.sent += 1
            item: bytes | Envelope = envelope
            if self.faults.wire:
                item = self._codec.encode(envelope)
                self.bytes_sent += len(item)
            self._queue.append((agent_id, item))

        return send

    def partition(self, *groups: set[str]) -> None:
        """Cut the network into ``groups``; agents in none of them form one more group."""
        self._partition = {agent: i + 1 for i, group in enumerate(groups) for agent in group}

    def heal(self) -> None:
        """Remove every partition."""
        self._partition = {}

    @property
    def pending(self) -> int:
        """Envelopes queued for delivery."""
        return len(self._queue)

    async def pump(self, *, max_messages: int = 1_000_000) -> int:
        """Deliver queued envelopes until none is left or ``max_messages`` were taken; return how many."""
        taken = 0
        while self._queue and taken < max_messages:
            index = self._rng.randrange(len(self._queue)) if self.faults.reorder else 0
            sender, item = self._queue.pop(index)
            taken += 1
            envelope = self._codec.decode(item) if isinstance(item, bytes) else item
            for agent_id, handler in list(self._handlers.items()):
                if agent_id == sender or not self._connected(sender, agent_id):
                    continue
                if self._rng.random() < self.faults.drop_rate:
                    continue
                copies = 2 if self._rng.random() < self.faults.duplicate_rate else 1
                for _ in range(copies):
                    self.delivered += 1
                    await handler(envelope)
        return taken

    def _connected(self, a: str, b: str) -> bool:
        return self._partition.get(a, 0) == self._partition.get(b, 0)
