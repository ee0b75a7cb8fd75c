"""Real agent processes keep the run index in real Redis, and set the retention TTL when a workflow ends."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from agents.specs import reconciliation_spec
from mesh.runtime.view import run_summary
from mesh.runtime.worker import secret_key
from mesh.store import RedisRunIndex, step_key
from tests.chaos.cluster import Cluster

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TTL_S = 3600


async def test_agents_index_the_run_and_expire_it(tmp_path: Path, kafka_bootstrap: str, redis_url: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_FINISHED_TTL_S", str(TTL_S))
    cluster = Cluster(tmp_path, kafka_bootstrap, redis_url, patients=3, turn_delay_s=0.0)
    index = RedisRunIndex.from_url(redis_url, key_prefix=f"{cluster.prefix}:")
    raw = aioredis.Redis.from_url(redis_url)
    try:
        await cluster.start([("identity", "identity-a"), ("fetch", "fetch-a"), ("validate", "validate-a"),
                             ("report", "report-a")])
        wf = await cluster.submit(reconciliation_spec(patients=3, page_size=3))
        await cluster.wait_until(lambda: cluster.views[wf].finished is not None, timeout_s=180,
                                 what="the workflow to finish")
        view = cluster.views[wf]
        entry = None
        for _ in range(200):
            entry = await index.get(wf)
            if entry is not None and entry.finished:
                break
            await asyncio.sleep(0.05)
        assert entry is not None and entry.status == "succeeded", entry
        expected = run_summary(view)
        assert [(s.id, s.status, s.owner, s.epoch, s.turns) for s in entry.steps] == \
            [(s.id, s.status, s.owner, s.epoch, s.turns) for s in expected.steps]
        assert entry.finished_ms >= entry.created_ms > 0
        # Retention: the run entry, every step checkpoint and the secret have a TTL now.
        for _ in range(100):
            if await raw.ttl(index.run_key(wf)) > 0:
                break
            await asyncio.sleep(0.05)
        assert 0 < await raw.ttl(index.run_key(wf)) <= TTL_S
        for step in ("identity", "fetch", "validate", "report"):
            ttl = await raw.ttl(cluster.store.redis_key(step_key(wf, step)))
            assert 0 < ttl <= TTL_S, (step, ttl)
        ttl = await raw.ttl(cluster.store.redis_key(secret_key(wf, "auth_token")))
        assert 0 < ttl <= TTL_S
        # `mesh status` reads that entry (one key), as a user runs it.
        env = {**os.environ, "MESH_KAFKA_BOOTSTRAP": kafka_bootstrap, "MESH_REDIS_URL": redis_url,
               "MESH_TOPIC_PREFIX": cluster.prefix, "PYTHONPATH": str(ROOT), "MESH_STATE_DIR": str(tmp_path / "cli")}
        proc = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "mesh", "status", wf, "--json"],
                                       env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert (doc["source"], doc["status"]) == ("index", "succeeded")
    finally:
        await raw.aclose()
        await index.aclose()
        await cluster.aclose()
        from bench.common import delete_keys, delete_topics

        await delete_topics(kafka_bootstrap, f"{cluster.prefix}.")
        await delete_keys(redis_url, f"{cluster.prefix}:")
