"""SIGKILL a Redis master in the middle of checkpoint writes: no acknowledged checkpoint is lost.

Writers claim and write checkpoints of many workflows through ``RedisStateStore`` with
``wait_replicas=1`` (``WAIT``), remembering every write the store acknowledged. The master holding
some of them is SIGKILLed mid-run; its replica is promoted (by the cluster, or by the sentinels);
the killed node is started again and rejoins as a replica, so writes are acknowledged again. Then
every acknowledged version must read back with its data, and every claimed epoch must still fence.

``test_without_wait_*`` shows what the check guards against: with the replica cut off (SIGSTOP,
link dropped) a write the master acknowledged without ``WAIT`` is gone after the failover, while with ``WAIT``
the same write is refused (``ReplicationTimeout``) instead of acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from mesh.dev import LocalRedisCluster, LocalRedisSentinel, RedisNode
from mesh.errors import CheckpointNotFound, ReplicationTimeout, StoreUnavailable
from mesh.store import RedisStateStore, step_key, workflow_tag
from mesh.store.redis import RedisConnection, parse_sentinels

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.slow,
    pytest.mark.timeout(300),
    # redis-py's cluster client swaps out the node objects of a dead master and closes their
    # connections in fire-and-forget tasks; the sockets to the SIGKILLed node are still open when
    # the test's loop ends. That is redis-py's leak, not the store's (it closes what it opened).
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

WORKFLOWS = 24
WRITERS = 4


@dataclass
class Ledger:
    """What the store acknowledged, per key."""

    acked: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)
    acked_after_kill: dict[str, float] = field(default_factory=dict)
    """Key -> monotonic time of its first acknowledged write after the kill."""
    killed_at: float | None = None
    watched: set[str] = field(default_factory=set)
    """Keys of the killed master."""
    resumed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once every watched key had a write acknowledged after the kill."""


async def _retry(what: Callable[[], object]) -> object:
    for _ in range(400):
        try:
            return await what()  # type: ignore[misc]
        except StoreUnavailable:
            await asyncio.sleep(0.05)
    raise AssertionError("the store did not come back")


async def _writer(
    store: RedisStateStore, keys: list[str], ledger: Ledger, stop: asyncio.Event
) -> None:
    for key in keys:
        ledger.epochs[key] = int(await _retry(lambda key=key: store.claim(key, "writer")))  # type: ignore[call-overload]
    n = 0
    while not stop.is_set():
        for key in keys:
            n += 1
            data = f"{key}#{n}".encode()
            wf = key.split("{", 1)[1].split("}", 1)[0]
            try:
                ckpt = await store.write(
                    key, data, epoch=ledger.epochs[key], owner="writer", workflow_id=wf
                )
            except (
                StoreUnavailable
            ) as exc:  # ReplicationTimeout too: not acknowledged, so not recorded
                ledger.failures[type(exc).__name__] += 1
                await asyncio.sleep(0.05)
                continue
            ledger.acked[key] = (ckpt.version, data)
            if ledger.killed_at is not None and key not in ledger.acked_after_kill:
                ledger.acked_after_kill[key] = time.monotonic()
                if ledger.watched <= set(ledger.acked_after_kill):
                    ledger.resumed.set()


async def _verify(store: RedisStateStore, ledger: Ledger) -> None:
    lost = []
    for key, (version, data) in sorted(ledger.acked.items()):
        try:
            got = await store.read(key, version)
        except CheckpointNotFound:
            lost.append((key, version))
            continue
        assert got.data == data, (key, version, got.data, data)
        assert (await store.read(key)).version >= version
    assert not lost, f"acknowledged checkpoints lost after the failover: {lost}"
    for key, epoch in ledger.epochs.items():
        assert await store.current_epoch(key) >= epoch, f"the fence of {key} went back"


async def _run_with_a_kill(
    store: RedisStateStore,
    victim: RedisNode,
    victim_keys: set[str],
    *,
    wait_failover: Callable[[], None],
) -> Ledger:
    keys = [step_key(f"wf-{i}", "s") for i in range(WORKFLOWS)]
    ledger, stop = Ledger(watched=set(victim_keys)), asyncio.Event()
    writers = [
        asyncio.create_task(_writer(store, keys[i::WRITERS], ledger, stop)) for i in range(WRITERS)
    ]
    try:
        await asyncio.sleep(1.5)
        before = {k for k in ledger.acked if k in victim_keys}
        assert before, "no write reached the master before the kill"
        ledger.killed_at = time.monotonic()
        await asyncio.to_thread(victim.stop, kill=True)  # SIGKILL, mid-run
        await asyncio.to_thread(wait_failover)
        promoted_at = time.monotonic()
        await asyncio.to_thread(victim.start)  # it rejoins as a replica of the promoted one
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ledger.resumed.wait(), timeout=60)
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*writers)
    resumed = (
        max(ledger.acked_after_kill[k] for k in victim_keys)
        if victim_keys <= set(ledger.acked_after_kill)
        else None
    )
    print(
        f"\nfailover: promoted {promoted_at - ledger.killed_at:.1f} s after SIGKILL; writes of the killed "
        f"master's keys acknowledged again after {(resumed or float('nan')) - ledger.killed_at:.1f} s; "
        f"{len(ledger.acked)} keys, failures while it lasted: {dict(ledger.failures)}"
    )
    assert resumed is not None, (
        f"writes to the failed-over keys never resumed: {dict(ledger.failures)}"
    )
    await _verify(store, ledger)
    return ledger


