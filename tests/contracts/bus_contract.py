"""The Bus contract: every implementation runs these tests (subclass and provide ``make_bus``)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from mesh.bus import Bus, Delivery, EnvelopeRejected, Subscription, SubscriptionOptions
from protocols import DeadLetter, Envelope, StepFailed, Topics

MakeBus = Callable[[Topics], Awaitable[Bus]]


def failed(i: int, wf: str = "wf-1") -> Envelope:
    """A small valid envelope numbered ``i``."""
    return Envelope.of(StepFailed(error=f"e{i}", turns=i), sender="tester", workflow_id=wf, step_id="s")


async def drain(sub: Subscription, n: int, *, timeout_s: float = 30.0, commit: bool = True) -> list[Delivery]:
    """Poll until ``n`` deliveries arrived (committing each), or fail after ``timeout_s``."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(got)} of {n} messages after {timeout_s} s")
        batch = await sub.poll(timeout_ms=200)
        for d in batch:
            got.append(d)
            if commit:
                await sub.commit(d)
    return got


class BusContract:
    """Behaviour every Bus must show."""

    @pytest.fixture
    def topics(self) -> Topics:
        return Topics(prefix=f"t{uuid.uuid4().hex[:10]}")

    @pytest.fixture
    async def make_bus(self) -> AsyncIterator[MakeBus]:  # pragma: no cover - overridden
        raise NotImplementedError
        yield

    async def test_round_trip_with_headers(self, make_bus: MakeBus, topics: Topics) -> None:
        bus = await make_bus(topics)
        env = failed(1).with_fields(trace={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
        sub = await bus.subscribe([topics.workflow_events], group="g1")
        await bus.publish(topics.workflow_events, env, headers={"x-test": b"yes"})
        [d] = await drain(sub, 1)
        assert d.envelope.id == env.id
        assert d.envelope.payload_model(StepFailed) == StepFailed(error="e1", turns=1)
        assert d.header("x-test") == b"yes"
        assert d.header("mesh-kind") == b"workflow.step_failed"
        assert d.header("traceparent") == env.trace["traceparent"].encode()
        assert d.key == b"wf-1"

    async def test_one_key_is_one_partition_in_order(self, make_bus: MakeBus, topics: Topics) -> None:
        bus = await make_bus(topics)
        sub = await bus.subscribe([topics.workflow_events], group="g1")
        for i in range(20):
            await bus.publish(topics.workflow_events, failed(i, wf="same"))
        got = await drain(sub, 20)
        assert len({d.partition for d in got}) == 1
        assert [d.envelope.payload["turns"] for d in got] == list(range(20))

    async def test_committed_not_redelivered_uncommitted_is(self, make_bus: MakeBus, topics: Topics) -> None:
        bus = await make_bus(topics)
        sub = await bus.subscribe([topics.workflow_events], group="g1")
        for i in range(6):
            await bus.publish(topics.workflow_events, failed(i, wf="k"))
        got = await drain(sub, 6, commit=False)
        # Finish 0, 1, 2 and 4 out of order: the position may only advance past 0..2.
        for d in (got[4], got[1], got[0], got[2]):
            await sub.commit(d)
        await sub.aclose()
        sub2 = await bus.subscribe([topics.workflow_events], group="g1")
        again = await drain(sub2, 3)
        assert [d.envelope.payload["turns"] for d in again] == [3, 4, 5]

    async def test_group_splits_and_failover(self, make_bus: MakeBus, topics: Topics) -> None:
        bus_a, bus_b = await make_bus(topics), await make_bus(topics)
        a = await bus_a.subscribe([topics.workflow_events], group="g", member="a")
        b = await bus_b.subscribe([topics.workflow_events], group="g", member="b")
        # Let the group settle: both members must own some partitions.
        deadline = time.monotonic() + 30
        while not (a.assignment() and b.assignment()):
            assert time.monotonic() < deadline, "group never split partitions"
            await asyncio.gather(a.poll(timeout_ms=100), b.poll(timeout_ms=100))
        assert not (a.assignment() & b.assignment())
        await b.aclose()
        for i in range(12):
            await bus_a.publish(topics.workflow_events, failed(i, wf=f"wf-{i}"))
        got = await drain(a, 12)
        assert sorted(d.envelope.payload["turns"] for d in got) == list(range(12))

    async def test_malformed_is_dead_lettered_and_consumer_goes_on(self, make_bus: MakeBus, topics: Topics) -> None:
        bus = await make_bus(topics)
        sub = await bus.subscribe([topics.workflow_events], group="g1")
        dlq = await bus.subscribe([topics.dead_letter], group="dlq-reader")
        await bus.publish_raw(topics.workflow_events, b"\xc1garbage", key="k")  # type: ignore[attr-defined]
        await bus.publish(topics.workflow_events, failed(7, wf="k"))
        [d] = await drain(sub, 1)
        assert d.envelope.payload["turns"] == 7
        [letter] = await drain(dlq, 1)
        dead = letter.envelope.payload_model(DeadLetter)
        assert dead.reason == "malformed"
        assert dead.source_topic == topics.workflow_events
        assert dead.raw == b"\xc1garbage"
        assert "malformed msgpack" in dead.error
        # The bad record was committed past: a new member of the group sees nothing.
        await sub.aclose()
        sub2 = await bus.subscribe([topics.workflow_events], group="g1")
        assert await sub2.poll(timeout_ms=1500) == []

    async def test_guard_refusal_is_dead_lettered(self, make_bus: MakeBus, topics: Topics) -> None:
        bus = await make_bus(topics)

        def guard(env: Envelope) -> None:
            if env.sender == "mallory":
                raise EnvelopeRejected("sender is not in the keyring", reason="forged")

        sub = await bus.subscribe(
            [topics.workflow_events], group="g1", options=SubscriptionOptions(guard=guard)
        )
        dlq = await bus.subscribe([topics.dead_letter], group="dlq-reader")
        await bus.publish(topics.workflow_events, failed(1).with_fields(sender="mallory"))
        await bus.publish(topics.workflow_events, failed(2))
        [d] = await drain(sub, 1)
        assert d.envelope.sender == "tester"
        [letter] = await drain(dlq, 1)
        assert letter.envelope.payload_model(DeadLetter).reason == "forged"
