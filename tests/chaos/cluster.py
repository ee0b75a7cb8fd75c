"""A mesh of agent processes on the session's real Kafka and Redis, for crash tests."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

from agents.mock_ehr import EhrConfig, MockEhrProcess, start_mock_ehr_process
from agents.processes import AgentProcesses
from agents.specs import RECONCILIATION
from mesh.bus import KafkaBus, SubscriptionOptions
from mesh.runtime import MeshClient, WorkflowView
from mesh.runtime.trust import LogTrust
from mesh.store import RedisStateStore
from protocols import Topics, WorkflowSpec

SESSION_TIMEOUT_MS = int(os.environ.get("MESH_TEST_SESSION_TIMEOUT_MS", "2500"))


class Cluster:
    """Agent processes, a mock EHR process and a log reader that folds every workflow."""

    def __init__(self, tmp: Path, kafka_bootstrap: str, redis_url: str, *, patients: int, turn_delay_s: float,
                 ehr: EhrConfig | None = None) -> None:
        self.prefix = f"chaos{uuid.uuid4().hex[:8]}"
        self.topics = Topics(prefix=self.prefix)
        self.kafka_bootstrap, self.redis_url = kafka_bootstrap, redis_url
        env = {**os.environ, "MESH_KAFKA_BOOTSTRAP": kafka_bootstrap, "MESH_REDIS_URL": redis_url,
               "MESH_TOPIC_PREFIX": self.prefix, "MESH_STATE_DIR": str(tmp / "state"),
               "MESH_TOPIC_PARTITIONS": "6", "MESH_MAX_ENVELOPE_BYTES": "262144", "PYTHONPATH": str(RECONCILIATION.parents[2])}
        env.pop("ANTHROPIC_API_KEY", None)
        self.agents = AgentProcesses(tmp, env, turn_delay_s=turn_delay_s, session_timeout_ms=SESSION_TIMEOUT_MS)
        self.ehr: MockEhrProcess = start_mock_ehr_process(tmp / "audit.jsonl", config=ehr or EhrConfig(patients=patients))
        self.views: dict[str, WorkflowView] = {}
        self.bus = KafkaBus(kafka_bootstrap, topics=self.topics, client_id="chaos-test", partitions=6,
                            signer=lambda env: self.trust.sign(env))
        self.trust: LogTrust
        self.tmp = tmp
        self.store = RedisStateStore.from_url(redis_url, key_prefix=f"{self.prefix}:")
        self._reader: asyncio.Task[None] | None = None

    async def start(self, agents: Iterable[tuple[str, str]]) -> None:
        """Create topics, register the test's signing key, start the agents and the reader."""
        self.trust = await LogTrust.connect("chaos-test", redis_url=self.redis_url, prefix=self.prefix,
                                            state_dir=self.tmp / "state")
        await self.bus.start()
        for role, agent_id in agents:
            self.agents.start(role, agent_id)
        await asyncio.to_thread(self.agents.wait_ready)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        sub = await self.bus.subscribe(
            [self.topics.workflow_events], group=f"{self.prefix}.test-reader",
            options=SubscriptionOptions(session_timeout_ms=10000, heartbeat_interval_ms=1000),
        )
        try:
            while True:
                for d in await sub.poll(timeout_ms=100):
                    wf = d.envelope.workflow_id
                    self.views.setdefault(wf, WorkflowView(wf)).apply(d.envelope)
        finally:
            await sub.aclose()

    async def submit(self, spec: WorkflowSpec) -> str:
        """Submit a workflow against the mock EHR."""
        wf = await MeshClient(self.bus, topics=self.topics, client_id="chaos-test").submit(spec, variables={"ehr_base_url": self.ehr.base_url})
        self.views.setdefault(wf, WorkflowView(wf))
        return wf

    async def wait_until(self, predicate, *, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
        """Poll ``predicate()`` until true or fail saying ``what`` did not happen."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; states: {self.describe()}")
            await asyncio.sleep(0.05)

    def describe(self) -> str:
        """One line per workflow with its step states (for failure messages)."""
        parts = []
        for wf, v in self.views.items():
            steps = {s.id: v.status_of(s.id) for s in (v.spec.steps if v.spec else ())}
            parts.append(f"{wf}: {v.status} {steps}")
        return "; ".join(parts)

    def owner(self, wf: str, step: str) -> str:
        """The latest owner of a step as the log tells."""
        starts = self.views[wf].started.get(step, [])
        return starts[-1].owner if starts else ""

    async def aclose(self) -> None:
        """Stop everything this cluster started."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await asyncio.to_thread(self.agents.stop_all)
        self.ehr.stop()
        await self.store.delete_prefix()
        await self.store.aclose()
        await self.bus.aclose()
        await self.trust.aclose()