async def test_cluster_master_sigkill_loses_no_acknowledged_checkpoint(
    make_redis_cluster: Callable[..., LocalRedisCluster],
) -> None:
    cluster = make_redis_cluster(node_timeout_ms=1000)
    victim = cluster.master_of(workflow_tag("wf-0"))
    victim_keys = {
        step_key(f"wf-{i}", "s")
        for i in range(WORKFLOWS)
        if cluster.master_of(workflow_tag(f"wf-{i}")) is victim
    }
    store = RedisStateStore.connect(
        RedisConnection(url=cluster.nodes[-1].address, mode="cluster"),
        key_prefix="ha:",
        keep_versions=100_000,
        wait_replicas=1,
        wait_timeout_ms=1000,
        socket_timeout_s=2,
    )

    def promoted() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if cluster.master_of(workflow_tag("wf-0")) is not victim:
                    return
            except Exception:  # a node still electing
                pass
            time.sleep(0.1)
        raise AssertionError("no replica was promoted")

    try:
        await _run_with_a_kill(store, victim, victim_keys, wait_failover=promoted)
    finally:
        await store.aclose()


async def test_sentinel_master_sigkill_loses_no_acknowledged_checkpoint(
    make_redis_sentinel: Callable[..., LocalRedisSentinel],
) -> None:
    sentinels = make_redis_sentinel(down_after_ms=1000)
    victim = sentinels.current_master()
    env = sentinels.env()
    store = RedisStateStore.connect(
        RedisConnection(
            url=env["MESH_REDIS_URL"],
            mode="sentinel",
            sentinels=parse_sentinels(env["MESH_REDIS_SENTINELS"]),
            sentinel_master=env["MESH_REDIS_SENTINEL_MASTER"],
        ),
        key_prefix="ha:",
        keep_versions=100_000,
        wait_replicas=1,
        wait_timeout_ms=1000,
        socket_timeout_s=2,
    )

    def promoted() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if sentinels.current_master() is not victim:
                    return
            except Exception:
                pass
            time.sleep(0.1)
        raise AssertionError("the sentinels promoted no replica")

    try:
        await _run_with_a_kill(
            store,
            victim,
            {step_key(f"wf-{i}", "s") for i in range(WORKFLOWS)},
            wait_failover=promoted,
        )
    finally:
        await store.aclose()


async def test_without_wait_a_failover_loses_an_acknowledged_write_and_with_wait_it_is_never_acknowledged(
    make_redis_cluster: Callable[..., LocalRedisCluster],
) -> None:
    cluster = make_redis_cluster(node_timeout_ms=1000)
    wf = "wf-lost"
    key = step_key(wf, "s")
    master = cluster.master_of(workflow_tag(wf))
    (replica,) = cluster.replicas_of(master)
    connection = RedisConnection(url=replica.address, mode="cluster")
    plain = RedisStateStore.connect(connection, key_prefix="ha:", socket_timeout_s=2)
    waiting = RedisStateStore.connect(
        connection, key_prefix="ha:", wait_replicas=1, wait_timeout_ms=500, socket_timeout_s=2
    )
    try:
        epoch = await plain.claim(key, "w")
        await waiting.write(key, b"replicated", epoch=epoch, workflow_id=wf)
        pid = replica.pid()
        assert pid is not None
        # Cut replication for real: SIGSTOP alone is not enough, the kernel would still buffer the
        # stream for the stopped replica. The master drops its link, and the stopped replica cannot
        # come back to it.
        os.kill(pid, signal.SIGSTOP)
        await asyncio.to_thread(master.command, "CLIENT", "KILL", "TYPE", "replica")
        try:
            acked = await plain.write(
                key, b"acknowledged by the master alone", epoch=epoch, workflow_id=wf
            )
            with pytest.raises(ReplicationTimeout, match="0 of 1 replica"):
                await waiting.write(key, b"refused", epoch=epoch, workflow_id=wf)
            await asyncio.to_thread(master.stop, kill=True)
        finally:
            os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if cluster.master_of(workflow_tag(wf)) is replica:
                    break
            except Exception:
                pass
            await asyncio.sleep(0.1)
        latest = await _retry(lambda: plain.read(key))
        # The master's acknowledgement without WAIT meant nothing: the promoted replica never had it.
        assert latest.data == b"replicated" and latest.version < acked.version  # type: ignore[attr-defined]
    finally:
        await plain.aclose()
        await waiting.aclose()
