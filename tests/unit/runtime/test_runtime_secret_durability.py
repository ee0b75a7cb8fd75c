"""A step result is published only once the secrets it references are in the shared store.

Each agent has its own JournalingStateStore over one shared inner store whose secret keys refuse
writes for a while (the way Redis was briefly unreachable for one agent): identity's token write
lands in identity's local journal. Its StepCompleted must wait for that write to reach the shared
store, or fetch looks the token up by reference, finds nothing and runs without it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from agents.mock_ehr import EhrConfig, MockEhrServer, summarize_audit_log
from agents.roles import ROLES
from mesh.bus import InMemoryBroker, InMemoryBus
from mesh.errors import StoreUnavailable
from mesh.runtime import AgentWorker, MeshClient, RuntimeOptions, WorkerOptions
from mesh.runtime.agent import build_worker
from mesh.store import (
    Checkpoint,
    InMemoryBlobStore,
    InMemoryStateStore,
    JournalingStateStore,
    JournalOptions,
)
from protocols import Topics, load_workflow_spec

SPEC = Path(__file__).resolve().parents[3] / "agents" / "workflows" / "reconciliation.yaml"


class SecretsDownStore(InMemoryStateStore):
    """Refuses writes of secret keys while ``secrets_down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets_down = True
        self.refused = 0

    async def write(self, key: str, data: bytes, *, epoch: int, owner: str = "", workflow_id: str | None = None) -> Checkpoint:
        if self.secrets_down and ":secret:" in key:
            self.refused += 1
            raise StoreUnavailable("secret keys switched off by the test")
        return await super().write(key, data, epoch=epoch, owner=owner, workflow_id=workflow_id)


async def test_dependent_step_finds_the_secret_its_producer_journaled(tmp_path: Path) -> None:
    inner = SecretsDownStore()
    broker = InMemoryBroker(default_partitions=2)
    topics = Topics(prefix="t")
    blobs = InMemoryBlobStore()
    # A slow flusher: the journal alone would replay the token only after fetch had looked.
    slow = JournalOptions(retry_interval_s=30, max_retry_interval_s=30)
    with MockEhrServer(audit_log=tmp_path / "audit.jsonl", config=EhrConfig(patients=3)) as ehr:
        http = httpx.AsyncClient(timeout=5.0)
        workers: list[AgentWorker] = []
        stores: list[JournalingStateStore] = []
        for role in ("identity", "fetch", "validate", "report"):
            store = JournalingStateStore(inner, tmp_path / "journal", agent_id=f"{role}-1", options=slow)
            store.start()
            stores.append(store)
            workers.append(build_worker(
                ROLES[role], InMemoryBus(broker, topics=topics, client_id=f"{role}-1"), store,
                agent_id=f"{role}-1", topics=topics, blobs=blobs, resources={"http": http},
                runtime=RuntimeOptions(), worker=WorkerOptions(poll_timeout_ms=50, retry_delay_s=0.2),
            ))
        tasks = [asyncio.create_task(w.run()) for w in workers]
        try:
            client = MeshClient(InMemoryBus(broker, topics=topics, client_id="cli"), topics=topics)
            wf = await client.submit(load_workflow_spec(SPEC), variables={"ehr_base_url": ehr.base_url})
            for _ in range(200):  # until identity's token write has been refused (journaled)
                if inner.refused:
                    break
                await asyncio.sleep(0.05)
            assert inner.refused, "identity never tried to write its token"
            await asyncio.sleep(0.5)
            inner.secrets_down = False
            view = None
            async for view, _ in client.follow(wf, timeout_s=60):  # noqa: B007 - read after the loop
                pass
            assert view is not None and view.finished is not None, "workflow did not finish"
            assert view.finished.status == "succeeded", (view.failed, view.escalated)
            audit = summarize_audit_log(ehr.audit_log)
            assert audit.auth_calls == 1 and audit.unauthorized == 0, audit
        finally:
            for w in workers:
                w.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            for store in stores:
                await store.aclose()
            await http.aclose()


async def test_agents_forget_a_finished_workflows_token(tmp_path: Path) -> None:
    # The process-wide redaction registry held every workflow's token for good (bench.memory).
    from mesh.security import secret_registry

    store = InMemoryStateStore()
    broker = InMemoryBroker(default_partitions=2)
    topics = Topics(prefix="t")
    before = set(secret_registry().values())
    with MockEhrServer(audit_log=tmp_path / "audit.jsonl", config=EhrConfig(patients=2)) as ehr:
        http = httpx.AsyncClient(timeout=5.0)
        workers = [
            build_worker(ROLES[role], InMemoryBus(broker, topics=topics, client_id=f"{role}-1"), store,
                         agent_id=f"{role}-1", topics=topics, resources={"http": http}, runtime=RuntimeOptions(),
                         worker=WorkerOptions(poll_timeout_ms=50, retry_delay_s=0.2))
            for role in ("identity", "fetch", "validate", "report")
        ]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        try:
            client = MeshClient(InMemoryBus(broker, topics=topics, client_id="cli"), topics=topics)
            wf = await client.submit(load_workflow_spec(SPEC), variables={"ehr_base_url": ehr.base_url})
            view = None
            async for view, _ in client.follow(wf, timeout_s=60):  # noqa: B007 - read after the loop
                pass
            assert view is not None and view.finished is not None and view.finished.status == "succeeded"
            learned = set()
            for _ in range(100):  # every member folds the completion, then forgets the workflow
                learned = set(secret_registry().values()) - before
                if not learned:
                    break
                await asyncio.sleep(0.05)
            assert not learned, f"{len(learned)} secret value(s) of a finished workflow still registered"
        finally:
            for w in workers:
                w.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            await http.aclose()
