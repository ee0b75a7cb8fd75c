"""The reconciliation workflow end to end in one process: in-memory bus and store, mock EHR."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agents.mock_ehr import EhrConfig, MockEhrServer, summarize_audit_log
from agents.roles import ROLES
from mesh.bus import InMemoryBroker, InMemoryBus
from mesh.runtime import AgentWorker, MeshClient, RuntimeOptions, StepState, WorkerOptions
from mesh.runtime.agent import build_worker
from mesh.security import data_cipher
from mesh.store import InMemoryBlobStore, InMemoryStateStore, step_key
from protocols import StepCompleted, StepStarted, Topics, load_workflow_spec

SPEC = Path(__file__).resolve().parents[3] / "agents" / "workflows" / "reconciliation.yaml"


@pytest.fixture
def ehr(tmp_path: Path):  # type: ignore[no-untyped-def]
    with MockEhrServer(audit_log=tmp_path / "audit.jsonl", config=EhrConfig(patients=12)) as srv:
        yield srv


@pytest.fixture
async def mesh(ehr: MockEhrServer) -> AsyncIterator[dict]:  # type: ignore[type-arg]
    broker = InMemoryBroker(default_partitions=4)
    topics = Topics(prefix="t")
    store = InMemoryStateStore()
    blobs = InMemoryBlobStore()
    http = httpx.AsyncClient(timeout=5.0)
    workers: list[AgentWorker] = []
    tasks: list[asyncio.Task[None]] = []

    def start(role: str, agent_id: str) -> AgentWorker:
        bus = InMemoryBus(broker, topics=topics, client_id=agent_id)
        w = build_worker(
            ROLES[role], bus, store, agent_id=agent_id, topics=topics, blobs=blobs,
            resources={"http": http}, runtime=RuntimeOptions(),
            worker=WorkerOptions(poll_timeout_ms=50),
        )
        workers.append(w)
        tasks.append(asyncio.create_task(w.run()))
        return w

    for role, agent in [("identity", "id-1"), ("fetch", "fetch-1"), ("fetch", "fetch-2"),
                        ("validate", "val-1"), ("report", "rep-1")]:
        start(role, agent)
    client = MeshClient(InMemoryBus(broker, topics=topics, client_id="cli"), topics=topics)
    yield {"client": client, "store": store, "blobs": blobs, "workers": workers, "tasks": tasks}
    for w in workers:
        w.stop()
    await asyncio.gather(*tasks, return_exceptions=True)
    await http.aclose()


async def test_reconciliation_completes_with_one_auth_call(mesh: dict, ehr: MockEhrServer) -> None:  # type: ignore[type-arg]
    spec = load_workflow_spec(SPEC)
    client: MeshClient = mesh["client"]
    wf = await client.submit(spec, variables={"ehr_base_url": ehr.base_url})
    view = None
    async for view, _ in client.follow(wf, timeout_s=60):  # noqa: B007 - read after the loop
        pass
    assert view is not None and view.finished is not None, "workflow did not finish"
    assert view.finished.status == "succeeded"
    assert set(view.completed) == {"identity", "fetch", "validate", "report"}
    # The token discovered by identity reached report (three steps away) through re-hydration.
    report = view.completed["report"]
    assert "Patients checked: 12" in report.outputs["report"]
    # Secrets travel by reference, never by value.
    [token_var] = [v for v in view.completed["identity"].variables if v.name == "auth_token"]
    assert token_var.value is None and token_var.secret and token_var.ref
    audit = summarize_audit_log(ehr.audit_log)
    assert audit.auth_calls == 1
    assert audit.unauthorized == 0
    assert audit.duplicate_effects == 0
    assert audit.effects_created == 12 + 1  # one reconciliation per patient, one report
    # Every turn was checkpointed: the last checkpoint of validate is at its last turn.
    state = StepState.from_bytes((await mesh["store"].read(step_key(wf, "validate"))).data)
    assert state.status == "completed" and state.turn == view.completed["validate"].turns == 12
    assert len(await mesh["blobs"].list(f"{wf}/validate/")) == 12
    # The token never reached a checkpointed history line.
    sealed = (await mesh["store"].read(token_var.ref)).data
    token_value = data_cipher().open(sealed, context=("secret", wf, "auth_token"))
    assert token_value.encode() not in sealed  # stored by reference, and sealed there
    assert token_value not in repr(state.history)


async def test_a_fault_free_run_starts_every_step_once(mesh: dict, ehr: MockEhrServer) -> None:  # type: ignore[type-arg]
    # Between the end of a step's task and reading its own StepCompleted back, the owner must not
    # start the step again (that was a second claim, a StepStarted "resumed" from the last turn).
    spec = load_workflow_spec(SPEC)
    client: MeshClient = mesh["client"]
    wf = await client.submit(spec, variables={"ehr_base_url": ehr.base_url})
    view = None
    async for view, _ in client.follow(wf, timeout_s=60):  # noqa: B007 - read after the loop
        pass
    assert view is not None and view.finished is not None and view.finished.status == "succeeded"
    await asyncio.sleep(0.5)  # give a would-be second run time to announce itself
    async for view, _ in client.follow(wf, timeout_s=5):  # noqa: B007 - re-read the whole log
        pass
    assert view is not None
    starts = {step: len(s) for step, s in view.started.items()}
    assert starts == {"identity": 1, "fetch": 1, "validate": 1, "report": 1}
    assert view.resumes() == 0


async def test_every_event_of_a_step_goes_through_one_publisher(mesh: dict, ehr: MockEhrServer) -> None:  # type: ignore[type-arg]
    # StepStarted/Progress come from the runner, StepCompleted from the worker: both go out
    # through the runner's publisher (one publish span and trace context per event).
    seen: list[tuple[str, str]] = []
    for w in mesh["workers"]:
        inner = w.runner.publish

        async def publish(env, inner=inner):  # type: ignore[no-untyped-def]
            seen.append((env.step_id, env.kind))
            await inner(env)

        w.runner.publish = publish
    client: MeshClient = mesh["client"]
    wf = await client.submit(load_workflow_spec(SPEC), variables={"ehr_base_url": ehr.base_url})
    view = None
    async for view, _ in client.follow(wf, timeout_s=60):  # noqa: B007 - read after the loop
        pass
    assert view is not None and view.finished is not None and view.finished.status == "succeeded"
    for step in ("identity", "fetch", "validate", "report"):
        kinds = [kind for s, kind in seen if s == step]
        assert kinds[0] == StepStarted.KIND and kinds[-1] == StepCompleted.KIND, (step, kinds)
