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
