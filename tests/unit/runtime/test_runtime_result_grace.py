"""A member that reads the log behind a step's old owner does not re-claim a finished step.

After a rebalance (or a SIGSTOP that moved partitions) the new member may schedule a step whose
owner already checkpointed it as completed and published the result, before the member has read
that result from the log. It used to re-claim the step at once (a new epoch, a StepStarted after
the StepCompleted: the campaign's ``step_run_twice``). It now waits ``result_grace_s`` for the
result to show up, and re-claims only if it does not (the owner died between checkpoint and
publish: covered by the second test).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from agents.roles import ROLES
from mesh.bus import InMemoryBroker, InMemoryBus
from mesh.errors import CheckpointNotFound
from mesh.runtime import MeshClient, RuntimeOptions, WorkerOptions
from mesh.runtime.agent import build_worker
from mesh.runtime.state import StepState
from mesh.runtime.step_runner import step_key
from mesh.store import Checkpoint, InMemoryStateStore
from protocols import Envelope, StepCompleted, StepStarted, Topics, load_workflow_spec

SPEC = Path(__file__).resolve().parents[3] / "agents" / "workflows" / "reconciliation.yaml"
WF = "patient-reconciliation-grace"


class FirstReadMisses(InMemoryStateStore):
    """The first read of a key finds nothing: the old owner's final write lands between the new
    member's first look and its claim (the race a 209-workflow campaign's network-cut hit)."""

    def __init__(self) -> None:
        super().__init__()
        self.looked: set[str] = set()

    async def read(self, key: str, version: int | None = None) -> Checkpoint:
        if key not in self.looked:
            self.looked.add(key)
            raise CheckpointNotFound(key)
        return await super().read(key, version)


async def _run(result_delay_s: float | None, grace_s: float, *, racy: bool = False) -> list[Envelope]:
    """Identity's checkpoint says 'completed by identity-0'; identity-0's result is published
    ``result_delay_s`` after the submission (None: never). Returns identity-1's StepStarted events."""
    broker = InMemoryBroker(default_partitions=2)
    topics = Topics(prefix="t")
    store = FirstReadMisses() if racy else InMemoryStateStore()
    key = step_key(WF, "identity")
    epoch = await store.claim(key, "identity-0")
    done = StepState(workflow_id=WF, step_id="identity", role="identity", status="completed",
                     owner="identity-0", epoch=epoch, turn=1)
    await store.write(key, done.to_bytes(), epoch=epoch, owner="identity-0", workflow_id=WF)
    http = httpx.AsyncClient(timeout=1.0)
    worker = build_worker(
        ROLES["identity"], InMemoryBus(broker, topics=topics, client_id="identity-1"), store,
        agent_id="identity-1", topics=topics, resources={"http": http}, runtime=RuntimeOptions(),
        worker=WorkerOptions(poll_timeout_ms=50, retry_delay_s=0.2, result_grace_s=grace_s),
    )
    task = asyncio.create_task(worker.run())
    old_owner = InMemoryBus(broker, topics=topics, client_id="identity-0")
    reader = InMemoryBus(broker, topics=topics, client_id="reader")
    try:
        client = MeshClient(InMemoryBus(broker, topics=topics, client_id="cli"), topics=topics)
        await client.submit(load_workflow_spec(SPEC), workflow_id=WF, variables={"ehr_base_url": "http://127.0.0.1:9"})
        if result_delay_s is not None:
            await asyncio.sleep(result_delay_s)
            for payload, what in ((StepStarted(role="identity", owner="identity-0", epoch=epoch), "started"),
                                  (StepCompleted(owner="identity-0", turns=1), "completed")):
                await old_owner.publish(topics.workflow_events, Envelope.of(
                    payload, sender="identity-0", workflow_id=WF, step_id="identity", id=f"{what}-by-identity-0"))
        await asyncio.sleep(grace_s + 1.5)
    finally:
        worker.stop()
        await asyncio.gather(task, return_exceptions=True)
        await http.aclose()
    sub = await reader.subscribe([topics.workflow_events], group="reader")
    seen: list[Envelope] = []
    for _ in range(5):
        seen += [d.envelope for d in await sub.poll(timeout_ms=100)]
    return [e for e in seen if e.kind == StepStarted.KIND and e.sender == "identity-1"]


async def test_a_finished_steps_result_read_late_is_not_re_claimed() -> None:
    assert await _run(result_delay_s=0.5, grace_s=3.0) == []


async def test_a_finished_step_whose_result_never_came_is_published_by_its_new_owner() -> None:
    started = await _run(result_delay_s=None, grace_s=0.5)
    assert len(started) == 1 and started[0].payload["resumed_from_turn"] == 1


async def test_a_result_that_lands_between_the_first_look_and_the_claim_is_not_re_announced() -> None:
    assert await _run(result_delay_s=0.5, grace_s=3.0, racy=True) == []
