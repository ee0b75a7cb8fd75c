"""Gossip agents over a faulty in-memory network: convergence, quarantine, partitions, signing."""

from __future__ import annotations

import asyncio
import random

import pytest

from mesh.gossip import (
    ClockDriftError,
    ColdValueError,
    ColdValues,
    CompactionOptions,
    GossipAgent,
    GossipOptions,
    HybridLogicalClock,
    MemoryGossipNetwork,
    NetworkFaults,
)
from mesh.security import EnvelopeSigner, EnvelopeVerifier, Keyring, generate_keypair
from mesh.store import InMemoryBlobStore
from protocols import Envelope, GossipDigest, HlcTimestamp

WF = "wf-1"


def _mesh(n: int, *, faults: NetworkFaults, seed: int, **agent_kwargs):
    network = MemoryGossipNetwork(faults=faults, seed=seed)
    agents = []
    for i in range(n):
        agent = GossipAgent(f"p{i:02d}", network.transport(f"p{i:02d}"), options=GossipOptions(bucket_count=8), **agent_kwargs)
        network.register(agent.agent_id, agent.handle)
        agent.join(WF)
        agents.append(agent)
    return network, agents


async def _anti_entropy_until_converged(network, agents, *, max_rounds: int = 30) -> int:
    for rounds in range(1, max_rounds + 1):
        for agent in agents:
            await agent.send_digest(WF)
        await network.pump()
        if all(a.maps[WF] == agents[0].maps[WF] for a in agents):
            return rounds
    raise AssertionError(f"not converged after {max_rounds} anti-entropy rounds")


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_many_peers_converge_despite_drops_duplicates_and_reordering(seed):
    faults = NetworkFaults(drop_rate=0.3, duplicate_rate=0.2, reorder=True)
    network, agents = _mesh(12, faults=faults, seed=seed)
    rng = random.Random(seed)
    for step in range(60):
        agent = rng.choice(agents)
        key = f"k{rng.randrange(8)}"
        if rng.random() < 0.7:
            await agent.set(WF, key, {"step": step, "by": agent.agent_id}, priority=rng.randrange(4))
        else:
            await agent.add(WF, "ids", f"id-{rng.randrange(10)}")
        if rng.random() < 0.5:
            await network.pump(max_messages=rng.randrange(1, 5))
    await network.pump()
    diverged_before = sum(a.maps[WF] != agents[0].maps[WF] for a in agents)
    rounds = await _anti_entropy_until_converged(network, agents)
    assert diverged_before > 0  # the faults did cause divergence that anti-entropy repaired
    assert rounds <= 30
    assert len(agents[0].maps[WF]) == 9


async def test_without_faults_deltas_alone_converge_and_digests_cost_nothing_more():
    network, agents = _mesh(16, faults=NetworkFaults(), seed=0)
    await agents[0].set(WF, "token", "abc")
    await agents[5].add(WF, "ids", 1, 2)
    await network.pump()
    assert all(a.maps[WF] == agents[0].maps[WF] for a in agents)
    sent = network.sent
    for agent in agents:
        await agent.send_digest(WF)
    await network.pump()
    assert network.sent == sent + 16  # equal digests: nobody asks for anything


async def test_partitioned_halves_keep_writing_and_converge_after_heal():
    network, agents = _mesh(6, faults=NetworkFaults(), seed=0)
    left = {a.agent_id for a in agents[:3]}
    network.partition(left)
    await agents[0].set(WF, "x", "left")
    await agents[4].set(WF, "x", "right")
    await agents[4].set(WF, "y", 1)
    await network.pump()
    assert agents[1].maps[WF].value("x") == "left"
    assert agents[5].maps[WF].value("x") == "right"
    network.heal()
    await _anti_entropy_until_converged(network, agents)
    assert {a.maps[WF].value("y") for a in agents} == {1}


async def test_quarantined_peer_is_ignored_and_so_are_entries_it_wrote():
    quarantined = {"p02"}
    network, agents = _mesh(4, faults=NetworkFaults(), seed=0, is_quarantined=quarantined.__contains__)
    await agents[2].set(WF, "evil", "lie")
    await network.pump()
    assert agents[0].maps[WF].get("evil") is None
    assert agents[0].stats["ignored_quarantined"] == 1
    # A non-quarantined peer relaying the liar's entry does not get it in either.
    agents[3].maps[WF].merge(agents[2].maps[WF].delta_since(0))
    await agents[3].flush(WF)
    await network.pump()
    assert agents[0].maps[WF].get("evil") is None


