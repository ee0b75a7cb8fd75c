"""Redis write access does not let an agent sign as another (real Redis and Kafka; issue #8 defect 3).

Mallory is a legitimate, certified agent of the mesh, so she can write the keyring hash in Redis
and publish on every topic. She overwrites the keyring entry of validator k2 with keys of her
own (bare, with her own certificate, with a certificate from an operator key she made up) and
signs as k2 on the gossip topic, the votes topic and the workflow log. Every peer keeps k2's
real key: her messages are refused, k2's still verify, and she never counts as k2 in a vote.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import pytest
import redis.asyncio as aioredis

from mesh.bus import KafkaBus, SubscriptionOptions
from mesh.gossip import GossipNodeOptions, GossipOptions
from mesh.peer import Peer
from mesh.quorum import BallotSigner, make_proposal
from mesh.runtime.trust import AgentTrust
from mesh.security import (
    AgentCertificate,
    EnvelopeRejected,
    EnvelopeSigner,
    KeyDirectory,
    KeyPair,
    TrustPolicy,
    certify,
    generate_keypair,
    rotate,
)
from mesh.security._trust import KeyRecord
from mesh.store import RedisKeyringStore
from protocols import Envelope, GossipDigest, Topics
from protocols.events import WorkflowSubmitted
from tests.waiting import until

pytestmark = pytest.mark.integration

WF = "wf-trust"
GOSSIP = GossipOptions(anti_entropy_period_ms=300, bucket_count=16)
NODE = GossipNodeOptions(persist_debounce_ms=50, poll_timeout_ms=200, start_timeout_s=30)




@pytest.fixture
async def topics(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[Topics]:
    t = Topics(topic_prefix)
    admin_bus = KafkaBus(kafka_bootstrap, topics=t, partitions=1)
    await admin_bus.ensure_topics(list(t.all()))
    yield t


async def _forge_k2(store: KeyDirectory, client: aioredis.Redis, mallory: KeyPair, mallory_cert: AgentCertificate) -> None:
    """Every way Mallory can dress her key up as k2's in Redis (the last write stays)."""
    key = cast(RedisKeyringStore, store.store).key
    fake_operator = generate_keypair("fake-operator")
    forged_cert = certify(fake_operator.private_key, "k2", mallory.public_key)
    await client.hset(key, "k2", KeyRecord(mallory_cert.public_key).to_json())  # type: ignore[misc]
    await client.hset(key, "k2", KeyRecord(mallory_cert.public_key, mallory_cert).to_json())  # type: ignore[misc]
    await store.publish("k2", mallory.public_key, certificate=forged_cert)


def _wf_event(sender: str) -> Envelope:
    payload = WorkflowSubmitted.model_validate(
        {"spec": {"name": "t", "steps": [{"id": "a", "role": "r"}]}, "submitted_by": sender}
    )
    return Envelope.of(payload, sender=sender, workflow_id=WF)


async def test_redis_write_access_does_not_make_mallory_k2(
    kafka_bootstrap: str, redis_client: aioredis.Redis, key_prefix: str, topics: Topics
) -> None:
    operator = generate_keypair("operator")
    policy = TrustPolicy(operator.public_key)
    store = KeyDirectory(RedisKeyringStore(redis_client, prefix=key_prefix))
    pairs = {a: generate_keypair(a) for a in ("k0", "k1", "k2", "mallory")}
    certs = {a: certify(operator.private_key, a, p.public_key) for a, p in pairs.items()}
    mallory = pairs["mallory"]
    # Mallory writes first: a fresh peer finds only her records for k2.
    await store.publish("mallory", mallory.public_key, certificate=certs["mallory"])
    await _forge_k2(store, redis_client, mallory, certs["mallory"])

    trusts = {
        a: AgentTrust(pairs[a], store, policy=policy, certificate=certs[a], refresh_period_s=0.2) for a in ("k0", "k1", "k2")
    }
    for a in ("k0", "k1"):
        await trusts[a].register()
        assert "k2" not in trusts[a].keyring and trusts[a].keyring.refusals["k2"] >= 1
    await trusts["k2"].register()  # the real k2 publishes its certified key
    buses = {a: KafkaBus(kafka_bootstrap, topics=topics, client_id=a, create_topics=[]) for a in (*trusts, "mallory")}
    for bus in buses.values():
        await bus.start()
    validators = {"k0", "k1", "k2", "mallory"}
    nodes = {
        # Each peer gossips and votes with its agent's one trust object (the log's guard too).
        a: Peer(trusts[a], buses[a], topics=topics, validators=validators, gossip_options=GOSSIP, node_options=NODE)
        for a in trusts
    }
    try:
        await asyncio.gather(*(n.start() for n in nodes.values()))
        await until(lambda: all("k2" in n.keyring for n in nodes.values()), what="everyone admitted the real k2")
        # Mallory overwrites k2's entry again, after everyone admitted the real key.
        await _forge_k2(store, redis_client, mallory, certs["mallory"])
        await asyncio.sleep(0.6)  # several keyring refreshes
        for trust in trusts.values():
            await trust.refresh()

        # Gossip: Mallory signs a digest as k2 and publishes it on the real gossip topic.
        impostor = EnvelopeSigner("k2", mallory.private_key)
        digest = GossipDigest(buckets=(b"\x00" * 8,) * 16, entries=99)
        await buses["mallory"].publish(topics.gossip, impostor.sign(Envelope.of(digest, sender="k2", workflow_id=WF)))
        # Votes: a ballot "by k2", signed by Mallory, on the votes topic and straight into a book.
        proposal = make_proposal(WF, "order_id", "order_id", "o-evil", proposer="mallory")
        forged_ballot = BallotSigner("k2", mallory.private_key).cast(proposal, "accept")
        await buses["mallory"].publish(topics.votes, impostor.sign(Envelope.of(forged_ballot, sender="k2", workflow_id=WF)))
        await until(
            lambda: all(n.stats["rejected_forged"] >= 2 for a, n in nodes.items() if a != "k2"),
            what="k0 and k1 refused both forgeries",
        )
        book = nodes["k0"].quorum.book  # type: ignore[union-attr]
        book.add_proposal(proposal)
        assert book.add_ballot(forged_ballot).outcome == "forged"
        # The workflow log: the same keyring, the same answer (the reload-on-forged path included).
        with pytest.raises(EnvelopeRejected) as rejected:
            await trusts["k0"](impostor.sign(_wf_event("k2")))
        assert rejected.value.reason == "forged"

        # The real k2 is unaffected everywhere: its log envelope, gossip and ballots verify.
        await trusts["k0"](trusts["k2"].sign(_wf_event("k2")))
        await nodes["k2"].set_variable(WF, "from-k2", 42)
        real = await nodes["k0"].propose(WF, "order_id", "o-1")
        await until(
            lambda: all(n.get(WF).value("from-k2") == 42 for n in nodes.values())
            and nodes["k1"].decision(real.id) is not None,
            what="k2's gossip and the vote went through",
        )
        decision = nodes["k1"].decision(real.id)
        assert decision is not None and decision.outcome == "accepted"
        assert "k2" in {b.voter for b in decision.certificate}
        for a in ("k0", "k1"):
            assert nodes[a].keyring.get("k2") is not None
            assert nodes[a].keyring.to_dict()["k2"] == certs["k2"].public_key
    finally:
        for node in nodes.values():
            await node.aclose()
        for bus in buses.values():
            await bus.aclose()


