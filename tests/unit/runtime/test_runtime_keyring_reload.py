"""The log guard looks the keyring up again when its view may predate a record (never more).

A CI run lost a demo workflow: a fetch agent had read the keyring a few milliseconds before the
demo published its key, then refused the demo's ``workflow.submitted`` as "sender not in the
keyring", since its last reload was under the 0.2 s rate limit. The record was dead-lettered and
the workflow never went past its first step.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from mesh.bus import InMemoryBroker, InMemoryBus, SubscriptionOptions
from mesh.errors import EnvelopeRejected, StoreUnavailable
from mesh.runtime.trust import AgentTrust
from mesh.security import EnvelopeSigner, KeyDirectory, KeyPair, generate_keypair
from mesh.store import InMemoryKeyringStore
from protocols import Envelope, Topics, TraceEvent


class CountingKeyringStore(InMemoryKeyringStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def records(self) -> dict[str, str]:
        self.reads += 1
        return await super().records()


async def _setup() -> tuple[CountingKeyringStore, AgentTrust, InMemoryBus, Topics]:
    store = CountingKeyringStore()
    reader = AgentTrust(generate_keypair("reader"), KeyDirectory(store), reload_interval_s=0.2)
    await reader.register()  # the reader's view is read now
    topics = Topics(prefix="t")
    bus = InMemoryBus(InMemoryBroker(default_partitions=1), topics=topics, client_id="w")
    return store, reader, bus, topics


def _signed(pair: KeyPair, name: str = "x") -> Envelope:
    return EnvelopeSigner(pair.agent_id, pair.private_key).sign(
        Envelope.of(TraceEvent(name=name), sender=pair.agent_id, workflow_id="wf")
    )


async def _publish_strangers(bus: InMemoryBus, topics: Topics, count: int, prefix: str) -> None:
    """``count`` envelopes, each signed by a key no keyring holds."""
    for i in range(count):
        await bus.publish(topics.workflow_events, _signed(generate_keypair(f"{prefix}-{i}")))


async def test_a_key_published_just_after_the_reload_is_found() -> None:
    store, reader, bus, topics = await _setup()
    sub = await bus.subscribe(
        [topics.workflow_events], group="g", options=SubscriptionOptions(guard=reader)
    )
    # Within the rate limit of the reader's last reload: publish a key, then send with it.
    demo = generate_keypair("demo")
    await KeyDirectory(store).publish("demo", demo.public_key)
    await bus.publish(topics.workflow_events, _signed(demo, "submitted"))
    got = await sub.poll(timeout_ms=50)
    assert [d.envelope.sender for d in got] == ["demo"]
    assert reader.rejections == {}


async def test_a_flood_of_unknown_senders_costs_one_reload_per_batch() -> None:
    store, reader, bus, topics = await _setup()
    sub = await bus.subscribe(
        [topics.workflow_events],
        group="g",
        options=SubscriptionOptions(guard=reader, max_poll_records=500),
    )
    await asyncio.sleep(0.25)
    before = store.reads
    await _publish_strangers(bus, topics, 300, "liar")
    assert await sub.poll(timeout_ms=50) == []
    assert store.reads - before == 1
    assert reader.rejections == {"forged": 300}
    # A second batch, fetched after that reload, may look again (once).
    await _publish_strangers(bus, topics, 50, "late")
    assert await sub.poll(timeout_ms=50) == []
    assert store.reads - before == 2


async def test_an_envelope_vetted_outside_a_bus_reloads_once() -> None:
    store, reader, _bus, _topics = await _setup()
    envelope = _signed(generate_keypair("liar"))
    await asyncio.sleep(0.25)
    before = store.reads
    # Vetted outside a bus, the record counts as fetched now: one reload, not one per check.
    with pytest.raises(EnvelopeRejected) as refused:
        await reader(envelope)
    assert refused.value.reason == "forged"
    assert store.reads - before == 1


async def test_with_the_store_down_a_batch_tries_once() -> None:
    store, reader, bus, topics = await _setup()
    sub = await bus.subscribe([topics.workflow_events], group="g", options=SubscriptionOptions(guard=reader))

    async def down() -> dict[str, str]:
        store.reads += 1
        raise StoreUnavailable("redis is down")

    store.records = down  # type: ignore[method-assign]
    await _publish_strangers(bus, topics, 40, "liar")
    before = store.reads
    started = time.monotonic()
    assert await sub.poll(timeout_ms=50) == []
    assert store.reads - before == 1
    assert time.monotonic() - started < 2  # not one wait of the rate limit per record
