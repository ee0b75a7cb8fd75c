"""The read-only commands and submit against real Kafka and Redis, as a user runs them (subprocesses).

Unknown workflows are reported as unknown; `status` and `runs` work without Redis (from the log)
and read the run index when it is there; `submit` warns when no agent serves a role.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.bus import KafkaBus, SubscriptionOptions
from mesh.store import RedisRunIndex, RunSummary, StepSummary
from protocols import Topics

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "agents" / "workflows" / "reconciliation.yaml"


def mesh(env: dict[str, str], *argv: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mesh", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture
def env(kafka_bootstrap: str, redis_url: str, topic_prefix: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    # Topics go with the topic_prefix fixture; the Redis keys under the same prefix go here.
    yield {**os.environ, "MESH_KAFKA_BOOTSTRAP": kafka_bootstrap, "MESH_REDIS_URL": redis_url,
            "MESH_TOPIC_PREFIX": topic_prefix, "MESH_TOPIC_PARTITIONS": "2", "MESH_STATE_DIR": str(tmp_path / "state"),
            "PYTHONPATH": str(ROOT)}
    import redis

    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=f"{topic_prefix}:*", count=500))
        if keys:
            client.delete(*keys)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_unknown_workflow_is_unknown_everywhere(env: dict[str, str]) -> None:
    env = {**env, "MESH_REDIS_URL": "redis://127.0.0.1:1/0"}  # read-only commands must not need Redis
    proc = mesh(env, "status", "wf-never", "--json", "--read-s", "1")
    assert proc.returncode == 1
    assert json.loads(proc.stdout) == {"workflow_id": "wf-never", "status": "unknown", "known": False}
    assert "workflow 'wf-never' is unknown" in one_error_line(proc)
    proc = mesh(env, "watch", "wf-never", "--timeout-s", "5")
    assert proc.returncode == 1 and "is unknown" in one_error_line(proc)


async def _group_member(bootstrap: str, topics: Topics, group: str, joined: asyncio.Event, stop: asyncio.Event) -> None:
    bus = KafkaBus(bootstrap, topics=topics, client_id="fake-agent", partitions=2)
    await bus.start()
    sub = await bus.subscribe([topics.workflow_events], group=group, member="fake-agent",
                              options=SubscriptionOptions(session_timeout_ms=6000, heartbeat_interval_ms=500))
    joined.set()
    while not stop.is_set():
        await sub.poll(timeout_ms=100)
    await sub.aclose()
    await bus.aclose()


async def test_submit_warns_for_unserved_roles_then_status_without_redis(env: dict[str, str], kafka_bootstrap: str,
                                                                         topic_prefix: str) -> None:
    topics = Topics(prefix=topic_prefix)
    joined, stop = asyncio.Event(), asyncio.Event()
    # A real member of the identity role's consumer group: that role is served, the other three are not.
    member = asyncio.create_task(_group_member(kafka_bootstrap, topics, f"{topic_prefix}.role.identity", joined, stop))
    try:
        await asyncio.wait_for(joined.wait(), 120)
        proc = await asyncio.to_thread(mesh, env, "submit", str(SPEC), "--workflow-id", "wf-cli-1")
    finally:
        stop.set()
        await member
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "wf-cli-1"
    [warning] = proc.stderr.splitlines()
    assert "warning: no agent is serving role(s) fetch, report, validate" in warning
    assert "identity" not in warning.split("(consumer group")[0]
    # Redis down: status reads the log, says so, and knows the workflow.
    no_redis = {**env, "MESH_REDIS_URL": "redis://127.0.0.1:1/0"}
    proc = await asyncio.to_thread(mesh, no_redis, "status", "wf-cli-1", "--json", "--read-s", "1")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["status"], doc["source"], doc["name"]) == ("pending", "log", "patient-reconciliation")
    assert doc["steps"] == {"identity": "ready", "fetch": "waiting", "validate": "waiting", "report": "waiting"}
    proc = await asyncio.to_thread(mesh, no_redis, "runs", "--json", "--read-s", "1")
    assert proc.returncode == 0 and "run index unavailable" in proc.stderr
    assert [json.loads(line)["workflow_id"] for line in proc.stdout.splitlines()] == ["wf-cli-1"]
    # resume of a step that is not paused, or of an unknown step, is refused in one line.
    proc = await asyncio.to_thread(mesh, env, "resume", "wf-cli-1", "identity")
    assert proc.returncode == 1 and "is ready, not paused" in one_error_line(proc)
    proc = await asyncio.to_thread(mesh, env, "resume", "wf-never", "identity")
    assert proc.returncode == 1 and "is unknown" in one_error_line(proc)


async def test_status_and_runs_read_the_index(env: dict[str, str], redis_url: str, topic_prefix: str) -> None:
    index = RedisRunIndex.from_url(redis_url, key_prefix=f"{topic_prefix}:")
    try:
        for i, status in enumerate(["succeeded", "running", "failed"]):
            await index.record(RunSummary(
                workflow_id=f"wf-idx-{i}", name="recon" if i != 1 else "billing", status=status, events=5,
                created_ms=1_000, updated_ms=2_000_000_000_000 + i, trace_id="cd" * 16,
                steps=(StepSummary(id="fetch", role="fetch", status="completed", owner="fetch-7", epoch=4, turns=9),),
            ))
    finally:
        await index.aclose()
    proc = await asyncio.to_thread(mesh, env, "status", "wf-idx-0", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["source"], doc["status"], doc["trace_id"]) == ("index", "succeeded", "cd" * 16)
    assert doc["step_details"][0]["owner"] == "fetch-7" and doc["step_details"][0]["epoch"] == 4
    proc = await asyncio.to_thread(mesh, env, "runs", "--json", "--status", "succeeded")
    assert [json.loads(x)["workflow_id"] for x in proc.stdout.splitlines()] == ["wf-idx-0"]
    proc = await asyncio.to_thread(mesh, env, "runs", "--json", "--name", "recon", "--limit", "1")
    assert [json.loads(x)["workflow_id"] for x in proc.stdout.splitlines()] == ["wf-idx-2"]
    proc = await asyncio.to_thread(mesh, env, "watch", "wf-idx-0", "--timeout-s", "10")
    assert proc.returncode == 0 and "succeeded" in proc.stdout, proc.stderr


async def test_admin_helpers_on_real_kafka(kafka_bootstrap: str, topic_prefix: str) -> None:
    from mesh.bus.groups import delete_topics_with_prefix, group_member_counts

    topics = Topics(prefix=topic_prefix)
    bus = KafkaBus(kafka_bootstrap, topics=topics, client_id="t-admin", partitions=1)
    await bus.start()
    await bus.aclose()
    counts = await group_member_counts(kafka_bootstrap, [f"{topic_prefix}.role.none", f"{topic_prefix}.role.other"])
    assert counts == {f"{topic_prefix}.role.none": 0, f"{topic_prefix}.role.other": 0}
    deleted = await delete_topics_with_prefix(kafka_bootstrap, topic_prefix)
    assert set(deleted) == set(topics.all())
    assert await delete_topics_with_prefix(kafka_bootstrap, topic_prefix) == []
