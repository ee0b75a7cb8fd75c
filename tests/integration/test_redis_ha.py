"""The Redis adapters on a real Redis Cluster (3 masters + 3 replicas) and through real Sentinels.

* The store, run-index, dead-letter-claims and rate-limiter contracts pass on the cluster,
  checkpoints acknowledged with ``WAIT 1``.
* Every component that writes Redis keys of a workflow (checkpoints, secrets, the workflow index,
  the run index, gossip maps, vote ledgers) puts them in the workflow's one slot, and every
  multi-key operation runs; the old key layout is refused by the cluster (CROSSSLOT), so this test
  fails if a key loses its hash tag.
* The store works through Sentinel.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from mesh.bus import RedisDeadLetterClaims
from mesh.dev import LocalRedisCluster, LocalRedisSentinel
from mesh.errors import ReplicationTimeout
from mesh.gossip import ContextMap, ContextMapArchive
from mesh.runtime.worker import secret_key
from mesh.security import DataCipher, KeyDirectory, generate_data_key, generate_keypair
from mesh.store import (
    RedisContextMapStore,
    RedisKeyringStore,
    RedisRunIndex,
    RedisStateStore,
    RedisStores,
    RedisVoteLedger,
    RunIndex,
    RunSummary,
    step_key,
    workflow_tag,
)
from mesh.store.redis import RedisConnection, parse_sentinels
from mesh.store.redis._checkpoints import _WRITE
from tests.contracts.run_index_contract import IndexFactory, RunIndexContract
from tests.contracts.store_contract import StateStoreContract
from tests.integration import test_store_redis as single

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _cluster_connection(cluster: LocalRedisCluster) -> RedisConnection:
    return RedisConnection(url=cluster.url, mode="cluster")


def _prefix() -> str:
    return f"ha{uuid.uuid4().hex[:10]}:"


class TestRedisStateStoreOnCluster(StateStoreContract):
    @pytest.fixture
    async def store(self, redis_cluster: LocalRedisCluster) -> AsyncIterator[RedisStateStore]:
        s = RedisStateStore.connect(
            _cluster_connection(redis_cluster),
            key_prefix=_prefix(),
            keep_versions=5,
            wait_replicas=1,
        )
        yield s
        await s.delete_prefix()
        await s.aclose()


@pytest.fixture
async def cluster_stores(redis_cluster: LocalRedisCluster) -> AsyncIterator[RedisStores]:
    stores = RedisStores(_cluster_connection(redis_cluster), prefix=_prefix())
    yield stores
    await stores.aclose()


class _OnCluster:
    """A single-node suite of tests/integration/test_store_redis.py, its stores on the cluster."""

    @pytest.fixture
    def stores(self, cluster_stores: RedisStores) -> RedisStores:
        return cluster_stores


class TestRedisKeyringStoreOnCluster(_OnCluster, single.TestRedisKeyringStore):
    pass


class TestRedisContextMapStoreOnCluster(_OnCluster, single.TestRedisContextMapStore):
    pass


class TestRedisVoteLedgerOnCluster(_OnCluster, single.TestRedisVoteLedger):
    pass


class TestRedisDeadLetterClaimsOnCluster(_OnCluster, single.TestRedisDeadLetterClaims):
    pass


class TestRedisRateLimiterOnCluster(_OnCluster, single.TestRedisRateLimiter):
    pass


class TestRedisRunIndexOnCluster(RunIndexContract):
    @pytest.fixture
    async def index(self, redis_cluster: LocalRedisCluster) -> AsyncIterator[RunIndex]:
        idx = RedisRunIndex.connect(_cluster_connection(redis_cluster), key_prefix=_prefix())
        yield idx
        await idx.aclose()

    @pytest.fixture
    async def index_factory(self, redis_cluster: LocalRedisCluster) -> AsyncIterator[IndexFactory]:
        made: list[RedisRunIndex] = []

        async def make() -> RunIndex:
            made.append(
                RedisRunIndex.connect(_cluster_connection(redis_cluster), key_prefix=_prefix())
            )
            return made[-1]

        yield make
        for idx in made:
            await idx.aclose()


async def test_the_old_key_layout_is_crossslot_on_the_cluster(
    redis_cluster: LocalRedisCluster,
) -> None:
    # What the checkpoint script did before keys carried the workflow's hash tag: the cluster refuses it.
    client = RedisCluster.from_url(redis_cluster.url)
    try:
        await client.initialize()
        # Sent to a node as is (redis-py would refuse it before sending): the server says CROSSSLOT.
        with pytest.raises(ResponseError, match="don't hash to the same slot"):  # CROSSSLOT
            await client.execute_command(
                "EVAL",
                _WRITE,
                2,
                "p:ckpt:{wf:w-old:step:a}",
                "p:wfidx:{w-old}",
                1,
                b"x",
                0,
                5,
                "",
                "1",
                target_nodes=client.get_default_node(),
            )
    finally:
        await client.aclose()


async def test_every_key_of_a_workflow_is_in_its_slot(redis_cluster: LocalRedisCluster) -> None:
    prefix, wf = _prefix(), f"wf-{uuid.uuid4().hex[:8]}"
    connection = _cluster_connection(redis_cluster)
    client = connection.client()
    store = RedisStateStore(client, key_prefix=prefix, wait_replicas=1)
    index = RedisRunIndex(client, key_prefix=prefix)
    try:
        # Checkpoints and a secret, each listed in the workflow's index (a two-key script).
        for key in (step_key(wf, "fetch"), step_key(wf, "report"), secret_key(wf, "auth_token")):
            await store.write(
                key, b"state", epoch=await store.claim(key, "a1"), owner="a1", workflow_id=wf
            )
        assert await store.expire_workflow(wf, 3600) == 3
        # The run index entry.
        assert await index.record(
            RunSummary(workflow_id=wf, name="recon", status="running", events=2, updated_ms=5)
        )
        assert [r.workflow_id for r in await index.list(name=wf)] == [wf]
        await index.expire(wf, 3600)
        # Gossip maps (sealed secrets) and their per-agent index.
        redis_maps = RedisContextMapStore(client, prefix=prefix)
        maps = ContextMapArchive(redis_maps, cipher=DataCipher.from_text(generate_data_key()))
        cmap = ContextMap(wf, "agent-1")
        cmap.set("auth_token", "tok-secret", secret=True)
        await maps.save(cmap)
        assert await maps.workflows("agent-1") == [wf]
        assert await maps.load(wf, "agent-1") == cmap
        # A finished workflow's map retires: out of the replica's index (another slot), expiring.
        await maps.retire(wf, "agent-1", ttl_s=3600)
        assert await maps.workflows("agent-1") == []
        assert 0 < await client.ttl(redis_maps.key(wf, "agent-1")) <= 3600
        # A validator's vote ledger.
        ledger = RedisVoteLedger(client, "v0", prefix=prefix, ttl_s=60)
        assert (await ledger.endorse(wf, "slot", 1, "hash")).status == "ok"
        # Shared keys (not per workflow): the keyring hash and dead-letter claims.
        keys = generate_keypair("agent-1")
        await KeyDirectory(RedisKeyringStore(client, prefix=prefix)).publish("agent-1", keys.public_key)
        assert "agent-1" in await KeyDirectory(RedisKeyringStore(client, prefix=prefix)).records()
        claims = RedisDeadLetterClaims(client, prefix=prefix)
        assert await claims.claim("t", 0, 7) is True
        assert await claims.claim("t", 0, 7) is False  # the first claim really landed

        found: list[bytes] = []
        async for k in client.scan_iter(match=f"{prefix}*", count=500):
            found.append(k)
        mine = [k for k in found if wf.encode() in k]
        # 3 checkpoint hashes, the workflow index, the run entry, the gossip map, the vote ledger.
        assert len(mine) == 7, sorted(mine)
        slot = await client.cluster_keyslot(workflow_tag(wf))
        assert {await client.cluster_keyslot(k.decode()) for k in mine} == {slot}, sorted(mine)
    finally:
        await store.delete_prefix()
        await store.aclose()  # the shared client and the per-node clients of the WAIT path


async def test_a_checkpoint_without_a_reachable_replica_is_not_acknowledged(
    make_redis_cluster: Callable[..., LocalRedisCluster],
) -> None:
    cluster = make_redis_cluster()
    wf = "wf-lonely"
    master = cluster.master_of(workflow_tag(wf))
    (replica,) = cluster.replicas_of(master)
    store = RedisStateStore.connect(
        _cluster_connection(cluster), key_prefix=_prefix(), wait_replicas=1, wait_timeout_ms=300
    )
    try:
        key = step_key(wf, "a")
        epoch = await store.claim(key, "a1")
        await store.write(key, b"replicated", epoch=epoch, workflow_id=wf)
        replica.stop()  # SIGTERM: the master has no replica now
        with pytest.raises(ReplicationTimeout, match="0 of 1 replica"):
            await store.write(key, b"primary only", epoch=epoch, workflow_id=wf)
    finally:
        await store.aclose()


@pytest.fixture(scope="module")
def sentinel_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisSentinel]:
    from mesh.dev import DevConfig
    from tests.redis_ha import free_port_block

    sentinel = LocalRedisSentinel(
        DevConfig.isolated(tmp_path_factory.mktemp("sentinel")), base_port=free_port_block(5)
    )
    sentinel.up()
    yield sentinel
    sentinel.down()


def _sentinel_connection(sentinel: LocalRedisSentinel) -> RedisConnection:
    env = sentinel.env()
    return RedisConnection(
        url=env["MESH_REDIS_URL"],
        mode="sentinel",
        sentinels=parse_sentinels(env["MESH_REDIS_SENTINELS"]),
        sentinel_master=env["MESH_REDIS_SENTINEL_MASTER"],
    )


class TestRedisStateStoreThroughSentinel(StateStoreContract):
    @pytest.fixture
    async def store(self, sentinel_set: LocalRedisSentinel) -> AsyncIterator[RedisStateStore]:
        s = RedisStateStore.connect(
            _sentinel_connection(sentinel_set),
            key_prefix=_prefix(),
            keep_versions=5,
            wait_replicas=1,
        )
        yield s
        await s.delete_prefix()
        await s.aclose()


async def test_sentinel_clients_reach_the_master_not_a_replica(
    sentinel_set: LocalRedisSentinel,
) -> None:
    client = _sentinel_connection(sentinel_set).client()
    assert isinstance(client, aioredis.Redis)
    try:
        info = await client.info("replication")
        assert info["role"] == "master" and int(info["connected_slaves"]) == 1
    finally:
        await client.aclose()
