"""One dead letter per bad record, whichever consumer group sees it first.

Every role is its own consumer group over the workflow log and every gossip node reads gossip
and votes, so a bad record is seen by many consumers. Each one must skip it, but only the first
should dead-letter it: the claim is keyed by (topic, partition, offset), the record's identity
in the log. Why a seam: the claim needs state shared between processes (Redis ``SET NX`` with a
TTL); the in-memory twin keeps the same contract inside one process, so the bus contract suite
runs unchanged against both.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

from mesh.backoff import ExponentialBackoff
from protocols import DeadLetter, Envelope

__all__ = [
    "DeadLetterClaims",
    "InMemoryDeadLetterClaims",
    "RedisDeadLetterClaims",
    "publish_dead_letter",
]

log = logging.getLogger("mesh.bus.dead_letters")

DEFAULT_CLAIM_TTL_S = 7 * 24 * 3600
"""How long a claim is remembered: longer than any consumer lags behind the log."""


@runtime_checkable
class DeadLetterClaims(Protocol):
    """Decides which consumer dead-letters a record: the first to claim it.

    ``claim`` may be called concurrently from many consumers and processes; exactly one call per
    (topic, partition, offset) returns True while the claim lives. When the shared state cannot
    be reached it returns True: a duplicate dead letter is better than a lost one.
    """

    async def claim(self, topic: str, partition: int, offset: int) -> bool:
        """True for the first caller of this record, False for every later one."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class InMemoryDeadLetterClaims:
    """Claims shared by every consumer in this process (the in-memory broker holds one)."""

    def __init__(self) -> None:
        """An empty claim set."""
        self._claimed: set[tuple[str, int, int]] = set()

    async def claim(self, topic: str, partition: int, offset: int) -> bool:
        """True the first time a record is claimed."""
        key = (topic, partition, offset)
        if key in self._claimed:
            return False
        self._claimed.add(key)
        return True

    async def aclose(self) -> None:
        """Nothing to release."""


class RedisDeadLetterClaims:
    """Claims in Redis: ``SET <prefix>dlq:<topic>:<partition>:<offset> NX EX ttl``.

    redis errors never leave this class: an unreachable Redis means "claim granted".
    """

    def __init__(self, redis: Any, *, prefix: str = "mesh:", ttl_s: int = DEFAULT_CLAIM_TTL_S) -> None:
        """``redis`` is a ``redis.asyncio.Redis`` client (shared, not closed here)."""
        self._redis = redis
        self._prefix = prefix
        self._ttl_s = ttl_s

    async def claim(self, topic: str, partition: int, offset: int) -> bool:
        """True when this call set the key (it was not claimed yet), or Redis cannot be reached."""
        key = f"{self._prefix}dlq:{topic}:{partition}:{offset}"
        try:
            return bool(await self._redis.set(key, b"1", nx=True, ex=self._ttl_s))
        except Exception as exc:  # redis-py raises many types; none may stop a consumer
            log.warning("dead-letter claim of %s failed (%s: %s); dead-lettering anyway", key, type(exc).__name__, exc)
            return True

    async def aclose(self) -> None:
        """The client belongs to the caller."""


async def publish_dead_letter(
    bus: Any,
    letter: DeadLetter,
    *,
    sender: str,
    claims: DeadLetterClaims | None,
    attempts: int = 3,
    retry_delay_s: float = 0.2,
) -> bool:
    """Dead-letter ``letter`` unless another consumer already did; never raises.

    Returns True when this call published it. A publish that keeps failing is logged with the
    reason and the record's place (the log line is the dead letter of last resort): a consumer
    must go on even when the dead-letter topic cannot be written.
    """
    if claims is not None and not await claims.claim(letter.source_topic, letter.partition, letter.offset):
        log.debug("%s[%d]@%d already dead-lettered by another consumer", letter.source_topic, letter.partition, letter.offset)
        return False
    envelope = Envelope.of(letter, sender=sender)
    backoff = ExponentialBackoff(base_s=retry_delay_s, cap_s=float("inf"), jitter=0.0).start()
    for attempt in range(attempts):
        try:
            await bus.publish(bus.topics.dead_letter, envelope, key=letter.source_topic)
            return True
        except Exception as exc:  # BusError, or an encode failure of an odd letter
            if attempt + 1 == attempts:
                log.error(
                    "cannot dead-letter %s[%d]@%d (%s: %s): %s: %s",
                    letter.source_topic, letter.partition, letter.offset, letter.reason, letter.error[:200],
                    type(exc).__name__, exc,
                )
                return False
            await backoff.sleep()
    return False
