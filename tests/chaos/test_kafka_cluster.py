"""A 3-node KRaft cluster loses a node mid-run: the busiest partition's leader, then the controller.

Real faults on real processes: a 3-node cluster (``mesh dev`` with ``kafka_nodes=3``, each node a
combined broker and controller) started through ``dev_services_factory``, real ``mesh agent run``
processes, the mock EHR whose audit log counts side effects. The mesh's topics get 3 replicas
and ``min.insync.replicas=2`` and its producers use acks=all, so losing one node must lose
nothing acknowledged: every workflow completes, no effect happens twice, and a full re-read of
the workflow log after the run holds every event the test's reader saw during it (a consumer only
sees records below the high watermark: acknowledged ones). The time to recover is printed (run
with ``-s``): partition leader re-elected, or controller re-elected, and the log moving again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from agents.mock_ehr import summarize_audit_log
from agents.specs import reconciliation_spec
from mesh.dev import DevServices
from mesh.runtime import WorkflowView
from protocols import EnvelopeCodec
from tests.chaos.cluster import Cluster

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(480)]

WORKFLOWS = 4
PATIENTS = 4
ROLES = ("identity", "fetch", "validate", "report")


@pytest.fixture
def kafka3(dev_services_factory: Callable[..., DevServices]) -> DevServices:
    """A private 3-node cluster (the test kills its nodes); modest heaps for a 2-core box."""
    services = dev_services_factory(kafka_nodes=3, kafka_heap_mb=320)
    services.up(services=("kafka",))
    return services


@pytest.fixture
async def cluster(tmp_path: Path, kafka3: DevServices, redis_url: str) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, kafka3.kafka_bootstrap, redis_url, patients=PATIENTS, turn_delay_s=0.3)
    try:
        yield c
    finally:
        await c.aclose()


async def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    return admin


async def _partitions(bootstrap: str, topic: str) -> dict[int, dict[str, Any]]:
    admin = await _admin(bootstrap)
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {p["partition"]: p for p in described[0]["partitions"]}


async def _min_insync(bootstrap: str, topic: str) -> str:
    admin = await _admin(bootstrap)
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    for response in responses:
        for resource in response.resources:
            for entry in resource[4]:
                if entry[0] == "min.insync.replicas":
                    return str(entry[1])
    raise AssertionError(f"no min.insync.replicas in the configs of {topic}")


async def _start_and_submit(cluster: Cluster) -> list[str]:
    await cluster.start([(role, f"{role}-a") for role in ROLES])
    spec = reconciliation_spec(patients=PATIENTS, page_size=1)
    return [await cluster.submit(spec) for _ in range(WORKFLOWS)]


async def _wait_mid_run(cluster: Cluster, workflows: list[str]) -> None:
    # Mid-run: multi-turn steps are running (and have checkpointed a turn), none has finished.
    await cluster.wait_until(
        lambda: (
            sum(
                any(
                    cluster.views[wf].turns_seen.get(s, 0) >= 1
                    and cluster.views[wf].status_of(s) == "running"
                    for s in ("fetch", "validate")
                )
                for wf in workflows
            )
            >= 2
        ),
        timeout_s=120,
        what="two workflows to be mid-run",
    )


async def _assert_complete_and_nothing_lost(cluster: Cluster, workflows: list[str]) -> None:
    await cluster.wait_until(
        lambda: all(cluster.views[wf].finished is not None for wf in workflows),
        timeout_s=240,
        what="every workflow to finish",
    )
    for wf in workflows:
        view = cluster.views[wf]
        assert view.finished is not None and view.finished.status == "succeeded", cluster.describe()
        assert set(view.completed) == set(ROLES)
        assert f"Patients checked: {PATIENTS}" in view.completed["report"].outputs["report"]
    audit = summarize_audit_log(cluster.ehr.audit_log)
    assert audit.duplicate_effects == 0 and audit.unauthorized == 0, audit
    assert audit.auth_calls == len(workflows), audit
    assert audit.effects_created == len(workflows) * (PATIENTS + 1), audit
    # Nothing acknowledged lost: the whole log, read again from offset 0, holds every event the
    # reader saw during the run, and folds to the same finished workflows.
    ids, views = await _reread(cluster.kafka_bootstrap, cluster.topics.workflow_events)
    missing = cluster.event_ids - ids
    assert not missing, f"{len(missing)} acknowledged events are gone from the log"
    for wf in workflows:
        assert views[wf].finished is not None and views[wf].finished.status == "succeeded", wf


async def _reread(bootstrap: str, topic: str) -> tuple[set[str], dict[str, WorkflowView]]:
    codec = EnvelopeCodec(max_bytes=1 << 20)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=10000
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(topic, p)
            for p in consumer.partitions_for_topic(topic) or await _topic_parts(consumer, topic)
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        ids: set[str] = set()
        views: dict[str, WorkflowView] = {}
        deadline = time.monotonic() + 60
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, "re-reading the log took over 60 s"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for rec in records:
                    env = codec.decode(rec.value)
                    ids.add(env.id)
                    views.setdefault(env.workflow_id, WorkflowView(env.workflow_id)).apply(env)
        return ids, views
    finally:
        await consumer.stop()


async def _topic_parts(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # the first metadata may predate the topic
    return consumer.partitions_for_topic(topic) or set()


async def _until(
    predicate: Callable[[], Any], *, timeout_s: float, what: str, every_s: float = 0.05
) -> float:
    """Await an (async) predicate; the seconds it took."""
    t0 = time.monotonic()
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(every_s)


async def test_sigkill_of_the_busiest_partitions_leader_loses_nothing(
    cluster: Cluster, kafka3: DevServices
) -> None:
    workflows = await _start_and_submit(cluster)
    topic = cluster.topics.workflow_events
    parts = await _partitions(cluster.kafka_bootstrap, topic)
    # The mesh sized its topics to the cluster: 3 replicas, 2 must be in sync for acks=all.
    assert {len(p["replicas"]) for p in parts.values()} == {3}, parts
    assert await _min_insync(cluster.kafka_bootstrap, topic) == "2"
    await _wait_mid_run(cluster, workflows)

    running = {cluster.partition_of[wf] for wf in workflows if cluster.views[wf].finished is None}
    busiest = max(running, key=lambda p: cluster.partition_records[p])
    victim = (await _partitions(cluster.kafka_bootstrap, topic))[busiest]["leader"]
    assert victim in (1, 2, 3), victim
    t0 = time.monotonic()
    kafka3.stop_kafka_node(victim, kill=True)

    admin = await _admin(cluster.kafka_bootstrap)

    async def new_leader() -> bool:
        try:
            described = await admin.describe_topics([topic])
        except Exception:  # metadata may be briefly unavailable while the node is dead
            return False
        leaders = {p["partition"]: p["leader"] for p in described[0]["partitions"]}
        return leaders.get(busiest, -1) not in (victim, -1)

    try:
        await _until(
            new_leader, timeout_s=60, what=f"a new leader of partition {busiest}", every_s=0.1
        )
    finally:
        await admin.close()
    elected_s = time.monotonic() - t0  # from the kill, admin client start included
    moving_s = await _until(
        lambda: cluster.partition_last_at.get(busiest, 0) > t0 + elected_s,
        timeout_s=120,
        what=f"an event on partition {busiest} after the election",
    )
    await _assert_complete_and_nothing_lost(cluster, workflows)
    done_s = time.monotonic() - t0
    print(
        f"\nleader kill: node {victim} led partition {busiest} ({cluster.partition_records[busiest]} events); "
        f"new leader after {elected_s:.2f} s, partition moving again after {elected_s + moving_s:.2f} s, "
        f"all {len(workflows)} workflows done {done_s:.1f} s after the kill"
    )


async def test_sigkill_of_the_active_controller_loses_nothing(
    cluster: Cluster, kafka3: DevServices
) -> None:
    workflows = await _start_and_submit(cluster)
    await _wait_mid_run(cluster, workflows)
    controller = kafka3.kafka_controller()
    assert controller in (1, 2, 3), controller
    epoch_before = max(s[1] for n in kafka3.kafka_nodes if (s := n.quorum_state()))
    t0 = time.monotonic()
    kafka3.stop_kafka_node(controller, kill=True)

    def new_controller() -> bool:
        states = [s for n in kafka3.kafka_nodes if n.pid() is not None and (s := n.quorum_state())]
        return any(leader != controller and epoch > epoch_before for leader, epoch in states)

    await _until(new_controller, timeout_s=60, what="a new active controller")
    elected_s = time.monotonic() - t0
    successor = kafka3.kafka_controller()
    moving_s = await _until(
        lambda: cluster.last_event_at > t0 + elected_s,
        timeout_s=120,
        what="an event in the workflow log after the election",
    )
    await _assert_complete_and_nothing_lost(cluster, workflows)
    done_s = time.monotonic() - t0
    print(
        f"\ncontroller kill: node {controller} was the active controller; node {successor} elected after "
        f"{elected_s:.2f} s, workflow log moving again after {elected_s + moving_s:.2f} s, "
        f"all {len(workflows)} workflows done {done_s:.1f} s after the kill"
    )
    assert successor not in (None, controller)
