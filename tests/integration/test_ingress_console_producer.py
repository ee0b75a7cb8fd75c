"""Task events from a producer that is not ours: Kafka's console producer -> ingress -> agents.

Real everything: the shared Kafka and Redis, Kafka's own ``org.apache.kafka.tools.ConsoleProducer``
(a JVM client with no mesh code or keys), an ``mesh ingress`` process, four agent processes (rule
reasoner) and the mock EHR. The ingress is SIGKILLed after the good event was submitted and a new
one takes over the group: the duplicate sent afterwards must still be dropped (the dedupe record is
in Redis, not in the dead process), the generated bad events dead-lettered with their reasons, and
the ingress still up at the end with every record committed.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from agents.mock_ehr import EhrConfig, start_mock_ehr_process, summarize_audit_log
from agents.processes import READY_MARK, AgentProcesses
from agents.specs import RECONCILIATION
from mesh.dev import DevConfig
from mesh.ingress import WorkflowCatalog, parse_task_event
from mesh.runtime import MeshClient
from mesh.settings import MeshSettings
from protocols import DeadLetter, EnvelopeCodec, Topics, WorkflowCompleted, WorkflowSubmitted
from tests.task_events import bad_events, good_event, line

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _console_producer_classpath() -> str:
    tools = Path(os.environ.get("MESH_KAFKA_TOOLS_DIR", Path.home() / ".cache/agent-mesh/kafka-tools"))
    libs = DevConfig().kafka_libs_dir
    if not list(tools.glob("kafka-tools-*.jar")):
        message = f"no kafka-tools jar in {tools} (run: bash .ci/tools.d/31-kafka-console.sh)"
        if os.environ.get("MESH_REQUIRE_KAFKA_CONSOLE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return f"{libs}/*:{tools}/*"


def console_produce(classpath: str, bootstrap: str, topic: str, lines: list[str]) -> None:
    """Send each line as one record with Kafka's own console producer (acks=all, then exit)."""
    proc = subprocess.run(
        ["java", "-Xmx256m", "-cp", classpath, "org.apache.kafka.tools.ConsoleProducer",
         "--bootstrap-server", bootstrap, "--topic", topic, "--producer-property", "acks=all"],
        input="\n".join(lines) + "\n", text=True, capture_output=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def start_ingress(tmp: Path, env: dict[str, str], ingress_id: str) -> subprocess.Popen[bytes]:
    with open(tmp / f"{ingress_id}.log", "ab") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "mesh", "ingress", "--ingress-id", ingress_id, "--dedupe-ttl-s", "900"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while READY_MARK not in (tmp / f"{ingress_id}.log").read_bytes():
        assert proc.poll() is None, (tmp / f"{ingress_id}.log").read_text()[-3000:]
        assert time.monotonic() < deadline, f"{ingress_id} not ready"
        time.sleep(0.05)
    return proc


async def read_topic(bootstrap: str, topic: str) -> list[tuple[int, int, bytes]]:
    """Every record of ``topic`` from the beginning, as (partition, offset, value)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    parts = [p["partition"] for d in described if d.get("error_code", 0) == 0 for p in d.get("partitions", [])]
    if not parts:
        return []  # not created yet
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[tuple[int, int, bytes]] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                out.extend((tp.partition, r.offset, r.value or b"") for r in records if r.offset < ends[tp])
        return out
    finally:
        await consumer.stop()


async def wait_for(predicate, *, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.5)


async def test_console_producer_events_run_once_duplicates_drop_bad_ones_dead_letter(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, topic_prefix: str
) -> None:
    classpath = _console_producer_classpath()
    topics = Topics(prefix=topic_prefix)
    env = {**os.environ, "MESH_KAFKA_BOOTSTRAP": kafka_bootstrap, "MESH_REDIS_URL": redis_url,
           "MESH_TOPIC_PREFIX": topic_prefix, "MESH_STATE_DIR": str(tmp_path / "state"),
           "PYTHONPATH": str(REPO), "OTEL_SDK_DISABLED": "true"}
    env.pop("ANTHROPIC_API_KEY", None)
    ehr = start_mock_ehr_process(tmp_path / "audit.jsonl", config=EhrConfig(patients=6))
    agents = AgentProcesses(tmp_path, env, session_timeout_ms=3000)
    ingress: subprocess.Popen[bytes] | None = None
    settings = MeshSettings(kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, topic_prefix=topic_prefix,
                            state_dir=tmp_path / "state")
    client = await MeshClient.connect(settings, client_id="ingress-test-reader")
    try:
        for role in ("identity", "fetch", "validate", "report"):
            agents.start(role, f"{role}-1")
        ingress = start_ingress(tmp_path, env, "ingress-1")
        await asyncio.to_thread(agents.wait_ready)

        good = line(good_event(source="urn:test:console", event_id="order-1",
                               variables={"ehr_base_url": ehr.base_url}))
        wf = parse_task_event(good.encode(), WorkflowCatalog.from_dir(RECONCILIATION.parent)).workflow_id
        await asyncio.to_thread(console_produce, classpath, kafka_bootstrap, topics.tasks, [good])

        # Wait until the good event was submitted, then SIGKILL the ingress that did it.
        async def submitted() -> bool:
            records = await read_topic(kafka_bootstrap, topics.workflow_events)
            return any(EnvelopeCodec().decode(v).kind == WorkflowSubmitted.KIND for _, _, v in records)

        await wait_for(submitted, timeout_s=60, what="WorkflowSubmitted from the ingress")
        ingress.kill()
        ingress.wait(timeout=10)
        ingress = start_ingress(tmp_path, env, "ingress-2")

        duplicate_variant = line(good_event(source="urn:test:console", event_id="order-1",
                                            variables={"ehr_base_url": ehr.base_url, "note": "sent twice"}))
        bad = list(bad_events(seed=7))
        await asyncio.to_thread(console_produce, classpath, kafka_bootstrap, topics.tasks,
                                [good, duplicate_variant, *(text for _, text, _ in bad)])

        # The good event's workflow runs to completion.
        view = None
        async for view, _ in client.follow(wf, timeout_s=150):  # noqa: B007 - read after the loop
            pass
        assert view is not None and view.finished is not None, f"workflow {wf} did not finish"
        assert view.status == "succeeded", view.status

        # Every bad event is dead-lettered once, with its reason, by the surviving ingress.
        expected = Counter((text.encode(), reason) for _, text, reason in bad)

        async def letters() -> list[DeadLetter]:
            out = []
            for _, _, value in await read_topic(kafka_bootstrap, topics.dead_letter):
                env_ = EnvelopeCodec().decode(value)
                letter = env_.payload_model(DeadLetter)
                if letter.source_topic == topics.tasks:
                    assert env_.sender == "ingress-2"
                    out.append(letter)
            return out

        async def all_dead_lettered() -> bool:
            return len(await letters()) >= len(bad)

        await wait_for(all_dead_lettered, timeout_s=60, what=f"{len(bad)} dead letters")
        got = Counter((letter.raw, letter.reason) for letter in await letters())
        assert got == expected, {k[0][:60]: (v, k[1]) for k, v in (got ^ expected).items()}
        assert all(letter.error for letter in await letters())

        # Exactly once: one WorkflowSubmitted for the workflow on the log, one completion,
        # no duplicated side effect at the EHR; no other workflow was started by the duplicates.
        kinds = Counter()
        for _, _, value in await read_topic(kafka_bootstrap, topics.workflow_events):
            e = EnvelopeCodec().decode(value)
            if e.kind in (WorkflowSubmitted.KIND, WorkflowCompleted.KIND):
                kinds[(e.kind, e.workflow_id)] += 1
        assert kinds == {(WorkflowSubmitted.KIND, wf): 1, (WorkflowCompleted.KIND, wf): 1}, kinds
        audit = summarize_audit_log(tmp_path / "audit.jsonl")
        assert audit.duplicate_effects == 0 and audit.effects_created > 0

        # The ingress is still up and committed every record it was given.
        assert ingress.poll() is None, (tmp_path / "ingress-2.log").read_text()[-3000:]
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(f"{topic_prefix}.ingress")
        finally:
            await admin.close()
        records = await read_topic(kafka_bootstrap, topics.tasks)
        assert len(records) == 1 + 2 + len(bad)
        ends: dict[int, int] = {}
        for partition, offset, _ in records:
            ends[partition] = max(ends.get(partition, 0), offset + 1)
        assert {tp.partition: meta.offset for tp, meta in committed.items() if meta.offset >= 0} == ends
        log_text = (tmp_path / "ingress-2.log").read_text()
        assert "Traceback" not in log_text
        assert log_text.count("dead-lettered") == len(bad)
        assert "duplicate task event" in log_text
    finally:
        await client.aclose()
        if ingress is not None and ingress.poll() is None:
            ingress.terminate()
            ingress.wait(timeout=15)
        await asyncio.to_thread(agents.stop_all)
        ehr.stop()
        print(json.dumps({"ingress logs": str(tmp_path)}))
