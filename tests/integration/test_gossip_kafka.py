"""Peers (gossip node, votes, trust) on the real Kafka and Redis: convergence, dead-lettered forgeries, SIGKILL and restore."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from mesh.bus import KafkaBus, SubscriptionOptions
from mesh.gossip import ContextMapArchive, GossipNodeOptions, GossipOptions
from mesh.peer import Peer
from mesh.runtime.trust import AgentTrust
from mesh.security import EnvelopeSigner, KeyPair, Keyring, generate_keypair, private_key_to_hex
from mesh.store import RedisContextMapStore
from mesh.testing import PeerProcess, PeerProcessConfig
from protocols import DeadLetter, Envelope, GossipDigest, Topics

pytestmark = pytest.mark.integration

WF = "wf-kafka"
GOSSIP = GossipOptions(anti_entropy_period_ms=300, bucket_count=16)
NODE = GossipNodeOptions(persist_debounce_ms=50, poll_timeout_ms=200, start_timeout_s=30)


async def _until(predicate: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        await asyncio.sleep(0.05)


@pytest.fixture
async def topics(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[Topics]:
    """The mesh topics under this test's prefix, created up front (2 partitions each)."""
    t = Topics(topic_prefix)
    admin_bus = KafkaBus(kafka_bootstrap, topics=t, partitions=2)
    await admin_bus.ensure_topics(list(t.all()))
    yield t


async def _bus(bootstrap: str, topics: Topics, client_id: str) -> KafkaBus:
    bus = KafkaBus(bootstrap, topics=topics, client_id=client_id, create_topics=[])
    await bus.start()
    return bus


async def test_three_nodes_converge_and_forgeries_are_dead_lettered(kafka_bootstrap: str, topics: Topics) -> None:
    pairs = [generate_keypair(f"k{i}") for i in range(3)]
    keyring = Keyring({p.agent_id: p.public_key for p in pairs})
    validators = {p.agent_id for p in pairs}
    buses = [await _bus(kafka_bootstrap, topics, p.agent_id) for p in pairs]
    nodes = [
        Peer(AgentTrust(p, keyring=keyring), bus, topics=topics, validators=validators, gossip_options=GOSSIP, node_options=NODE)
        for p, bus in zip(pairs, buses, strict=True)
    ]
    attacker = await _bus(kafka_bootstrap, topics, "attacker")
    try:
        await asyncio.gather(*(n.start() for n in nodes))
        for i, node in enumerate(nodes):
            await node.set_variable(WF, f"found-{i}", {"by": node.agent_id, "n": i})
        await nodes[0].set_variable(WF, "auth_token", "tok-123", secret=True, priority=0)
        await _until(
            lambda: all(len(n.get(WF)) == 4 for n in nodes) and nodes[0].get(WF) == nodes[1].get(WF) == nodes[2].get(WF),
            what="3 replicas converged",
        )
        assert nodes[2].get(WF).value("found-0") == {"by": "k0", "n": 0}

        # An unsigned envelope and one signed with a key that is not k0's: both refused by every node.
        digest = GossipDigest(buckets=(b"\x00" * 8,) * 16, entries=99)
        await attacker.publish(topics.gossip, Envelope.of(digest, sender="k0", workflow_id=WF))
        impostor = EnvelopeSigner("k0", generate_keypair("k0").private_key)
        await attacker.publish(topics.gossip, impostor.sign(Envelope.of(digest, sender="k0", workflow_id=WF)))
        await _until(
            lambda: all(n.stats["rejected_unsigned"] == 1 and n.stats["rejected_forged"] == 1 for n in nodes),
            what="every node rejected both",
        )
        # ...and they keep working: a vote and a new variable still go through.
        proposal = await nodes[1].propose(WF, "order_id", "o-77")
        await nodes[2].set_variable(WF, "after-attack", True)
        await _until(
            lambda: all(n.get(WF).value("after-attack") is True for n in nodes)
            and all(n.get(WF).entry("order_id") is not None and n.get(WF).entry("order_id").status == "accepted" for n in nodes)  # type: ignore[union-attr]
            # The accepted status may arrive by gossip before a node's own tally decides: wait for both.
            and all(n.decision(proposal.id) is not None for n in nodes),
            what="variable and accepted fact everywhere",
        )
        assert all(n.decision(proposal.id).outcome == "accepted" for n in nodes)  # type: ignore[union-attr]

        dlq = await attacker.subscribe([topics.dead_letter], group=f"{topics.prefix}.dlq-check", options=SubscriptionOptions(from_beginning=True))
        letters: list[DeadLetter] = []
        for _ in range(60):
            letters += [d.envelope.payload_model(DeadLetter) for d in await dlq.poll(timeout_ms=500)]
            if len(letters) >= 6:
                break
        assert sorted(letter.reason for letter in letters) == ["forged"] * 3 + ["unsigned"] * 3
        assert {letter.consumer for letter in letters} == validators
        assert all(letter.source_topic == topics.gossip for letter in letters)
    finally:
        for node in nodes:
            await node.aclose()
        for bus in [*buses, attacker]:
            await bus.aclose()


