"""Containment in the agent worker: a record that makes the handler raise is dead-lettered once.

Two roles' workers (two consumer groups) read the same poisoned records on the in-memory bus; a
handler bug (RecursionError, KeyError, MemoryError) on each is dead-lettered exactly once across
both groups, committed past, and both workers keep running and consuming.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agents.roles import ROLES
from mesh.bus import InMemoryBroker, InMemoryBus
from mesh.runtime import AgentWorker, RuntimeOptions, WorkerOptions
from mesh.runtime.agent import build_worker
from mesh.runtime.view import WorkflowView
from mesh.store import InMemoryBlobStore, InMemoryStateStore
from protocols import DeadLetter, Envelope, StepProgress, Topics
from tests.waiting import until

_ERRORS: dict[str, BaseException] = {
    "poison-recursion": RecursionError("maximum recursion depth exceeded"),
    "poison-key": KeyError("missing"),
    "poison-memory": MemoryError(),
}


async def test_handler_failures_are_dead_lettered_once_and_workers_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    original = WorkflowView.apply

    def apply(self: WorkflowView, env: Envelope, **kwargs: Any) -> Any:
        if env.id in _ERRORS:
            raise _ERRORS[env.id]
        return original(self, env, **kwargs)

    monkeypatch.setattr(WorkflowView, "apply", apply)
    broker = InMemoryBroker(default_partitions=2)
    topics = Topics(prefix="c")
    store, blobs = InMemoryStateStore(), InMemoryBlobStore()
    workers: list[AgentWorker] = []
    for role in ("identity", "report"):
        bus = InMemoryBus(broker, topics=topics, client_id=f"{role}-1")
        workers.append(build_worker(ROLES[role], bus, store, agent_id=f"{role}-1", topics=topics, blobs=blobs,
                                    resources={}, runtime=RuntimeOptions(), worker=WorkerOptions(poll_timeout_ms=20)))
    tasks = [asyncio.create_task(w.run()) for w in workers]
    client = InMemoryBus(broker, topics=topics, client_id="test")
    dlq = await client.subscribe([topics.dead_letter], group="dlq-reader")
    try:
        for poison in [*_ERRORS, "fine-1"]:
            await client.publish(topics.workflow_events, Envelope.of(
                StepProgress(turn=1, action="a", outcome="ok", owner="x"), sender="x", workflow_id="wf-1", step_id="s", id=poison))
        await until(lambda: all(w.records_contained >= len(_ERRORS) for w in workers))
        assert [w.records_contained for w in workers] == [3, 3]
        letters = []
        while batch := await dlq.poll(timeout_ms=300):
            letters += [d.envelope.payload_model(DeadLetter) for d in batch]
        assert sorted(letter.reason for letter in letters) == ["handler_error"] * 3
        assert sorted(letter.error.split(":")[0] for letter in letters) == ["KeyError", "MemoryError", "RecursionError"]
        assert len({letter.offset for letter in letters}) == 3
        assert not any(t.done() for t in tasks), "a worker stopped on a poisoned record"
        # And they go on: a later record of another workflow is folded by both.
        await client.publish(topics.workflow_events, Envelope.of(
            StepProgress(turn=1, action="a", outcome="ok", owner="x"), sender="x", workflow_id="wf-2", step_id="s"))
        await until(lambda: all("wf-2" in w._tracked for w in workers))
        assert all("wf-2" in w._tracked for w in workers)
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await dlq.aclose()


