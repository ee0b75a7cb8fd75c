"""A partition's hand-off on a real Kafka rebalance: the loser stops acting, nothing is committed past running work.

Two ``AgentWorker`` members of one role share a one-partition workflow log on the session's real
Kafka broker (checkpoints in its real Redis). A second member joining makes the broker rebalance
the group for real. The first member's envelope guard can be held on one record (a slow guard: the
trust guard reads Redis there), so a rebalance lands while that member is in the middle of a poll;
its action records every call (member, idempotency key, start, end) like an outside service's audit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition as KafkaTP

from mesh.bus import KafkaBus, TopicPartition
from mesh.llm import ActionSpec
from mesh.runtime import AgentWorker, MeshClient, RuntimeOptions, WorkerOptions
from mesh.runtime.actions import Action, ActionContext, ActionOutcome
from mesh.runtime.agent import build_worker
from mesh.store import RedisStateStore
from protocols import Envelope, StepSpec, StepStarted, Topics, WorkflowSpec, deterministic_event_id
from tests.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@dataclass
class Calls:
    """The audit of the action: (member, idempotency key, start, end or None while in flight)."""

    rows: list[list[Any]] = field(default_factory=list)
    seconds: float = 0.0

    def action(self) -> Action:
        async def work(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
            row = [ctx.resource("member"), ctx.idempotency_key, time.monotonic(), None]
            self.rows.append(row)
            await asyncio.sleep(self.seconds)
            row[3] = time.monotonic()
            done = int(ctx.memory.get("n", 0)) + 1
            return ActionOutcome(summary=f"work {done}", memory={"n": done}, done=done >= 2)

        return Action(
            ActionSpec(
                name="work", description="do a slow thing", params_schema={"type": "object"}
            ),
            work,
            side_effect=True,
        )

    def keys(self, member: str | None = None) -> list[str]:
        return [r[1] for r in self.rows if member is None or r[0] == member]


@dataclass
class _Role:
    name: str
    actions: dict[str, Action]

    def policy(self, request: Any) -> Any:
        from mesh.llm import Decision

        return Decision(action="work", params={}, reasoning="rule")


class Gate:
    """An envelope guard that holds the record with id ``hold`` until released (a slow guard)."""

    def __init__(self) -> None:
        self.hold = ""
        self.reached = asyncio.Event()
        self.released = asyncio.Event()

    async def __call__(self, env: Envelope) -> None:
        if self.hold and env.id == self.hold:
            self.reached.set()
            await self.released.wait()


class Listener:
    """Wraps a worker's rebalance callbacks to record when they ran."""

    def __init__(self, worker: AgentWorker) -> None:
        self.worker = worker
        self.assigned: list[tuple[float, set[TopicPartition]]] = []
        self.revoked: list[tuple[float, float]] = []
        worker_revoked, worker_assigned = worker.on_revoked, worker.on_assigned

        async def on_revoked(partitions: set[TopicPartition]) -> None:
            start = time.monotonic()
            await worker_revoked(partitions)
            self.revoked.append((start, time.monotonic()))

        async def on_assigned(partitions: set[TopicPartition]) -> None:
            await worker_assigned(partitions)
            self.assigned.append((time.monotonic(), set(partitions)))

        worker.on_revoked = on_revoked  # type: ignore[method-assign]
        worker.on_assigned = on_assigned  # type: ignore[method-assign]


class Mesh:
    def __init__(self, kafka: str, redis_url: str, prefix: str, key_prefix: str) -> None:
        self.kafka, self.redis_url, self.key_prefix = kafka, redis_url, key_prefix
        self.topics = Topics(prefix=prefix)
        self.calls = Calls()
        self.role = _Role("work", {"work": self.calls.action()})
        self.members: dict[
            str, tuple[AgentWorker, Listener, asyncio.Task[None], KafkaBus, RedisStateStore]
        ] = {}
        self.client_bus = KafkaBus(kafka, topics=self.topics, client_id="test-client", partitions=1)

    @property
    def group(self) -> str:
        return f"{self.topics.prefix}.role.work"

    async def start(self, member: str, *, guard: Gate | None = None) -> Listener:
        bus = KafkaBus(self.kafka, topics=self.topics, client_id=member, partitions=1)
        await bus.start()
        store = RedisStateStore.from_url(self.redis_url, key_prefix=self.key_prefix)
        worker = build_worker(
            self.role,
            bus,
            store,
            agent_id=member,
            topics=self.topics,
            resources={"member": member},  # type: ignore[arg-type]
            runtime=RuntimeOptions(),
            guard=guard,
            worker=WorkerOptions(
                poll_timeout_ms=100, session_timeout_ms=6000, heartbeat_interval_ms=500
            ),
        )
        listener = Listener(worker)
        joined = asyncio.Event()
        task = asyncio.create_task(worker.run(on_joined=lambda _w: joined.set()))
        self.members[member] = (worker, listener, task, bus, store)
        await asyncio.wait_for(joined.wait(), 60)
        return listener

    async def submit(self, spec: WorkflowSpec, wf: str) -> None:
        await MeshClient(self.client_bus, topics=self.topics, client_id="test-client").submit(
            spec, workflow_id=wf
        )

    async def committed(self) -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(self.group)
        finally:
            await admin.close()
        meta = offsets.get(KafkaTP(self.topics.workflow_events, 0))
        return meta.offset if meta is not None else -1

    async def aclose(self) -> None:
        for worker, _l, _t, _b, _s in self.members.values():
            worker.stop()
        for _w, _l, task, bus, store in self.members.values():
            await asyncio.gather(task, return_exceptions=True)
            await bus.aclose()
            await store.aclose()
        await self.client_bus.aclose()


