"""Agents keep the run index as they fold events; a finished workflow's state gets its retention TTL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from agents.mock_ehr import EhrConfig, MockEhrServer
from agents.roles import ROLES
from mesh.bus import InMemoryBroker, InMemoryBus
from mesh.errors import CheckpointNotFound, StoreUnavailable
from mesh.runtime import AgentWorker, MeshClient, RuntimeOptions, WorkerOptions
from mesh.runtime.agent import build_worker
from mesh.runtime.view import run_summary, trace_id_of
from mesh.store import InMemoryRunIndex, InMemoryStateStore, RunSummary, step_key
from protocols import Topics, load_workflow_spec

SPEC = Path(__file__).resolve().parents[3] / "agents" / "workflows" / "reconciliation.yaml"


class FlakyIndex(InMemoryRunIndex):
    """An index whose backend is down for the first ``down`` writes (the agents must not care)."""

    def __init__(self, down: int) -> None:
        super().__init__()
        self.down = down
        self.refused = 0

    async def record(self, run: RunSummary) -> bool:
        if self.refused < self.down:
            self.refused += 1
            raise StoreUnavailable("record run: Redis unreachable (test)")
        return await super().record(run)


async def _run_workflow(tmp_path: Path, index: InMemoryRunIndex, *, ttl_s: int) -> tuple[str, InMemoryStateStore, object]:
    broker = InMemoryBroker(default_partitions=4)
    topics = Topics(prefix="t")
    store = InMemoryStateStore()
    workers: list[AgentWorker] = []
    tasks: list[asyncio.Task[None]] = []
    with MockEhrServer(audit_log=tmp_path / "audit.jsonl", config=EhrConfig(patients=4)) as ehr:
        async with httpx.AsyncClient(timeout=5.0) as http:
            for role, agent in [("identity", "id-1"), ("fetch", "fetch-1"), ("validate", "val-1"), ("report", "rep-1")]:
                w = build_worker(
                    ROLES[role], InMemoryBus(broker, topics=topics, client_id=agent), store, agent_id=agent,
                    topics=topics, resources={"http": http}, runtime=RuntimeOptions(), index=index,
                    worker=WorkerOptions(poll_timeout_ms=50, finished_ttl_s=ttl_s, index_retry_s=0.05),
                )
                workers.append(w)
                tasks.append(asyncio.create_task(w.run()))
            client = MeshClient(InMemoryBus(broker, topics=topics, client_id="cli"), topics=topics)
            trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
            wf = await client.submit(load_workflow_spec(SPEC), variables={"ehr_base_url": ehr.base_url}, trace=trace)
            view = None
            async for view, _ in client.follow(wf, timeout_s=60):  # noqa: B007
                pass
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                entry = await index.get(wf)
                if entry is not None and entry.status == "succeeded":
                    break
                await asyncio.sleep(0.05)
            for w in workers:
                w.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
    return wf, store, view


async def test_index_matches_the_log_and_finished_state_expires(tmp_path: Path) -> None:
    index = InMemoryRunIndex()
    wf, store, view = await _run_workflow(tmp_path, index, ttl_s=1)
    assert view is not None and view.finished is not None  # type: ignore[attr-defined]
    entry = await index.get(wf)
    assert entry is not None, "no agent indexed the workflow"
    expected = run_summary(view)  # type: ignore[arg-type]
    assert entry.status == "succeeded"
    assert [(s.id, s.status, s.owner, s.epoch, s.turns) for s in entry.steps] == \
        [(s.id, s.status, s.owner, s.epoch, s.turns) for s in expected.steps]
    assert all(s.owner and s.epoch >= 1 and s.turns >= 1 for s in entry.steps)
    assert entry.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert entry.name == "patient-reconciliation" and entry.events == expected.events
    assert 0 < entry.created_ms <= entry.updated_ms and entry.finished_ms >= entry.created_ms
    # Retention: checkpoints and secrets of the finished workflow, and its index entry, expire.
    await store.read(step_key(wf, "validate"))
    await asyncio.sleep(1.2)
    for step in ("identity", "fetch", "validate", "report"):
        try:
            await store.read(step_key(wf, step))
        except CheckpointNotFound:
            continue
        raise AssertionError(f"checkpoint of {step} outlived the retention TTL")
    assert await index.get(wf) is None


async def test_index_catches_up_after_an_outage(tmp_path: Path) -> None:
    index = FlakyIndex(down=5)
    wf, _store, view = await _run_workflow(tmp_path, index, ttl_s=0)
    assert index.refused == 5
    entry = await index.get(wf)
    assert entry is not None and entry.status == "succeeded"
    assert entry.events == run_summary(view).events  # type: ignore[arg-type]


def test_trace_id_from_traceparent() -> None:
    assert trace_id_of({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}) == \
        "0af7651916cd43dd8448eb211c80319c"
    assert trace_id_of({"traceparent": "00-" + "0" * 32 + "-b7ad6b7169203331-01"}) == ""
    assert trace_id_of({"traceparent": "garbage"}) == ""
    assert trace_id_of({}) == ""
    assert trace_id_of({"trace_id": "abc"}) == "abc"