def _worker_config(pair: KeyPair, keyring: Keyring, bootstrap: str, topics: Topics, redis_url: str, key_prefix: str) -> PeerProcessConfig:
    return PeerProcessConfig(
        agent_id=pair.agent_id,
        private_key_hex=private_key_to_hex(pair.private_key),
        keyring_json=json.dumps(keyring.to_dict()),
        bootstrap=bootstrap,
        topic_prefix=topics.prefix,
        redis_url=redis_url,
        key_prefix=key_prefix,
        anti_entropy_period_ms=300,
    )


async def test_sigkilled_node_restores_from_redis_and_catches_up_by_anti_entropy(
    kafka_bootstrap: str, redis_url: str, topics: Topics, key_prefix: str
) -> None:
    pairs = [generate_keypair(name) for name in ("a", "b", "c")]
    keyring = Keyring({p.agent_id: p.public_key for p in pairs})
    redis_client = aioredis.Redis.from_url(redis_url)
    store = ContextMapArchive(RedisContextMapStore(redis_client, prefix=key_prefix))
    buses = [await _bus(kafka_bootstrap, topics, p.agent_id) for p in pairs[:2]]
    nodes = [
        Peer(AgentTrust(p, keyring=keyring), bus, topics=topics, store=store, gossip_options=GOSSIP, node_options=NODE)
        for p, bus in zip(pairs[:2], buses, strict=True)
    ]
    config = _worker_config(pairs[2], keyring, kafka_bootstrap, topics, redis_url, key_prefix)
    worker = PeerProcess(config)
    a = nodes[0]
    try:
        await asyncio.gather(*(n.start() for n in nodes), worker.start())
        assert worker.ready["restored"] == {}
        for i in range(3):
            await a.set_variable(WF, f"before-{i}", i)
        await worker.request("set", wf=WF, name="from-c", value="c")
        await _until(lambda: a.get(WF).value("from-c") == "c", what="c's write reached a")

        async def c_holds(names: set[str]) -> bool:
            return names <= set((await worker.request("dump", wf=WF))["values"])

        before = {f"before-{i}" for i in range(3)} | {"from-c"}
        for _ in range(100):
            saved = await store.load(WF, "c")
            if await c_holds(before) and saved is not None and {n for n, _ in saved.items()} >= before:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("c never held and saved the first variables")

        worker.kill()
        await worker.aclose()
        for i in range(2):
            await a.set_variable(WF, f"while-dead-{i}", i)
        await nodes[1].set_variable(WF, "from-b-while-dead", "b")

        restarted = PeerProcess(config)
        ready = await restarted.start()
        worker = restarted
        # Restored from Redis before any peer spoke: exactly what c held when it died.
        assert ready["restored"] == {WF: 4}
        expected = before | {"while-dead-0", "while-dead-1", "from-b-while-dead"}
        for _ in range(100):
            if await c_holds(expected):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("restarted c did not catch up by anti-entropy")
        await _until(lambda: len(a.get(WF)) == len(expected), what="a holds all")
        digest = (await worker.request("dump", wf=WF))["digest"]
        assert digest == [b.hex() for b in a.get(WF).digest(16)]
    finally:
        await worker.aclose()
        for node in nodes:
            await node.aclose()
        for bus in buses:
            await bus.aclose()
        await redis_client.aclose()