@pytest.fixture
async def mesh(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, key_prefix: str
) -> AsyncIterator[Mesh]:
    m = Mesh(kafka_bootstrap, redis_url, topic_prefix, key_prefix)
    await m.client_bus.start()
    try:
        yield m
    finally:
        await m.aclose()


def _spec(*, blocked: bool) -> WorkflowSpec:
    """One ``work`` step; ``blocked``: it waits for a step of another role that never runs."""
    steps = [StepSpec(id="work", role="work", depends_on=("before",) if blocked else ())]
    if blocked:
        steps.insert(0, StepSpec(id="before", role="other"))
    return WorkflowSpec(name="handoff", steps=tuple(steps))


async def test_events_read_across_a_revocation_are_not_committed_past_a_running_workflow(
    mesh: Mesh,
) -> None:
    # Member "a-first" sorts first, so it gets the one partition back after the rebalance.
    gate = Gate()
    first = await mesh.start("a-first", guard=gate)
    await mesh.submit(_spec(blocked=True), "wf-running")
    await until(lambda: "wf-running" in mesh.members["a-first"][0]._tracked, timeout_s=30)
    assert await mesh.committed() <= 0, "the submission was committed while the step still waits"
    # A later event of the running workflow, held in the first member's guard mid-poll.
    gate.hold = deterministic_event_id("wf-running", "before", "started", 1, 0)
    await mesh.client_bus.publish(
        mesh.topics.workflow_events,
        Envelope.of(
            StepStarted(role="other", owner="other-1", epoch=1),
            sender="other-1",
            workflow_id="wf-running",
            step_id="before",
            id=gate.hold,
        ),
    )
    await asyncio.wait_for(gate.reached.wait(), 30)
    assigned_before = len(first.assigned)
    await mesh.start("b-second")  # a real rebalance while the first member is inside its poll
    await until(lambda: len(first.assigned) > assigned_before, timeout_s=60)
    gate.released.set()
    await asyncio.sleep(3)  # let the first member fold (and commit) what it read
    committed = await mesh.committed()
    assert committed <= 0, (
        f"the group's offset moved to {committed}, past the submission (offset 0) of a workflow whose "
        "step has not run: a successor would never see it"
    )


async def test_a_member_that_lost_the_partition_does_not_start_its_work(mesh: Mesh) -> None:
    # "a-second" sorts first: after the rebalance it owns the partition, "z-first" owns nothing.
    mesh.calls.seconds = 0.2
    gate = Gate()
    first = await mesh.start("z-first", guard=gate)
    gate.hold = deterministic_event_id("wf-new", "submitted")
    await mesh.submit(_spec(blocked=False), "wf-new")
    await asyncio.wait_for(gate.reached.wait(), 30)
    second = await mesh.start("a-second")
    await until(lambda: bool(second.assigned) and bool(first.revoked), timeout_s=60)
    gate.released.set()
    await until(
        lambda: len(mesh.calls.keys()) >= 2 and all(r[3] for r in mesh.calls.rows), timeout_s=60
    )
    await asyncio.sleep(2)
    assert mesh.calls.keys("z-first") == [], (
        f"the member that lost the partition acted: {mesh.calls.rows}"
    )
    assert sorted(mesh.calls.keys()) == ["wf-new:work:1:work", "wf-new:work:2:work"], (
        mesh.calls.rows
    )


async def test_the_turn_in_flight_is_checkpointed_before_the_successor_starts(mesh: Mesh) -> None:
    # "z-first" runs a slow turn when "a-second" joins and takes the partition.
    mesh.calls.seconds = 3.0
    first = await mesh.start("z-first")
    await mesh.submit(_spec(blocked=False), "wf-slow")
    await until(lambda: len(mesh.calls.rows) >= 1, timeout_s=30)
    second = await mesh.start("a-second")
    await until(
        lambda: any(r[1].endswith(":2:work") and r[3] for r in mesh.calls.rows), timeout_s=90
    )
    await asyncio.sleep(1)
    assert first.revoked, "no rebalance happened"
    keys = mesh.calls.keys()
    assert sorted(keys) == ["wf-slow:work:1:work", "wf-slow:work:2:work"], (
        f"a turn was done twice (the loser's turn in flight was cut and redone): {mesh.calls.rows}"
    )
    (a_row,) = [r for r in mesh.calls.rows if r[0] == "z-first"]
    (b_row,) = [r for r in mesh.calls.rows if r[0] == "a-second"]
    assert a_row[3] <= b_row[2], (
        f"the successor acted before the loser had stopped: {mesh.calls.rows}"
    )
    assert first.revoked[0][1] <= second.assigned[-1][0]
