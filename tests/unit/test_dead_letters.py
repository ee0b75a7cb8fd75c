"""``publish_dead_letter`` with the bus's claims: one letter per record, and a claim never stops it."""

from __future__ import annotations

from mesh.bus import InMemoryBroker, InMemoryBus, publish_dead_letter
from mesh.bus import InMemoryDeadLetterClaims as BusInMemoryDeadLetterClaims
from mesh.store import InMemoryDeadLetterClaims
from protocols import DeadLetter


def _letter(offset: int) -> DeadLetter:
    return DeadLetter(source_topic="t", partition=0, offset=offset, reason="malformed", error="x")


async def _letters(broker: InMemoryBroker) -> list[DeadLetter]:
    reader = InMemoryBus(broker, client_id="reader")
    sub = await reader.subscribe([reader.topics.dead_letter], group="reader")
    return [d.envelope.payload_model(DeadLetter) for d in await sub.poll(timeout_ms=100)]


async def test_the_first_consumer_publishes_and_the_others_skip() -> None:
    broker = InMemoryBroker()
    assert (
        BusInMemoryDeadLetterClaims is InMemoryDeadLetterClaims
    )  # the bus's name for the store's twin
    assert isinstance(broker.dead_letters, InMemoryDeadLetterClaims)
    buses = [InMemoryBus(broker, client_id=f"c{i}") for i in range(3)]
    sent = [
        await publish_dead_letter(b, _letter(3), sender=b.client_id, claims=b.dead_letters)
        for b in buses
    ]
    assert sent == [True, False, False]
    assert [letter.offset for letter in await _letters(broker)] == [3]


async def test_a_claim_that_raises_does_not_stop_the_dead_letter() -> None:
    # Claims grant when their store is away; one that raises anything else (a bug) must not stop
    # the consumer either: the letter goes out, as without claims.
    class Broken:
        async def claim(self, topic: str, partition: int, offset: int) -> bool:
            raise RuntimeError("a bug in the claims")

        async def aclose(self) -> None:
            pass

    broker = InMemoryBroker()
    bus = InMemoryBus(broker, client_id="c")
    assert await publish_dead_letter(bus, _letter(4), sender="c", claims=Broken())
    assert [letter.offset for letter in await _letters(broker)] == [4]
