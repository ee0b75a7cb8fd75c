"""Invariant 1 and 2 with real processes: SIGKILL at random turns, and a SIGSTOP'd zombie.

Faults are injected with real signals on real ``mesh agent run`` processes (SIGKILL, SIGSTOP,
SIGCONT) on the session's real Kafka broker and Redis; the mock EHR's audit log counts auth
calls, 401s and duplicated side effects.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from agents.mock_ehr import summarize_audit_log
from agents.specs import reconciliation_spec
from mesh.errors import CheckpointNotFound
from mesh.gossip import ContextMapArchive
from mesh.runtime import StepState, read_history
from mesh.runtime.worker import secret_key
from mesh.store import FileBlobStore, RedisContextMapStore, step_key
from tests.chaos.cluster import Cluster

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(420)]


@pytest.fixture
async def cluster(tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> AsyncIterator[Cluster]:
    # A history window of 2 turns: checkpoints archive older turn records (segments of 2) to the
    # agents' blob store all the time, so the kills and the zombie land across archiving too.
    c = Cluster(tmp_path, kafka_bootstrap, redis_url, patients=6, turn_delay_s=0.25, history_window=2)
    try:
        yield c
    finally:
        await c.aclose()


async def test_sigkill_at_random_turns_loses_nothing_and_duplicates_nothing(cluster: Cluster) -> None:
    rng = random.Random(20261124)
    agents = [("identity", "identity-a"), ("identity", "identity-b"), ("fetch", "fetch-a"), ("fetch", "fetch-b"),
              ("validate", "validate-a"), ("validate", "validate-b"), ("report", "report-a"), ("report", "report-b")]
    await cluster.start(agents)
    spec = reconciliation_spec(patients=6, page_size=2)
    workflows: list[str] = []

    async def submit_staggered() -> None:
        # A steady trickle keeps steps running while the kills land.
        for _ in range(8):
            workflows.append(await cluster.submit(spec))
            await asyncio.sleep(1.5)

    submitter = asyncio.create_task(submit_staggered())
    kills: list[tuple[str, str, int]] = []
    # Kill the owner of a running multi-turn step (fetch or validate) at a random turn, and start a
    # replacement so the role keeps two members. The identity step is left alone: its one turn
    # calls a token endpoint that, like real OAuth servers, is not idempotent (see the README).
    while len(kills) < 4:
        running = [
            (wf, step, v.turns_seen.get(step, 0))
            for wf, v in list(cluster.views.items()) if v.spec
            for step in ("fetch", "validate")
            # At least one turn checkpointed, so the successor really resumes from a checkpoint
            # (a kill before the first turn is a restart, not a resume).
            if v.status_of(step) == "running" and v.turns_seen.get(step, 0) >= 1
            and cluster.owner(wf, step) in cluster.agents.procs
            and cluster.agents.alive(cluster.owner(wf, step))
        ]
        if not running:
            if submitter.done() and all(cluster.views[wf].finished for wf in workflows):
                break
            await asyncio.sleep(0.1)
            continue
        wf, step, turn = rng.choice(running)
        victim = cluster.owner(wf, step)
        cluster.agents.kill(victim)
        kills.append((victim, f"{wf}/{step}", turn))
        role = cluster.agents.roles[victim]
        cluster.agents.start(role, f"{role}-r{len(kills)}")
        await asyncio.sleep(rng.uniform(0.3, 1.2))
    await submitter
    await cluster.wait_until(
        lambda: all(cluster.views[wf].finished is not None for wf in workflows),
        timeout_s=240, what="every workflow to finish",
    )
    assert len(kills) >= 3, f"too few kills landed: {kills}"
    for wf in workflows:
        view = cluster.views[wf]
        assert view.finished is not None and view.finished.status == "succeeded", cluster.describe()
        assert set(view.completed) == {"identity", "fetch", "validate", "report"}
        assert "Patients checked: 6" in view.completed["report"].outputs["report"]
    resumed = sum(cluster.views[wf].resumes() for wf in workflows)
    assert resumed >= 1, f"no step resumed from a checkpoint; kills: {kills}"
    audit = summarize_audit_log(cluster.ehr.audit_log)
    assert audit.auth_calls == len(workflows), audit
    assert audit.unauthorized == 0, audit
    assert audit.duplicate_effects == 0, audit
    assert audit.effects_created == len(workflows) * (6 + 1), audit


async def test_zombie_cannot_overwrite_the_newer_checkpoint(cluster: Cluster) -> None:
    await cluster.start([("identity", "identity-a"), ("fetch", "fetch-a"), ("validate", "validate-a"),
                         ("validate", "validate-b"), ("report", "report-a")])
    wf = await cluster.submit(reconciliation_spec(patients=6, page_size=3))
    await cluster.wait_until(lambda: cluster.views[wf].turns_seen.get("validate", 0) >= 2,
                             timeout_s=120, what="validate turn 2")
    zombie = cluster.owner(wf, "validate")
    zombie_epoch = cluster.views[wf].started["validate"][-1].epoch
    cluster.agents.signal(zombie, signal.SIGSTOP)
    try:
        await cluster.wait_until(lambda: cluster.owner(wf, "validate") not in ("", zombie),
                                 timeout_s=60, what="another validate member to take over")
        successor = cluster.owner(wf, "validate")
        taken_at = cluster.views[wf].turns_seen.get("validate", 0)
        await cluster.wait_until(lambda: cluster.views[wf].turns_seen.get("validate", 0) > taken_at,
                                 timeout_s=60, what="the successor to finish a turn")
    finally:
        cluster.agents.signal(zombie, signal.SIGCONT)
    await cluster.wait_until(lambda: cluster.views[wf].finished is not None, timeout_s=120, what="the workflow to finish")
    await asyncio.sleep(2)  # give the zombie time to try (and fail) to write
    view = cluster.views[wf]
    assert view.finished is not None and view.finished.status == "succeeded"
    assert cluster.agents.alive(zombie), "the zombie crashed instead of standing down"
    # Every kept version of the checkpoint: epochs never go back, and the last is the successor's.
    latest = await cluster.store.read(step_key(wf, "validate"))
    epochs = []
    for version in range(1, latest.version + 1):
        try:
            epochs.append((await cluster.store.read(step_key(wf, "validate"), version)).epoch)
        except CheckpointNotFound:
            continue
    assert epochs == sorted(epochs), f"an older epoch wrote after a newer one: {epochs}"
    final = StepState.from_bytes(latest.data)
    # After SIGCONT the zombie may rejoin and even win the partition back, but only under a new
    # epoch it claims then: its old epoch never writes again.
    assert final.status == "completed" and latest.epoch > zombie_epoch
    assert successor != zombie and any(s.owner == successor for s in view.started["validate"])
    # The checkpoint holds the last turns; the rest, archived by the zombie and its successor
    # under their own epochs, reads back as one gapless history.
    assert final.turn == 6 and len(final.history) <= 4 and final.archive.turns >= 2
    whole = await read_history(final, FileBlobStore(cluster.tmp / "state" / "blobs"))
    assert [h.turn for h in whole] == list(range(1, 7))
    audit = summarize_audit_log(cluster.ehr.audit_log)
    assert audit.duplicate_effects == 0 and audit.unauthorized == 0 and audit.auth_calls == 1, audit
    # Every agent gossiped what identity discovered and persisted its replica of the map in Redis.
    redis = aioredis.Redis.from_url(cluster.redis_url)
    try:
        maps = ContextMapArchive(RedisContextMapStore(redis, prefix=f"{cluster.prefix}:"))
        for agent_id in ("identity-a", "fetch-a", "validate-a", "validate-b", "report-a"):
            cmap = await maps.load(wf, agent_id)
            assert cmap is not None, f"{agent_id} persisted no gossip map"
            assert isinstance(cmap.value("auth_expires_at_ms"), int), agent_id
            token = cmap.get("auth_token")
            assert token is not None and token.secret and token.value == secret_key(wf, "auth_token")
    finally:
        await redis.aclose()


async def test_without_faults_every_step_starts_once_and_nothing_resumes(cluster: Cluster) -> None:
    # The baseline the crash test's "resumed >= 1" is measured against: with no fault, no step is
    # started twice (a finished step was once re-run between the end of its task and reading its
    # own StepCompleted back, which counted as a resume).
    await cluster.start([("identity", "identity-a"), ("fetch", "fetch-a"), ("validate", "validate-a"),
                         ("report", "report-a")])
    spec = reconciliation_spec(patients=3, page_size=2)
    workflows = [await cluster.submit(spec) for _ in range(4)]
    await cluster.wait_until(
        lambda: all(cluster.views[wf].finished is not None for wf in workflows),
        timeout_s=120, what="every workflow to finish",
    )
    await asyncio.sleep(2.0)  # a would-be second run announces itself within a poll or two
    for wf in workflows:
        view = cluster.views[wf]
        assert view.finished is not None and view.finished.status == "succeeded", cluster.describe()
        starts = {step: [s.owner for s in started] for step, started in view.started.items()}
        assert all(len(owners) == 1 for owners in starts.values()), f"{wf}: {starts}"
        assert view.resumes() == 0, f"{wf}: {starts}"
    audit = summarize_audit_log(cluster.ehr.audit_log)
    assert audit.auth_calls == len(workflows), audit