async def test_entries_stamped_after_their_envelope_are_dropped():
    from mesh.gossip import ContextMap, encode_delta

    agent = GossipAgent("me", _noop)
    liar = ContextMap(WF, "liar", clock=HybridLogicalClock(wall_ms=lambda: 9_999_999_999_999))
    liar.set("token", "wins-forever")
    liar.add("ids", "x")
    honest = ContextMap(WF, "peer", clock=HybridLogicalClock(wall_ms=lambda: 1_000))
    honest.set("order", 1)
    delta = liar.delta_since(0)
    merged = type(delta)(delta.registers + honest.delta_since(0).registers, delta.sets)
    env = Envelope.of(encode_delta(merged), sender="peer", workflow_id=WF, hlc=HlcTimestamp(2_000, 0))
    agent.clock = HybridLogicalClock(wall_ms=lambda: 2_000)
    await agent.handle(env)
    assert agent.maps[WF].value("order") == 1
    assert agent.maps[WF].get("token") is None and agent.maps[WF].set_of("ids") is None
    assert agent.stats["ignored_entries"] == 2


async def test_remote_timestamps_beyond_the_drift_bound_are_refused():
    agent = GossipAgent("me", _noop, clock=HybridLogicalClock(wall_ms=lambda: 1_000, max_drift_ms=50))
    future = Envelope.of(GossipDigest(buckets=(b"",)), sender="peer", workflow_id=WF, hlc=HlcTimestamp(2_000, 0))
    with pytest.raises(ClockDriftError):
        await agent.handle(future)


async def test_signed_gossip_passes_the_verifier_between_agents():
    keys = {name: generate_keypair(name) for name in ("a", "b")}
    keyring = Keyring({n: k.public_key for n, k in keys.items()})
    network = MemoryGossipNetwork()
    agents = {}
    for name, pair in keys.items():
        verifier = EnvelopeVerifier(keyring)
        agent = GossipAgent(name, network.transport(name), sign=EnvelopeSigner(name, pair.private_key))

        async def handle(env, agent=agent, verifier=verifier):
            await agent.handle(verifier.verify(env))

        network.register(name, handle)
        agents[name] = (agent, verifier)
    await agents["a"][0].set(WF, "x", 42)
    await network.pump()
    assert agents["b"][0].maps[WF].value("x") == 42
    assert agents["b"][1].accepted == 1


async def test_oversized_values_are_gossiped_as_a_pointer_and_resolved_from_cold_storage():
    store = InMemoryBlobStore()
    cold = ColdValues(store, options=CompactionOptions(token_budget=10, preview_chars=12))
    network, agents = _mesh(2, faults=NetworkFaults(), seed=0, cold=cold)
    big = "word " * 1000
    entry = await agents[0].set(WF, "report", big)
    secret = await agents[0].set(WF, "key", "k" * 200, secret=True)
    await agents[0].set(WF, "small", "tiny")
    await network.pump()
    remote = agents[1].maps[WF].get("report")
    assert remote is not None and remote.cold_ref and remote.value == big[:12] + "..."
    # What gossip carries for both cold values together is smaller than the report alone.
    assert len(agents[1].maps[WF].delta_since(0).to_msgpack()) < len(big)
    assert await cold.resolve(remote) == big
    assert agents[1].maps[WF].get("key").value is None  # type: ignore[union-attr] - no preview of secrets
    assert await cold.resolve(secret) == "k" * 200
    assert agents[1].maps[WF].value("small") == "tiny"
    await store.put(entry.cold_ref, await store.get(secret.cold_ref))
    with pytest.raises(ColdValueError, match="does not match"):
        await cold.resolve(remote)


async def test_run_sends_digests_periodically_until_closed():
    sent: list[Envelope] = []

    async def send(env: Envelope) -> None:
        sent.append(env)

    agent = GossipAgent("me", send, options=GossipOptions(anti_entropy_period_ms=10))
    agent.join(WF)
    agent.start()
    await asyncio.sleep(0.08)
    await agent.aclose()
    count = len(sent)
    assert count >= 2 and all(e.kind == "gossip.digest" for e in sent)
    await asyncio.sleep(0.03)
    assert len(sent) == count


async def _noop(_env: Envelope) -> None:
    return None