async def test_pinned_keys_rotate_only_with_the_old_key(redis_client: aioredis.Redis, key_prefix: str) -> None:
    table = RedisKeyringStore(redis_client, prefix=key_prefix)
    store = KeyDirectory(table)
    k2, k2_new, mallory = generate_keypair("k2"), generate_keypair("k2"), generate_keypair("mallory")
    await store.publish("k2", k2.public_key)
    observer = await store.load()  # pinned: first use
    assert observer.policy.mode == "pinned" and observer.to_dict()["k2"] == KeyRecord.parse(
        (await redis_client.hget(table.key, "k2")).decode()).public_key
    # Mallory's key with a rotation statement she signed herself: refused.
    await store.publish("k2", mallory.public_key, rotation=rotate("k2", mallory.private_key, mallory.public_key))
    assert observer.refresh(await store.records()) == 0 and observer.refusals["k2"] == 1
    # The real rotation, signed with k2's pinned key: admitted.
    await store.publish("k2", k2_new.public_key, rotation=rotate("k2", k2.private_key, k2_new.public_key))
    assert observer.refresh(await store.records()) == 1
    assert observer.get("k2") is not None and observer.to_dict()["k2"] == KeyRecord.parse(
        (await redis_client.hget(table.key, "k2")).decode()).public_key
    # Garbage in the hash is skipped, not fatal for everyone's reload.
    await redis_client.hset(table.key, "junk", b"\xff\x00not a key")
    assert "junk" not in await store.records()


class _CountingKeyring(RedisKeyringStore):
    """The Redis keyring, counting the reads of its table."""

    reads = 0

    async def records(self) -> dict[str, str]:
        self.reads += 1
        return await super().records()


async def test_the_log_guard_finds_a_key_published_after_its_last_reload_and_reads_once_per_batch(
    kafka_bootstrap: str, redis_client: aioredis.Redis, key_prefix: str, topics: Topics
) -> None:
    # Real Kafka fetches and a real Redis keyring: a key published right after the guard read the
    # keyring is found (a CI run lost a workflow to this), and a batch of strangers costs one read.
    table = _CountingKeyring(redis_client, prefix=key_prefix)
    reader = AgentTrust(generate_keypair("reader"), KeyDirectory(table), reload_interval_s=0.2)
    await reader.register()
    sender = KafkaBus(kafka_bootstrap, topics=topics, client_id="sender", create_topics=[])
    bus = KafkaBus(kafka_bootstrap, topics=topics, client_id="reader", create_topics=[])
    await sender.start()
    await bus.start()
    sub = await bus.subscribe([topics.workflow_events], group=f"{key_prefix}g", options=SubscriptionOptions(guard=reader))
    try:
        demo = generate_keypair("demo")
        await reader.refresh()  # the guard's view is read now...
        await KeyDirectory(table).publish("demo", demo.public_key)  # ...and the key lands just after
        await sender.publish(topics.workflow_events, EnvelopeSigner("demo", demo.private_key).sign(_wf_event("demo")))
        got = []
        for _ in range(20):
            got += await sub.poll(timeout_ms=1000)
            if got or reader.rejections:
                break
        assert [d.envelope.sender for d in got] == ["demo"] and reader.rejections == {}

        for i in range(60):
            stranger = generate_keypair(f"stranger-{i}")
            await sender.publish(topics.workflow_events, EnvelopeSigner(stranger.agent_id, stranger.private_key)
                                 .sign(_wf_event(stranger.agent_id)))
        before, polls = table.reads, 0
        while reader.rejections.get("forged", 0) < 60:
            assert await sub.poll(timeout_ms=1000) == []
            polls += 1
            assert polls < 30, reader.rejections
        assert 1 <= table.reads - before <= polls  # at most one keyring read per fetched batch
    finally:
        await sub.aclose()
        await bus.aclose()
        await sender.aclose()
