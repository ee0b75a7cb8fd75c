"""One dead letter per bad record, whichever consumer group sees it first.

Every role is its own consumer group over the workflow log and every gossip node reads gossip
and votes, so a bad record is seen by many consumers. Each one must skip it, but only the first
should dead-letter it: ``publish_dead_letter`` asks the bus's ``DeadLetterClaims`` (keyed by the
record's topic, partition and offset) before it publishes. The claims are a store seam: the
Protocol is ``mesh.store.DeadLetterClaims``, its twins ``mesh.store.InMemoryDeadLetterClaims`` and
``mesh.store.RedisDeadLetterClaims``, re-exported here (the same objects) for the bus's users.
"""

from __future__ import annotations

import logging
from typing import Any

from mesh.backoff import ExponentialBackoff
from mesh.store import DeadLetterClaims, InMemoryDeadLetterClaims, RedisDeadLetterClaims
from protocols import DeadLetter, Envelope

__all__ = [
    "DeadLetterClaims",
    "InMemoryDeadLetterClaims",
    "RedisDeadLetterClaims",
    "claim_dead_letter",
    "publish_dead_letter",
]

log = logging.getLogger("mesh.bus.dead_letters")


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
    if claims is not None and not await claim_dead_letter(claims, letter):
        log.debug(
            "%s[%d]@%d already dead-lettered by another consumer",
            letter.source_topic,
            letter.partition,
            letter.offset,
        )
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
                    letter.source_topic,
                    letter.partition,
                    letter.offset,
                    letter.reason,
                    letter.error[:200],
                    type(exc).__name__,
                    exc,
                )
                return False
            await backoff.sleep()
    return False


async def claim_dead_letter(claims: DeadLetterClaims, letter: DeadLetter) -> bool:
    """True when this consumer should publish ``letter`` (first to claim it, or the claim failed); never raises."""
    # Claims grant when their store is away (a StoreError); anything else they raise is a bug,
    # and it must not stop the consumer either: dead-letter, as without claims.
    try:
        return await claims.claim(letter.source_topic, letter.partition, letter.offset)
    except Exception as exc:
        log.error(
            "dead-letter claim of %s[%d]@%d failed (%s: %s); dead-lettering anyway",
            letter.source_topic,
            letter.partition,
            letter.offset,
            type(exc).__name__,
            exc,
        )
        return True
