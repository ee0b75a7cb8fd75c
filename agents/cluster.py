"""A mesh of agent processes, a mock EHR process and a log reader: what crash tests and ``mesh chaos`` run.

Agents are real ``mesh agent run`` processes (SIGKILL, SIGTERM, SIGSTOP them through
``cluster.agents``); the mock EHR is its own process with a fsynced audit log; a background reader
folds every workflow of the cluster's topics into ``views``.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from agents.mock_ehr import EhrConfig, MockEhrProcess, start_mock_ehr_process
from agents.processes import AgentProcesses
from agents.specs import RECONCILIATION
from mesh.bus import KafkaBus, SubscriptionOptions
from mesh.runtime import MeshClient, WorkflowView
from mesh.runtime.trust import AgentTrust
from mesh.settings import MeshSettings
from mesh.store import RedisKeyringStore, RedisStateStore
from mesh.store.redis import RedisConnection
from protocols import Topics, WorkflowSpec

__all__ = ["SESSION_TIMEOUT_MS", "Cluster"]

SESSION_TIMEOUT_MS = int(os.environ.get("MESH_TEST_SESSION_TIMEOUT_MS", "2500"))
"""Consumer-group session timeout of the agents (bounds failover after a SIGKILL)."""

MAX_ENVELOPE_BYTES = 262_144
"""What the cluster's agents accept (small, so an oversize record is cheap to make)."""


class Cluster:
    """Agent processes, a mock EHR process and a log reader that folds every workflow."""

    def __init__(
        self,
        tmp: Path,
        kafka_bootstrap: str,
        redis_url: str,
        *,
        patients: int,
        turn_delay_s: float,
        session_timeout_ms: int = SESSION_TIMEOUT_MS,
        prefix: str | None = None,
        client_id: str = "chaos-test",
        ehr: EhrConfig | None = None,
        env: Mapping[str, str] | None = None,
        redis_env: Mapping[str, str] | None = None,
        history_window: int = 0,
    ) -> None:
        """Prepare (start nothing yet but the mock EHR); ``env`` adds to every agent's environment.

        ``redis_env`` adds ``MESH_REDIS_*`` (a cluster, auth, WAIT) for every client, this one
        included; ``history_window`` > 0 sets the agents' ``MESH_HISTORY_WINDOW`` (turn records a
        checkpoint keeps).
        """
        self.prefix = prefix or f"chaos{uuid.uuid4().hex[:8]}"
        self.topics = Topics(prefix=self.prefix)
        self.kafka_bootstrap, self.redis_url = kafka_bootstrap, redis_url
        self.client_id = client_id
        agent_env = {**os.environ, "MESH_KAFKA_BOOTSTRAP": kafka_bootstrap, "MESH_REDIS_URL": redis_url,
                     "MESH_TOPIC_PREFIX": self.prefix, "MESH_STATE_DIR": str(tmp / "state"),
                     "MESH_TOPIC_PARTITIONS": "6", "MESH_MAX_ENVELOPE_BYTES": str(MAX_ENVELOPE_BYTES),
                     "PYTHONPATH": str(RECONCILIATION.parents[2]), **(env or {})}  # fmt: skip
        agent_env.pop("ANTHROPIC_API_KEY", None)
        if history_window:
            agent_env["MESH_HISTORY_WINDOW"] = str(history_window)
        agent_env.update(redis_env or {})
        self.redis = RedisConnection.from_settings(
            MeshSettings(**{k.removeprefix("MESH_").lower(): v for k, v in agent_env.items()
                            if k.startswith("MESH_REDIS_")})  # type: ignore[arg-type]
        )
        self.agents = AgentProcesses(
            tmp, agent_env, turn_delay_s=turn_delay_s, session_timeout_ms=session_timeout_ms
        )
        self.ehr: MockEhrProcess = start_mock_ehr_process(
            tmp / "audit.jsonl",
            config=ehr or EhrConfig(patients=patients),
            ready_timeout_s=60.0,
            stderr_path=tmp / "mock-ehr.log",
        )
        self.views: dict[str, WorkflowView] = {}
        # What the reader folded: records per partition of the workflow log, every event id (all
        # below the high watermark, i.e. acknowledged), and when the last one arrived.
        self.partition_records: Counter[int] = Counter()
        self.event_ids: set[str] = set()
        self.last_event_at = 0.0
        self.partition_last_at: dict[int, float] = {}
        self.partition_of: dict[str, int] = {}
        self.bus = KafkaBus(kafka_bootstrap, topics=self.topics, client_id=client_id, partitions=6,
                            signer=lambda env: self.trust.sign(env))  # fmt: skip
        self.trust: AgentTrust
        self.tmp = tmp
        self.store = RedisStateStore.connect(self.redis, key_prefix=f"{self.prefix}:")
        self._reader: asyncio.Task[None] | None = None
        self.on_event: Callable[[str, WorkflowView], None] | None = None
        """Called after each folded event with its workflow id and view (progress output)."""

    async def start(
        self,
        agents: Iterable[tuple[str, str]],
        *,
        env: Mapping[str, Mapping[str, str]] | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        """Create topics, register the client's signing key, start the agents and the reader.

        ``env`` maps an agent id to environment overrides for that agent alone.
        """
        self.trust = await AgentTrust.connect(
            self.client_id, RedisKeyringStore.connect(self.redis, prefix=f"{self.prefix}:"), state_dir=self.tmp / "state"
        )
        await self.bus.start()
        for role, agent_id in agents:
            self.agents.start(role, agent_id, env=(env or {}).get(agent_id))
        await asyncio.to_thread(self.agents.wait_ready, timeout_s=ready_timeout_s)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        sub = await self.bus.subscribe(
            [self.topics.workflow_events], group=f"{self.prefix}.{self.client_id}-reader",
            options=SubscriptionOptions(session_timeout_ms=10000, heartbeat_interval_ms=1000, dead_letter=False),
        )  # fmt: skip
        try:
            while True:
                for d in await sub.poll(timeout_ms=100):
                    wf = d.envelope.workflow_id
                    if not wf:
                        continue
                    self.partition_records[d.partition] += 1
                    self.event_ids.add(d.envelope.id)
                    self.last_event_at = self.partition_last_at[d.partition] = time.monotonic()
                    self.partition_of[wf] = d.partition
                    view = self.views.setdefault(wf, WorkflowView(wf))
                    if view.apply(d.envelope) and self.on_event is not None:
                        self.on_event(wf, view)
        finally:
            await sub.aclose()

    async def submit(self, spec: WorkflowSpec) -> str:
        """Submit a workflow against the mock EHR."""
        client = MeshClient(self.bus, topics=self.topics, client_id=self.client_id)
        wf = await client.submit(spec, variables={"ehr_base_url": self.ehr.base_url})
        self.views.setdefault(wf, WorkflowView(wf))
        return wf

    async def wait_until(self, predicate, *, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
        """Poll ``predicate()`` until true or fail saying ``what`` did not happen."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s} s waiting for {what}; states: {self.describe()}"
                )
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

    async def aclose(self, *, keep_keys: bool = False, grace_s: float = 10.0) -> None:
        """Stop everything this cluster started (and delete its Redis keys unless ``keep_keys``);
        agents get ``grace_s`` seconds after SIGTERM before SIGKILL."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await asyncio.to_thread(self.agents.stop_all, timeout_s=grace_s)
        self.ehr.stop()
        if not keep_keys:
            await self.store.delete_prefix()
        await self.store.aclose()
        await self.bus.aclose()
        await self.trust.aclose()
