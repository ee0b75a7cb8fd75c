"""Agent processes run a whole workflow on a real Redis Cluster, checkpoints acknowledged with WAIT 1.

Every Redis client of the agents (checkpoints, secrets, run index, keyring, gossip maps, vote
ledgers, dead-letter claims) is built from ``MESH_REDIS_MODE=cluster``; the workflow must succeed,
no agent may log a cross-slot error, and every key the workflow left is in its slot.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from agents.specs import reconciliation_spec
from mesh.dev import LocalRedisCluster
from mesh.store import workflow_tag
from tests.chaos.cluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]

AGENTS = [("identity", "identity-a"), ("fetch", "fetch-a"), ("validate", "validate-a"), ("report", "report-a")]


async def test_agents_run_a_workflow_on_a_redis_cluster_with_wait(
    tmp_path: Path, kafka_bootstrap: str, redis_cluster: LocalRedisCluster
) -> None:
    env = {**redis_cluster.env(), "MESH_REDIS_WAIT_REPLICAS": "1"}
    cluster = Cluster(tmp_path, kafka_bootstrap, redis_cluster.url, patients=3, turn_delay_s=0.0, redis_env=env)
    try:
        await cluster.start(AGENTS, ready_timeout_s=180)  # four agent processes start slowly on a busy box
        wf = await cluster.submit(reconciliation_spec(patients=3, page_size=3))
        await cluster.wait_until(
            lambda: cluster.views[wf].finished is not None, timeout_s=240, what="the workflow to finish"
        )
        assert cluster.views[wf].status == "succeeded", cluster.describe()
        for _, agent_id in AGENTS:
            log = cluster.agents.log_text(agent_id)
            assert "CROSSSLOT" not in log and "same slot" not in log, agent_id
        client = RedisCluster.from_url(redis_cluster.url)
        try:
            keys = [k async for k in client.scan_iter(match=f"{cluster.prefix}:*", count=500)]
            mine = [k.decode() for k in keys if wf.encode() in k]
            # Step checkpoints, the secret, the workflow index, the run entry and gossip maps at least.
            assert len(mine) >= 8, sorted(mine)
            slot = await client.cluster_keyslot(workflow_tag(wf))
            assert {await client.cluster_keyslot(k) for k in mine} == {slot}, sorted(mine)
        finally:
            await client.aclose()
    finally:
        await cluster.aclose()
