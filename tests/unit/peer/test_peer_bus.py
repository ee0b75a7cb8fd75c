"""Peer (gossip node, votes, trust) over the in-memory bus: convergence, verification guard, persistence, votes across a cut."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

import pytest

from mesh.bus import InMemoryBroker, InMemoryBus, RebalanceListener, SubscriptionOptions
from mesh.errors import BusUnavailable
from mesh.gossip import ContextMapArchive, GossipNodeOptions, GossipOptions
from mesh.peer import Peer, PeerOptions
from mesh.runtime.trust import AgentTrust
from mesh.security import EnvelopeSigner, Keyring, generate_keypair
from mesh.store import InMemoryContextMapStore
from protocols import DeadLetter, Envelope, GossipDigest, Topics

WF = "wf-bus"
FAST = GossipOptions(anti_entropy_period_ms=40, bucket_count=8)
NODE = GossipNodeOptions(persist_debounce_ms=10, poll_timeout_ms=50, start_timeout_s=2)
PEER = PeerOptions(vote_resend_period_ms=100)


class CuttableBus:
    """An InMemoryBus whose link can be cut: publishes and polls fail while ``cut`` is set."""

    def __init__(self, bus: InMemoryBus) -> None:
        self.inner = bus
        self.cut = False

    async def publish(
        self,
        topic: str,
        envelope: Envelope,
        *,
        key: str | None = None,
        headers: Mapping[str, bytes] | None = None,
    ) -> None:
        if self.cut:
            raise BusUnavailable("link cut by the test")
        await self.inner.publish(topic, envelope, key=key, headers=headers)

    async def subscribe(
        self,
        topics: Sequence[str],
        *,
        group: str,
        member: str = "",
        listener: RebalanceListener | None = None,
        options: SubscriptionOptions | None = None,
    ):
        sub = await self.inner.subscribe(
            topics, group=group, member=member, listener=listener, options=options
        )
        outer = self

        class _Sub:
            async def poll(self, *, timeout_ms: int = 1000):
                if outer.cut:
                    await asyncio.sleep(timeout_ms / 1000)
                    raise BusUnavailable("link cut by the test")
                return await sub.poll(timeout_ms=timeout_ms)

            async def commit(self, delivery):
                return await sub.commit(delivery)

            def assignment(self):
                return sub.assignment()

            async def aclose(self) -> None:
                await sub.aclose()

        return _Sub()

    async def aclose(self) -> None:
        await self.inner.aclose()


def _cluster(n: int, *, broker: InMemoryBroker | None = None, prefix: str = "u"):
    broker = broker or InMemoryBroker(default_partitions=2)
    pairs = [generate_keypair(f"n{i}") for i in range(n)]
    keyring = Keyring({p.agent_id: p.public_key for p in pairs})
    return broker, pairs, keyring, Topics(prefix)


async def _until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def _start(nodes: list[Peer]) -> None:
    for node in nodes:
        await node.start()


async def _close(nodes: list[Peer]) -> None:
    for node in nodes:
        await node.aclose()


async def test_three_nodes_converge_on_every_variable() -> None:
    broker, pairs, keyring, topics = _cluster(3)
    nodes = [
        Peer(
            AgentTrust(p, keyring=Keyring({k: keyring.get(k) for k in keyring})),
            InMemoryBus(broker, topics=topics),
            topics=topics,
            gossip_options=FAST,
            node_options=NODE,
            options=PEER,
        )
        for p in pairs
    ]
    await _start(nodes)
    try:
        for i, node in enumerate(nodes):
            await node.set_variable(WF, f"var-{i}", {"from": node.agent_id})
        await node.set_variable(WF, "token", "s3cret", secret=True, priority=0)
        await _until(
            lambda: (
                all(len(n.get(WF)) == 4 for n in nodes)
                and nodes[0].get(WF) == nodes[1].get(WF) == nodes[2].get(WF)
            )
        )
        assert nodes[0].get(WF).value("var-2") == {"from": "n2"}
        assert nodes[1].get(WF).get("token").secret  # type: ignore[union-attr]
        assert all(n.verifier.accepted > 0 for n in nodes)
        assert all(not n.verifier.rejections for n in nodes)
    finally:
        await _close(nodes)


async def test_unsigned_and_forged_envelopes_are_dead_lettered_and_nodes_keep_working() -> None:
    broker, pairs, keyring, topics = _cluster(2)
    nodes = [
        Peer(
            AgentTrust(p, keyring=keyring),
            InMemoryBus(broker, topics=topics),
            topics=topics,
            gossip_options=FAST,
            node_options=NODE,
            options=PEER,
        )
        for p in pairs
    ]
    await _start(nodes)
    attacker = InMemoryBus(broker, topics=topics)
    dlq = await attacker.subscribe([topics.dead_letter], group="dlq-reader")
    try:
        digest = GossipDigest(buckets=(b"",) * 8, entries=0)
        unsigned = Envelope.of(digest, sender="n0", workflow_id=WF)
        # Signed with a key the keyring does not hold for n0: a forgery.
        forged = EnvelopeSigner("n0", generate_keypair("n0").private_key).sign(
            Envelope.of(digest, sender="n0", workflow_id=WF)
        )
        await attacker.publish(topics.gossip, unsigned)
        await attacker.publish(topics.gossip, forged)
        await nodes[0].set_variable(WF, "after-attack", 1)
        await _until(lambda: nodes[1].get(WF).value("after-attack") == 1)
        await _until(
            lambda: all(
                n.stats["rejected_unsigned"] == 1 and n.stats["rejected_forged"] == 1 for n in nodes
            )
        )
        letters = []
        while len(letters) < 2:
            batch = await dlq.poll(timeout_ms=1000)
            assert batch, "dead letters missing"
            letters += [d.envelope.payload_model(DeadLetter) for d in batch]
        letters += [d.envelope.payload_model(DeadLetter) for d in await dlq.poll(timeout_ms=500)]
        # Both nodes refused both records, but each record is dead-lettered once (issue 8, defect 10).
        assert sorted(letter.reason for letter in letters) == ["forged", "unsigned"]
        assert {letter.consumer for letter in letters} <= {"n0", "n1"}
    finally:
        await _close(nodes)
        await attacker.aclose()


async def test_node_restores_its_maps_after_a_restart_before_hearing_from_peers() -> None:
    broker, pairs, keyring, topics = _cluster(1)
    store = InMemoryContextMapStore()
    first = Peer(
        AgentTrust(pairs[0], keyring=keyring),
        InMemoryBus(broker, topics=topics),
        topics=topics,
        store=ContextMapArchive(store),
        gossip_options=FAST,
        node_options=NODE,
        options=PEER,
    )
    await first.start()
    await first.set_variable(WF, "a", 1)
    await first.set_variable("wf-other", "b", [1, 2])
    await _until(lambda: store.saves >= 2)
    await first.aclose()
    saved_map = first.get(WF)

    second = Peer(
        AgentTrust(pairs[0], keyring=keyring),
        InMemoryBus(broker, topics=topics),
        topics=topics,
        store=ContextMapArchive(store),
        gossip_options=FAST,
        node_options=NODE,
        options=PEER,
    )
    await second.start()
    try:
        assert second.restored == {WF: 1, "wf-other": 1}
        assert second.get(WF) == saved_map
        # The clock moved past the restored entries: a rewrite after the restart wins.
        entry = await second.set_variable(WF, "a", 2)
        assert entry.hlc > saved_map.entry("a").hlc  # type: ignore[union-attr]
    finally:
        await second.aclose()


async def test_unreachable_store_does_not_stop_writes_and_saves_resume() -> None:
    broker, pairs, keyring, topics = _cluster(1)
    store = InMemoryContextMapStore()
    store.available = False
    node = Peer(
        AgentTrust(pairs[0], keyring=keyring),
        InMemoryBus(broker, topics=topics),
        topics=topics,
        store=ContextMapArchive(store),
        gossip_options=FAST,
        node_options=NODE,
        options=PEER,
    )
    await node.start()  # restore fails, start does not
    try:
        assert node.stats["restore_errors"] == 1
        await node.set_variable(WF, "x", 1)
        await _until(lambda: node.stats["save_errors"] >= 1)
        store.available = True
        await _until(lambda: (WF, "n0") in store.saved, timeout_s=3)
        assert (await ContextMapArchive(store).load(WF, "n0")).value("x") == 1  # type: ignore[union-attr]
    finally:
        await node.aclose()


async def test_writes_do_not_block_on_a_cut_bus_and_anti_entropy_repairs_after_heal() -> None:
    broker, pairs, keyring, topics = _cluster(2)
    cut_bus = CuttableBus(InMemoryBus(broker, topics=topics))
    a = Peer(
        AgentTrust(pairs[0], keyring=keyring),
        InMemoryBus(broker, topics=topics),
        topics=topics,
        gossip_options=FAST,
        node_options=NODE,
        options=PEER,
    )
    b = Peer(
        AgentTrust(pairs[1], keyring=keyring),
        cut_bus,
        topics=topics,
        gossip_options=FAST,
        node_options=NODE,
        options=PEER,
    )  # type: ignore[arg-type]
    await _start([a, b])
    try:
        cut_bus.cut = True
        await asyncio.wait_for(b.set_variable(WF, "while-cut", "b"), 0.5)
        await a.set_variable(WF, "majority", "a")
        await asyncio.sleep(0.2)
        assert a.get(WF).value("while-cut") is None
        assert b.stats["dropped_bus_error"] >= 1
        cut_bus.cut = False
        await _until(lambda: a.get(WF) == b.get(WF) and len(a.get(WF)) == 2)
    finally:
        await _close([a, b])


async def test_minority_proposal_stays_tentative_while_cut_and_is_accepted_after_heal() -> None:
    broker, pairs, keyring, topics = _cluster(4)
    validators = {p.agent_id for p in pairs}
    cut_bus = CuttableBus(InMemoryBus(broker, topics=topics))
    nodes = [
        Peer(
            AgentTrust(p, keyring=keyring),
            cut_bus if i == 3 else InMemoryBus(broker, topics=topics),
            topics=topics,
            validators=validators,  # type: ignore[arg-type]
            gossip_options=FAST,
            node_options=NODE,
            options=PEER,
        )
        for i, p in enumerate(pairs)
    ]
    await _start(nodes)
    try:
        cut_bus.cut = True
        majority = await nodes[0].propose(WF, "order_id", "o-1")
        minority = await nodes[3].propose(WF, "patient_id", "p-9")
        await _until(lambda: all(n.decision(majority.id) is not None for n in nodes[:3]))
        assert all(n.decision(majority.id).outcome == "accepted" for n in nodes[:3])  # type: ignore[union-attr]
        await _until(
            lambda: all(
                n.get(WF).entry("order_id") is not None
                and n.get(WF).entry("order_id").status == "accepted"
                for n in nodes[:3]
            )
        )  # type: ignore[union-attr]
        await asyncio.sleep(0.3)  # several resend periods: still no quorum on the minority side
        assert nodes[3].decision(minority.id) is None
        assert nodes[3].get(WF).entry("patient_id").status == "tentative"  # type: ignore[union-attr]
        cut_bus.cut = False
        await _until(lambda: all(n.decision(minority.id) is not None for n in nodes), timeout_s=5)
        assert all(n.decision(minority.id).outcome == "accepted" for n in nodes)  # type: ignore[union-attr]
        await _until(lambda: all(n.get(WF) == nodes[0].get(WF) for n in nodes))
        assert {n.get(WF).entry(k).status for n in nodes for k in ("order_id", "patient_id")} == {
            "accepted"
        }  # type: ignore[union-attr]
    finally:
        await _close(nodes)


async def test_propose_without_validators_is_a_usage_error() -> None:
    from mesh.errors import UsageError

    _, pairs, keyring, topics = _cluster(1)
    node = Peer(AgentTrust(pairs[0], keyring=keyring), InMemoryBus(), topics=topics)
    with pytest.raises(UsageError, match="no validators"):
        await node.propose(WF, "k", 1)


async def test_envelopes_addressed_to_another_peer_are_left_to_it() -> None:
    from protocols import GossipSyncRequest

    broker, pairs, keyring, topics = _cluster(3)
    nodes = [
        Peer(
            AgentTrust(p, keyring=keyring),
            InMemoryBus(broker, topics=topics),
            topics=topics,
            gossip_options=FAST,
            node_options=NODE,
            options=PEER,
        )
        for p in pairs
    ]
    await _start(nodes)
    attacker = InMemoryBus(broker, topics=topics)
    try:
        unsigned_sync = GossipSyncRequest(to="n1", bucket_count=8, buckets=(0,))
        await attacker.publish(
            topics.gossip, Envelope.of(unsigned_sync, sender="n0", workflow_id=WF)
        )
        await _until(lambda: nodes[1].stats["rejected_unsigned"] == 1)
        await _until(lambda: all(n.stats["skipped_not_for_me"] >= 1 for n in (nodes[0], nodes[2])))
        # Only the addressee verified (and refused) it; the others dropped it unread.
        assert nodes[0].stats["rejected_unsigned"] == nodes[2].stats["rejected_unsigned"] == 0
    finally:
        await _close(nodes)
        await attacker.aclose()


async def test_only_one_digest_per_workflow_waits_on_a_stuck_broker() -> None:
    broker, pairs, keyring, topics = _cluster(1)
    release = asyncio.Event()

    class StuckBus(CuttableBus):
        async def publish(self, topic, envelope, *, key=None, headers=None):  # type: ignore[override]
            await release.wait()
            await self.inner.publish(topic, envelope, key=key, headers=headers)

    node = Peer(
        AgentTrust(pairs[0], keyring=keyring),
        StuckBus(InMemoryBus(broker, topics=topics)),
        topics=topics,  # type: ignore[arg-type]
        gossip_options=GossipOptions(anti_entropy_period_ms=60_000),
        node_options=NODE,
        options=PEER,
    )
    await node.start()
    try:
        node.get(WF)
        for _ in range(5):
            await node.node.gossip.send_digest(WF)
        assert node.stats["skipped_digest"] == 4
        release.set()
        await _until(lambda: node.stats["published"] == 1)
        await node.node.gossip.send_digest(WF)  # the first one landed: the next goes out again
        await _until(lambda: node.stats["published"] == 2)
    finally:
        await node.aclose()
