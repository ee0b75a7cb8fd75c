"""Real network cuts (toxiproxy) and a real Redis restart: gossip stays AP, votes stay CP, the journal replays.

Layout of the partition test: private Kafka + Redis (``dev_services_factory``); the broker has a
second listener, PROXIED, that advertises a toxiproxy port, so the minority node (which
bootstraps through the proxy) keeps reconnecting through it. Its Redis goes through a second
proxy. Cutting both proxies isolates the minority from the broker and from Redis while the
majority (3 of n = 4 validators, f = 1) keeps both.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from mesh.bus import KafkaBus
from mesh.dev import DevServices, free_port
from mesh.dev.toxiproxy import Toxiproxy
from mesh.gossip import ContextMapArchive, GossipNodeOptions, GossipOptions
from mesh.peer import Peer, PeerOptions
from mesh.runtime.trust import AgentTrust
from mesh.security import Keyring, generate_keypair
from mesh.store import (
    JournalingStateStore,
    JournalOptions,
    ProvisionalCheckpoint,
    RedisContextMapStore,
    RedisStateStore,
    agent_key,
)
from protocols import Topics

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

WF = "wf-partition"
GOSSIP = GossipOptions(anti_entropy_period_ms=300)
NODE = GossipNodeOptions(persist_debounce_ms=50, poll_timeout_ms=200, start_timeout_s=60)
PEER = PeerOptions(vote_resend_period_ms=500)


async def _until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout_s} s")
        await asyncio.sleep(0.05)


def _dedup_consecutive(items: list[bytes]) -> list[bytes]:
    return [k for k, _ in itertools.groupby(items)]


async def test_partition_minority_keeps_writing_cannot_decide_and_converges_after_heal(
    dev_services_factory: Callable[..., DevServices], tmp_path: Path
) -> None:
    proxied_port, proxy_port = free_port(), free_port()
    services = dev_services_factory(kafka_proxied_port=proxied_port, kafka_proxied_advertised_port=proxy_port)
    await asyncio.to_thread(services.up)
    toxi = await asyncio.to_thread(Toxiproxy(log_path=tmp_path / "toxiproxy.log").start)
    cfg = services.config
    await asyncio.to_thread(toxi.proxy, "kafka", proxied_port, listen_port=proxy_port)
    redis_proxy_port = await asyncio.to_thread(toxi.proxy, "redis", cfg.redis_port)
    minority_redis_url = f"redis://{cfg.host}:{redis_proxy_port}/0"

    topics = Topics("part")
    await KafkaBus(cfg.kafka_bootstrap, topics=topics, partitions=2).ensure_topics(list(topics.all()))
    pairs = [generate_keypair(f"n{i}") for i in range(1, 5)]
    keyring = Keyring({p.agent_id: p.public_key for p in pairs})
    validators = {p.agent_id for p in pairs}
    majority_redis = aioredis.Redis.from_url(cfg.redis_url)
    minority_redis = aioredis.Redis.from_url(minority_redis_url, socket_timeout=1, socket_connect_timeout=1)
    buses = [
        KafkaBus(cfg.kafka_bootstrap if i < 3 else cfg.kafka_proxied_bootstrap or "", topics=topics,
                 client_id=p.agent_id, create_topics=[], request_timeout_ms=60_000)
        for i, p in enumerate(pairs)
    ]
    nodes = [
        Peer(AgentTrust(p, keyring=keyring), bus, topics=topics, validators=validators,
             store=ContextMapArchive(RedisContextMapStore(majority_redis if i < 3 else minority_redis, prefix="part:")),
             gossip_options=GOSSIP, node_options=NODE, options=PEER)
        for i, (p, bus) in enumerate(zip(pairs, buses, strict=True))
    ]
    majority, minority = nodes[:3], nodes[3]
    journal = JournalingStateStore(
        RedisStateStore.from_url(minority_redis_url, key_prefix="part:", keep_versions=1000, socket_timeout_s=1),
        tmp_path / "journal",
        agent_id="n4",
        options=JournalOptions(retry_interval_s=0.2, max_retry_interval_s=1.0),
    )
    journal.start()
    direct_store = RedisStateStore.from_url(cfg.redis_url, key_prefix="part:", keep_versions=1000)
    try:
        for bus in buses:
            await bus.start()
        await asyncio.gather(*(n.start() for n in nodes))
        epoch = await journal.claim(agent_key("n4"), "n4")
        await journal.write(agent_key("n4"), b"ckpt-0", epoch=epoch)
        for node in nodes:
            await node.set_variable(WF, f"hello-{node.agent_id}", True)
        await _until(lambda: all(len(n.get(WF)) == 4 for n in nodes), 30, "baseline convergence")

        # -- cut the minority off from Kafka and Redis ------------------------------------------
        await asyncio.to_thread(toxi.cut, "kafka", "redis")
        majority_names = [f"maj-{i}" for i in range(9)]
        minority_names = [f"min-{i}" for i in range(6)]
        for i, name in enumerate(majority_names):
            await majority[i % 3].set_variable(WF, name, {"i": i})
        for i, name in enumerate(minority_names):
            await asyncio.wait_for(minority.set_variable(WF, name, {"i": i}), 2.0)  # never blocks on the cut
        checkpoints = [await journal.write(agent_key("n4"), f"ckpt-{i}".encode(), epoch=epoch) for i in range(1, 21)]
        assert all(isinstance(c, ProvisionalCheckpoint) for c in checkpoints)
        assert (await journal.read(agent_key("n4"))).data == b"ckpt-20"
        accepted_side = await majority[0].propose(WF, "order_id", "o-1")
        minority_side = await minority.propose(WF, "patient_id", "p-9")
        await _until(
            lambda: all(n.decision(accepted_side.id) is not None for n in majority), 20, "majority decides its own proposal"
        )
        assert all(n.decision(accepted_side.id).outcome == "accepted" for n in majority)  # type: ignore[union-attr]
        await _until(lambda: all(len(n.get(WF)) == 4 + 9 + 1 for n in majority), 20, "majority converges while cut")
        await asyncio.sleep(3.0)  # ten anti-entropy periods, six vote resends: nothing crosses the cut
        assert minority.decision(minority_side.id) is None
        assert minority.decision(accepted_side.id) is None
        assert minority.get(WF).entry("patient_id").status == "tentative"  # type: ignore[union-attr]
        assert not any(minority.get(WF).value(name) for name in majority_names)
        assert not any(n.get(WF).value(name) for n in majority for name in minority_names)
        assert journal.pending == 20
        assert minority.stats["save_errors"] >= 1

        # -- heal ------------------------------------------------------------------------------
        await asyncio.to_thread(toxi.heal, "kafka", "redis")
        everything = {f"hello-{n.agent_id}" for n in nodes} | set(majority_names) | set(minority_names) | {"order_id", "patient_id"}
        await _until(
            lambda: all({name for name, _ in n.get(WF).items()} == everything for n in nodes)
            and all(n.get(WF) == nodes[0].get(WF) for n in nodes),
            60,
            "every variable on every node, replicas equal",
        )
        await _until(lambda: all(n.decision(minority_side.id) is not None for n in nodes), 30, "minority proposal decided after heal")
        assert all(n.decision(minority_side.id).outcome == "accepted" for n in nodes)  # type: ignore[union-attr]
        await _until(
            lambda: all(n.get(WF).entry(k).status == "accepted" for n in nodes for k in ("order_id", "patient_id")),  # type: ignore[union-attr]
            30,
            "both facts accepted everywhere",
        )
        await _until(lambda: journal.pending == 0, 30, "journal replayed")
        latest = await direct_store.read(agent_key("n4"))
        history = [(await direct_store.read(agent_key("n4"), v)).data for v in range(1, latest.version + 1)]
        assert _dedup_consecutive(history) == [f"ckpt-{i}".encode() for i in range(21)]
        # The minority's own map reached Redis too once it was reachable again.
        saved_store = ContextMapArchive(RedisContextMapStore(majority_redis, prefix="part:"))
        for _ in range(100):
            saved = await saved_store.load(WF, "n4")
            if saved is not None and {name for name, _ in saved.items()} == everything:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the minority's map was not saved after the heal")
    finally:
        for node in nodes:
            await node.aclose()
        for bus in buses:
            await bus.aclose()
        await journal.aclose()
        await direct_store.aclose()
        await majority_redis.aclose()
        await minority_redis.aclose()
        await asyncio.to_thread(toxi.stop)


async def test_journal_rides_out_a_redis_restart_and_every_write_lands_in_order(
    dev_services_factory: Callable[..., DevServices], tmp_path: Path
) -> None:
    services = dev_services_factory()
    await asyncio.to_thread(services.up, services=("redis",))
    inner = RedisStateStore.from_url(services.redis_url, key_prefix="jr:", keep_versions=1000, socket_timeout_s=0.5)
    journal = JournalingStateStore(inner, tmp_path / "journal", agent_id="w1",
                                   options=JournalOptions(retry_interval_s=0.1, max_retry_interval_s=0.5))
    journal.start()
    key = agent_key("w1")
    total = 150
    try:
        epoch = await journal.claim(key, "w1")

        async def writer() -> None:
            for i in range(total):
                await journal.write(key, f"w-{i}".encode(), epoch=epoch, owner="w1")
                await asyncio.sleep(0.01)

        writing = asyncio.create_task(writer())
        await asyncio.sleep(0.3)
        await asyncio.to_thread(services.stop_redis)
        await asyncio.sleep(1.0)
        assert journal.pending > 0, "writes during the outage must be journaled"
        await asyncio.to_thread(services.start_redis)
        await writing
        assert journal.stats["journaled"] > 0
        await _until(lambda: journal.pending == 0, 30, "journal replayed after the restart")
        check = RedisStateStore.from_url(services.redis_url, key_prefix="jr:", keep_versions=1000)
        try:
            latest = await check.read(key)
            history = [(await check.read(key, v)).data for v in range(1, latest.version + 1)]
        finally:
            await check.aclose()
        # At-least-once: a write cut off mid-reply may land twice in a row, never out of order.
        assert _dedup_consecutive(history) == [f"w-{i}".encode() for i in range(total)]
        assert len(history) - total <= 1
    finally:
        await journal.aclose()
