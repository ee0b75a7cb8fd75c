"""The Bus contract against the in-memory bus."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mesh.bus import Bus, InMemoryBroker, InMemoryBus
from protocols import Topics
from tests.contracts.bus_contract import BusContract, MakeBus


class TestInMemoryBus(BusContract):
    @pytest.fixture
    async def make_bus(self) -> AsyncIterator[MakeBus]:
        broker = InMemoryBroker(default_partitions=3)
        made: list[InMemoryBus] = []

        async def make(topics: Topics) -> Bus:
            bus = InMemoryBus(broker, topics=topics)
            made.append(bus)
            return bus

        yield make
        for bus in made:
            await bus.aclose()


@pytest.mark.parametrize("commits", [True, False])
async def test_a_member_that_never_commits_tracks_nothing_per_delivery(commits: bool) -> None:
    # Gossip reads every digest and never commits: its tracker held every offset it ever read.
    from mesh.bus import SubscriptionOptions
    from protocols import Envelope, TraceEvent

    topics = Topics(prefix="t")
    bus = InMemoryBus(InMemoryBroker(default_partitions=2), topics=topics, client_id="a")
    for i in range(300):
        await bus.publish(topics.gossip, Envelope.of(TraceEvent(name=f"d{i}"), sender="a"))
    sub = await bus.subscribe([topics.gossip], group="g", options=SubscriptionOptions(commits=commits))
    read = 0
    for _ in range(10):
        read += len(await sub.poll(timeout_ms=10))
    assert read == 300
    held = sum(len(s) for s in sub._tracker._in_flight.values())  # type: ignore[attr-defined]
    assert held == (300 if commits else 0)
