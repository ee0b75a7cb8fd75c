"""An agent process of one role: a consumer-group member over the workflow event log.

Choreography, no coordinator: every member of the role's group folds the events of the
partitions it owns; the owner of a workflow's partition runs that role's steps of it. A
workflow's events are committed only when the role has nothing left to do in it (its steps'
effects are checkpointed and their completion published), so a member that dies is replaced by
one that replays the workflow from its first event, finds the step in progress and resumes it
from the last turn checkpoint.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mesh.backoff import ExponentialBackoff
from mesh.bus import (
    Bus,
    Delivery,
    EnvelopeGuard,
    Subscription,
    SubscriptionOptions,
    TopicPartition,
    publish_dead_letter,
)
from mesh.errors import BusError, CheckpointNotFound, MeshError, TransientError
from mesh.gossip import GossipNode
from mesh.runtime.sanitize import one_line_error
from mesh.runtime.state import StepState
from mesh.runtime.step_runner import OwnershipLost, Rehydration, StepRunner, secret_key
from mesh.runtime.variables import ContextVariable
from mesh.runtime.view import WorkflowView, run_summary
from mesh.security import DataCipher, data_cipher
from mesh.store import RunIndex, StateStore
from protocols import (
    DeadLetter,
    Envelope,
    StepCompleted,
    StepFailed,
    StepSpec,
    Topics,
    VariableRecord,
    WorkflowCompleted,
    deterministic_event_id,
)

__all__ = ["AgentWorker", "WorkerOptions", "secret_key"]

log = logging.getLogger("mesh.runtime.worker")

_POLL_BACKOFF = ExponentialBackoff(base_s=0.1, cap_s=2.0, jitter=0.0)
"""Pause after a failed poll: 0.1 s, doubling up to 2 s."""




@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How an agent process consumes the workflow log."""

    session_timeout_ms: int = 2500
    """Group session timeout: a silent member is replaced after this long (Kafka's default is 45000)."""

    heartbeat_interval_ms: int = 500
    """Heartbeat interval, about a third of the session timeout or less."""

    poll_timeout_ms: int = 200
    """Longest wait for new events per poll."""

    retry_delay_s: float = 1.0
    """Wait before retrying a step whose store or bus was unavailable."""

    heartbeat_file: str = ""
    """Touched at most once a second while the poll loop runs (a liveness probe reads its age)."""

    group_instance_id: str = ""
    """Stable member id for static membership (the pod name); empty for a dynamic member."""

    drain_timeout_s: float = 20.0
    """On ``stop`` (SIGTERM), how long running steps may take to finish their turn in flight
    before they are cancelled; keep it under the pod's termination grace period."""

    finished_ttl_s: int = 7 * 24 * 3600
    """Seconds a finished workflow's checkpoints, secrets and run-index entry are kept (0: forever)."""

    index_retry_s: float = 5.0
    """After a failed run-index write, seconds before writing again (the log is unaffected)."""

    outage_drain_s: float = 5.0
    """``drain_timeout_s`` while the broker is unreachable (nothing can be published anyway)."""

    revoke_grace_s: float = 8.0
    """On a rebalance, how long steps of the partitions this member loses may take to finish and
    checkpoint their turn in flight before they are cancelled; keep it under the group's rebalance
    timeout (10 s), since the successor starts only when this member let go."""

    result_grace_s: float = 5.0
    """A step whose checkpoint says it ended (under any owner) but whose result this member has
    not read from the log yet is left alone this long first: after a rebalance the new member
    reads the log behind the old owner, whose result is usually already there. Only if it does
    not show up does this member re-claim the step to publish the result itself."""


_DONE_KEPT = 10_000
"""Workflow ids a member remembers as done for its role after forgetting their views (~1 MB)."""


@dataclass
class _Tracked:
    view: WorkflowView
    tp: TopicPartition
    deliveries: list[Delivery] = field(default_factory=list)


class AgentWorker:
    """Runs the steps of one role for the workflows whose partitions this member owns."""

    def __init__(
        self,
        bus: Bus,
        store: StateStore,
        runner: StepRunner,
        *,
        topics: Topics,
        options: WorkerOptions | None = None,
        guard: EnvelopeGuard | None = None,
        gossip: GossipNode | None = None,
        index: RunIndex | None = None,
    ) -> None:
        """A member of group ``<prefix>.role.<role>``; ``runner`` carries the role and agent id.

        ``guard`` vets every event before it is folded (signatures); refused ones are dead-lettered.
        ``gossip``, when given, receives every variable a step discovers (secrets as their store
        reference) and lends its replicated map to re-hydration: a variable the log has not shown
        yet (a partition, a lagging peer) is still seen, as tentative or accepted.
        ``index``, when given, gets the summary of every workflow this member folds (the run index
        ``mesh status`` reads); when a workflow finishes, its state expires after ``finished_ttl_s``.
        """
        self.bus = bus
        self.store = store
        self.runner = runner
        self.topics = topics
        self.options = options or WorkerOptions()
        self.guard = guard
        self.gossip = gossip
        self.role = runner.role
        self.agent_id = runner.agent_id
        self._tracked: dict[str, _Tracked] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._resume_done: dict[tuple[str, str], int] = {}
        # Steps whose run ended here (completed, failed or paused), with the resume-request count
        # at the time: not started again until the log says otherwise (a new resume request). The
        # log catches up a poll or two later; until then the view still calls the step runnable.
        self._ended: dict[tuple[str, str], int] = {}
        self._sub: Subscription | None = None
        self._stopping = asyncio.Event()
        self._generation = 0
        """Bumped on every revocation: a batch polled before it is not folded after it."""
        self._broken: set[str] = set()
        self.steps_completed = 0
        self.records_contained = 0
        """Records whose handling raised and that were dead-lettered and skipped."""
        self.index = index
        self._index_dirty: dict[str, WorkflowView] = {}
        self._index_retry_at = 0.0
        self._to_expire: set[str] = set()
        self._to_retire: set[str] = set()
        """Finished workflows whose gossip replica is still to be retired (background)."""
        self._spec_unknown: set[str] = set()
        """Workflows seen without their ``WorkflowSubmitted``: the run index is asked about them."""
        self._done_here: OrderedDict[str, None] = OrderedDict()
        """Workflows with nothing left for this role, forgotten (the latest ``_DONE_KEPT``): a late
        event of one is committed at once instead of growing a view that never settles."""
        self._housekeeping: asyncio.Task[None] | None = None
        self._settled_elsewhere: list[str] = []

    @property
    def group(self) -> str:
        """The consumer group of this role."""
        return f"{self.topics.prefix}.role.{self.role}"

    # -- rebalance listener ------------------------------------------------------------------
    # aiokafka calls these from its coordinator task, which may run while the poll loop is in the
    # middle of a batch: ``_generation`` tells the loop that its batch belongs to a lost assignment.

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """Stop acting on workflows that move to another member before the successor starts.

        Their views are dropped at once (nothing new is scheduled for them); their running steps
        finish the turn in flight, checkpoint it and start no other (``revoke_grace_s`` at most,
        then they are cancelled); this returns only when they have all ended, so the broker hands
        the partitions over only after this member stopped acting on them.
        """
        self._generation += 1
        lost = {wf for wf, tracked in self._tracked.items() if tracked.tp in partitions}
        for wf in lost:
            for key in [k for k in self._ended if k[0] == wf]:
                del self._ended[key]
            del self._tracked[wf]
        tasks = {key: task for key, task in self._tasks.items() if key[0] in lost}
        for wf, step in tasks:
            self.runner.request_stop_step(wf, step)
        if tasks:
            log.info("%s: revoking: letting %d step(s) finish their turn in flight", self.agent_id, len(tasks))
            _, pending = await asyncio.wait(tasks.values(), timeout=self.options.revoke_grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            if pending:
                log.warning("%s: %d step(s) still busy after %.1f s of a rebalance; cancelled", self.agent_id,
                            len(pending), self.options.revoke_grace_s)
        for key in tasks:
            self._tasks.pop(key, None)
        log.info("%s lost partitions %s", self.agent_id, sorted(partitions))

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        """New partitions: their events are replayed from the committed offset."""
        log.info("%s owns partitions %s", self.agent_id, sorted(partitions))

    # -- main loop -------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask ``run`` to return: no new step or turn starts; turns in flight finish and checkpoint."""
        self._stopping.set()
        self.runner.request_stop()

    async def run(self, *, on_joined: Callable[[AgentWorker], None] | None = None) -> None:
        """Consume and run steps until ``stop`` is called or the task is cancelled.

        ``on_joined`` is called once this member has joined its group (before any step runs).
        """
        self._sub = await self.bus.subscribe(
            [self.topics.workflow_events],
            group=self.group,
            member=self.agent_id,
            listener=self,
            options=SubscriptionOptions(
                session_timeout_ms=self.options.session_timeout_ms,
                heartbeat_interval_ms=self.options.heartbeat_interval_ms,
                guard=self.guard,
                group_instance_id=self.options.group_instance_id,
            ),
        )
        log.info("%s joined %s", self.agent_id, self.group)
        if on_joined is not None:
            on_joined(self)
        outage = getattr(self.bus, "outage", None)
        try:
            beat = 0.0
            poll_backoff = _POLL_BACKOFF.start()
            poll_failures = 0
            while not self._stopping.is_set():
                if outage is not None:
                    outage.tick()
                if self.options.heartbeat_file and time.monotonic() - beat >= 1.0:
                    beat = time.monotonic()
                    _touch(self.options.heartbeat_file)
                try:
                    deliveries = await self._sub.poll(timeout_ms=self.options.poll_timeout_ms)
                except BusError as exc:
                    # The broker is away for a moment: the agent waits for it, it does not exit.
                    # One line when polling starts failing and one a minute after; not one per retry.
                    poll_failures += 1
                    if poll_failures == 1 or poll_failures % 30 == 0:
                        log.warning("%s: poll failed %d time(s) (%s); retrying every %.1f s at most", self.agent_id,
                                    poll_failures, one_line_error(exc), _POLL_BACKOFF.cap_s)
                    await poll_backoff.sleep()
                    continue
                if poll_failures:
                    log.info("%s: polling works again after %d failure(s)", self.agent_id, poll_failures)
                    poll_failures = 0
                poll_backoff.reset()
                generation = self._generation
                for d in deliveries:
                    if self._generation != generation:
                        # The partitions moved while this batch was being handled: the rest is read
                        # again from the committed offset by their owner (possibly this member).
                        log.info("%s: dropping the rest of a batch read before a rebalance", self.agent_id)
                        break
                    await self._contain(d)
                if self._settled_elsewhere:
                    settled, self._settled_elsewhere = self._settled_elsewhere, []
                    await self._release_settled_elsewhere(settled)
                self._kick_housekeeping()
                self._schedule()
        finally:
            await self._drain_steps()
            if self._housekeeping is not None:  # let pending index writes land, briefly
                done, _ = await asyncio.wait({self._housekeeping}, timeout=2.0)
                if not done:
                    self._housekeeping.cancel()
                    await asyncio.gather(self._housekeeping, return_exceptions=True)
            await self.runner.drain()
            # Leaving the group (a dynamic member) moves the partitions at once: the successor
            # does not wait for the session timeout.
            await self._sub.aclose()

    async def _drain_steps(self) -> None:
        tasks = list(self._tasks.values())
        drain_s = self.options.drain_timeout_s
        outage = getattr(self.bus, "outage", None)
        if outage is not None and outage.down:
            # The broker is unreachable: a turn in flight can still checkpoint (Redis), but no
            # result can be published; do not hold a SIGTERM'd agent for the whole drain.
            drain_s = min(drain_s, self.options.outage_drain_s)
        if tasks and self._stopping.is_set() and drain_s > 0:
            log.info("%s: letting %d step(s) finish their turn in flight (%.0f s at most)", self.agent_id,
                     len(tasks), drain_s)
            _, pending = await asyncio.wait(tasks, timeout=drain_s)
            if pending:
                log.warning("%s: %d step(s) still busy after %.0f s; cancelling", self.agent_id, len(pending), drain_s)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _contain(self, d: Delivery) -> None:
        # Containment: whatever one record does in the handler, it is dead-lettered (once,
        # across groups), committed past, and the loop goes on. Bus errors are not the record's
        # fault: they propagate to the poll loop's retry.
        try:
            await self._on_delivery(d)
        except (asyncio.CancelledError, BusError):
            raise
        except Exception as exc:
            self.records_contained += 1
            log.error("%s: handling %s[%d]@%d (%s) failed: %s", self.agent_id, d.topic, d.partition, d.offset,
                      d.envelope.kind, one_line_error(exc))
            tracked = self._tracked.get(d.envelope.workflow_id)
            if tracked is not None and d in tracked.deliveries:
                tracked.deliveries.remove(d)
            letter = DeadLetter(
                source_topic=d.topic, partition=d.partition, offset=d.offset, reason="handler_error",
                error=f"{type(exc).__name__}: {one_line_error(exc)}"[:2000], key=d.key, consumer=self.agent_id,
            )
            await publish_dead_letter(self.bus, letter, sender=self.agent_id, claims=getattr(self.bus, "dead_letters", None))
            await self._commit(d)

    async def _on_delivery(self, d: Delivery) -> None:
        env = d.envelope
        wf = env.workflow_id
        if not wf or (wf in self._done_here and wf not in self._tracked):
            await self._commit(d)
            return
        tracked = self._tracked.get(wf)
        if tracked is None:
            tracked = self._tracked[wf] = _Tracked(WorkflowView(wf), d.tp)
        view = tracked.view
        changed = view.apply(env, at_ms=d.timestamp_ms)
        if changed:
            await self._on_folded(view, env)
        tracked.deliveries.append(d)
        if changed and env.kind in (StepCompleted.KIND, StepFailed.KIND):
            self._ended.pop((wf, env.step_id), None)  # the log has caught up with this step
        if changed and env.kind in (StepCompleted.KIND, StepFailed.KIND) and view.spec is not None:
            step = view.spec.step(env.step_id) if env.step_id in {s.id for s in view.spec.steps} else None
            if step is not None and step.role == self.role:
                await self._maybe_finish_workflow(view)
        if view.spec is None and view.finished is None and self.index is not None:
            self._spec_unknown.add(wf)
        if view.settled_for(self.role):
            for delivery in tracked.deliveries:
                await self._commit(delivery)
            tracked.deliveries.clear()
            if view.finished is not None and not any(key[0] == wf for key in self._tasks):
                self._forget_workflow(wf)

    def _forget_workflow(self, wf: str) -> None:
        """Drop what this member keeps of a workflow it has nothing left to do in (flat memory)."""
        self._tracked.pop(wf, None)
        self.runner.forget_workflow(wf)
        self._spec_unknown.discard(wf)
        self._broken.discard(wf)
        for table in (self._ended, self._resume_done):
            for key in [k for k in table if k[0] == wf]:
                del table[key]
        self._done_here[wf] = None
        self._done_here.move_to_end(wf)
        while len(self._done_here) > _DONE_KEPT:
            self._done_here.popitem(last=False)

    async def _release_settled_elsewhere(self, settled: list[str]) -> None:
        """Commit the held events of spec-less workflows the run index says are settled for this role."""
        for wf in settled:
            tracked = self._tracked.get(wf)
            if tracked is None or tracked.view.spec is not None:
                continue
            for delivery in tracked.deliveries:
                await self._commit(delivery)
            tracked.deliveries.clear()
            self._forget_workflow(wf)

    # -- run index and retention: a view of the log, written in the background ----------------
    # Redis slow or cut (a partition) must never hold up the consume loop, so the writes run in
    # one background task; a failed write is retried after ``index_retry_s`` with the latest view.

    async def _on_folded(self, view: WorkflowView, env: Envelope) -> None:
        if self.index is not None and view.spec is not None:
            # A member that joined mid-workflow (spec unseen) would only write a partial view.
            self._index_dirty[view.workflow_id] = view
        if env.kind == WorkflowCompleted.KIND and self.options.finished_ttl_s > 0:
            self._to_expire.add(view.workflow_id)
        if env.kind == WorkflowCompleted.KIND and self.gossip is not None:
            self._to_retire.add(view.workflow_id)
        self._kick_housekeeping()

    def _kick_housekeeping(self) -> None:
        pending = self._index_dirty or self._to_expire or self._to_retire or self._spec_unknown
        if not pending or time.monotonic() < self._index_retry_at:
            return
        if self._housekeeping is None or self._housekeeping.done():
            self._housekeeping = asyncio.create_task(self._housekeep(), name=f"{self.agent_id}/run-index")

    async def _housekeep(self) -> None:
        try:
            await self._flush_index()
            for wf in list(self._to_expire):
                await self._expire_finished(wf)
                self._to_expire.discard(wf)
            for wf in list(self._to_retire):
                if self.gossip is not None:
                    await self.gossip.retire(wf, ttl_s=self.options.finished_ttl_s)
                self._to_retire.discard(wf)
            await self._ask_index_about_unknown()
        except MeshError as exc:  # the index is a view and retention is housekeeping: the log has everything
            self._index_retry_at = time.monotonic() + self.options.index_retry_s
            log.warning("run index / retention write failed: %s (retrying in %.0f s)",
                        one_line_error(exc), self.options.index_retry_s)

    async def _ask_index_about_unknown(self) -> None:
        # A member reads a workflow without its WorkflowSubmitted when the group's offset passed
        # it (the role was settled then): the run index, written by members that saw the spec,
        # says whether that is so; until it does, the events stay uncommitted.
        if self.index is None:
            self._spec_unknown.clear()
            return
        for wf in list(self._spec_unknown):
            entry = await self.index.get(wf)
            mine = [s for s in entry.steps if s.role == self.role] if entry is not None else []
            if entry is not None and (entry.finished or all(s.status in ("completed", "failed") for s in mine)):
                self._settled_elsewhere.append(wf)
            self._spec_unknown.discard(wf)

    async def _flush_index(self) -> None:
        if self.index is None:
            self._index_dirty.clear()
            return
        for wf, view in list(self._index_dirty.items()):
            summary = run_summary(view)
            await self.index.record(summary)
            if len(view.seen) == summary.events:  # nothing folded meanwhile
                self._index_dirty.pop(wf, None)
            if view.finished is not None and self.options.finished_ttl_s > 0:
                await self.index.expire(wf, self.options.finished_ttl_s)

    async def _expire_finished(self, wf: str) -> None:
        ttl = self.options.finished_ttl_s
        keys = await self.store.expire_workflow(wf, ttl)
        log.info("%s finished: its %d checkpoint/secret key(s) expire in %d s", wf, keys, ttl)

    async def _commit(self, d: Delivery) -> None:
        assert self._sub is not None
        await self._sub.commit(d)

    async def _maybe_finish_workflow(self, view: WorkflowView) -> None:
        # Only the group of the step whose event settled the workflow publishes, so one
        # WorkflowCompleted per workflow (a replay re-sends the same deterministic id).
        if view.finished is not None or view.spec is None:
            return
        if view.failed:
            status = "failed"
        elif view.all_completed():
            status = "succeeded"
        else:
            return
        await self.bus.publish(
            self.topics.workflow_events,
            Envelope.of(
                WorkflowCompleted(status=status, steps=len(view.spec.steps)),  # type: ignore[arg-type]
                sender=self.agent_id,
                workflow_id=view.workflow_id,
                id=deterministic_event_id(view.workflow_id, "workflow", "completed"),
            ),
        )

    def _schedule(self) -> None:
        for wf, tracked in self._tracked.items():
            if wf in self._broken:
                continue
            try:
                self._schedule_workflow(wf, tracked)
            except Exception:  # one workflow's bad state must not stop the others
                self._broken.add(wf)
                log.exception("%s: cannot schedule steps of %s; skipping it", self.agent_id, wf)

    def _schedule_workflow(self, wf: str, tracked: _Tracked) -> None:
        view = tracked.view
        for step in view.runnable(self.role):
            key = (wf, step.id)
            if key in self._tasks:
                continue
            resume_count = view.resume_requests.get(step.id, 0)
            if key in self._ended and resume_count <= self._ended[key]:
                continue  # ended here; its result is on its way back through the log
            if step.id in view.escalated and resume_count <= self._resume_done.get(key, 0):
                continue  # paused, waiting for a decision (`mesh resume`, the console)
            resume = resume_count > self._resume_done.get(key, 0)
            self._resume_done[key] = resume_count
            self.runner.allow_step(wf, step.id)
            task = asyncio.create_task(self._run_step(view, step, resume), name=f"{wf}/{step.id}")
            self._tasks[key] = task
            task.add_done_callback(functools.partial(self._forget_task, key))

    def _cipher(self) -> DataCipher:
        # Secrets passed by reference are stored sealed, bound to their workflow and name.
        return self.runner.cipher or data_cipher()

    def _forget_task(self, key: tuple[str, str], _task: asyncio.Task[None]) -> None:
        self._tasks.pop(key, None)

    async def _rehydrate(self, view: WorkflowView, step: StepSpec) -> Rehydration:
        assert view.spec is not None
        inputs: dict[str, Mapping[str, Any]] = {}
        summaries: dict[str, str] = {}
        variables: dict[str, ContextVariable] = {
            k: ContextVariable(k, v, origin="workflow") for k, v in view.spec.variables.items()
        }
        for dep in view.spec.ancestors(step.id):
            done = view.completed[dep]
            # Every ancestor's outputs, not only the direct dependencies' (a diamond's join and
            # a step two hops away read them as ctx.inputs[<step id>]).
            inputs[dep] = dict(done.outputs)
            summaries[dep] = done.summary
            for var in done.variables:
                known = variables.get(var.name)
                if known is not None and known.origin != "workflow" and (known.expires_at_ms or 0) > (var.expires_at_ms or 0):
                    continue  # a step refreshed it after the ancestor that first published it
                secret_value = None
                if var.secret and var.ref:
                    try:
                        secret_value = self._cipher().open((await self.store.read(var.ref)).data, context=("secret", view.workflow_id, var.name))
                    except CheckpointNotFound:
                        log.warning("secret %s of %s not found in the store", var.name, view.workflow_id)
                        continue
                variables[var.name] = ContextVariable.from_record(var, origin=dep, secret_value=secret_value)
        if self.gossip is not None:
            for name, version in self.gossip.get(view.workflow_id).items():
                gossiped = None if name in variables else ContextVariable.from_gossip(version)
                if gossiped is not None:
                    variables[name] = gossiped
        return Rehydration(inputs=inputs, variables=variables, summaries=summaries,
                           spent_elsewhere=functools.partial(view.total_usage, excluding=step.id))

    async def _run_step(self, view: WorkflowView, step: StepSpec, resume: bool) -> None:
        assert view.spec is not None
        wf = view.workflow_id
        if await self._ended_unseen(view, step):
            return
        transient = 0
        while not self.runner.step_stopping(wf, step.id):
            try:
                state = await self.runner.run(
                    view.spec, step, wf,
                    rehydration=await self._rehydrate(view, step),
                    trace=view.trace,
                    decision=view.decisions.get(step.id) if resume else None,
                    ended_elsewhere=functools.partial(_ended_in, view, step.id),
                    result_grace_s=self.options.result_grace_s,
                )
                if state.status == "running":  # stopped between turns (shutdown, or its partition moved)
                    log.info("%s/%s left at turn %d for the next owner", wf, step.id, state.turn)
                    return
                if _ended_in(view, step.id):  # its old owner's result reached the log meanwhile
                    log.info("%s/%s ended under %s; its result is in the log: not re-published", wf, step.id,
                             state.owner or "another owner")
                    self._ended[(wf, step.id)] = view.resume_requests.get(step.id, 0)
                    return
                await self._publish_result(state)
                self._ended[(wf, step.id)] = view.resume_requests.get(step.id, 0)
                return
            except OwnershipLost:
                log.warning("%s: %s/%s was taken over by a newer owner", self.agent_id, wf, step.id)
                return
            except asyncio.CancelledError:
                raise
            except TransientError as exc:
                transient += 1  # one line when it starts, then one a minute: not one per retry
                if transient == 1 or transient % max(1, int(60 / max(self.options.retry_delay_s, 0.1))) == 0:
                    log.warning("%s/%s: %s; retrying every %.1f s (attempt %d)", wf, step.id, one_line_error(exc),
                                self.options.retry_delay_s, transient)
                await asyncio.sleep(self.options.retry_delay_s)
            except MeshError as exc:
                log.error("%s/%s failed: %s", wf, step.id, one_line_error(exc))
                await self._publish(StepFailed(error=one_line_error(exc), owner=self.agent_id), wf, step.id, "failed")
                self._ended[(wf, step.id)] = view.resume_requests.get(step.id, 0)
                return
            except Exception as exc:  # a bug in an action must not kill the agent
                log.exception("%s/%s crashed", wf, step.id)
                await self._publish(StepFailed(error=one_line_error(exc), owner=self.agent_id), wf, step.id, "failed")
                self._ended[(wf, step.id)] = view.resume_requests.get(step.id, 0)
                return

    async def _ended_unseen(self, view: WorkflowView, step: StepSpec) -> bool:
        """True when the step's checkpoint says it ended and its result then showed up in the log
        within ``result_grace_s``: nothing to do (a re-claim would announce a finished step)."""
        wf = view.workflow_id
        try:
            state = await self.runner.load(wf, step.id)
        except TransientError:
            return False  # the claim retries with the store; it finds the checkpoint then
        if state is None or state.status not in ("completed", "failed"):
            return False
        deadline = time.monotonic() + self.options.result_grace_s
        while not self.runner.step_stopping(wf, step.id):
            if step.id in view.completed or step.id in view.failed:
                log.info("%s/%s ended under %s; its result reached the log: not re-claimed", wf, step.id,
                         state.owner or "another owner")
                return True
            if time.monotonic() >= deadline:
                log.info("%s/%s ended under %s but its result is not in the log after %.1f s: publishing it "
                         "as its new owner", wf, step.id, state.owner or "another owner", self.options.result_grace_s)
                return False
            await asyncio.sleep(0.05)
        return False

    async def _publish_result(self, state: StepState) -> None:
        wf, step = state.workflow_id, state.step_id
        if state.status == "completed":
            records: list[tuple[ContextVariable, VariableRecord]] = []
            for name in state.discovered:
                entry = state.variables[name]
                ref = ""
                if entry.secret:
                    ref = secret_key(wf, name)
                    epoch = await self.store.claim(ref, self.agent_id)
                    sealed = self._cipher().seal(str(entry.value), context=("secret", wf, name))
                    await self.store.write(ref, sealed, epoch=epoch, owner=self.agent_id, workflow_id=wf)
                records.append((entry, entry.to_record(ref=ref)))
            if any(record.secret for _, record in records):
                await self._await_durable(wf, step)
            if self.gossip is not None:
                for entry, record in records:
                    try:
                        await self.gossip.set_variable(wf, **entry.to_gossip(ref=record.ref))
                    except MeshError as exc:  # gossip is best effort: the log carries the result
                        log.warning("gossip of %s/%s failed: %s", wf, record.name, one_line_error(exc))
            await self._publish(
                StepCompleted(
                    outputs=state.outputs, variables=tuple(record for _, record in records), summary=_summarize(state),
                    turns=state.turn, owner=self.agent_id, resumes=state.resumes, usage=state.usage(),
                ),
                wf, step, "completed",
            )
            self.steps_completed += 1
        elif state.status == "failed":
            await self._publish(StepFailed(error=state.error or "failed", turns=state.turn, owner=self.agent_id,
                                           usage=state.usage()), wf, step, "failed")

    async def _await_durable(self, wf: str, step: str) -> None:
        """Hold a result back until the secrets it references are in the shared store.

        A dependent step reads them by reference as soon as the result is on the log; a write
        still in this agent's local journal (the store was unreachable) would look missing.
        ``StoreUnavailable`` (transient) makes the caller retry later.
        """
        flush = getattr(self.store, "flush", None)
        if flush is not None and not getattr(self.store, "durable", True):
            log.info("%s/%s: waiting for journaled secret writes to reach the store", wf, step)
            await flush()

    async def _publish(self, payload: Any, wf: str, step: str, what: str) -> None:
        # Through the runner's publisher, like StepStarted/Progress/Escalated: one path for every
        # event of a step (its publish span and trace context, whatever the bus or the topic).
        await self.runner.publish(
            Envelope.of(payload, sender=self.agent_id, workflow_id=wf, step_id=step,
                        id=deterministic_event_id(wf, step, what)),
        )


def _ended_in(view: WorkflowView, step_id: str) -> bool:
    return step_id in view.completed or step_id in view.failed


def _touch(path: str) -> None:
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "a"):
            os.utime(path)
    except OSError as exc:  # liveness is advisory: never stop working over it
        log.warning("cannot touch heartbeat file %s: %s", path, exc)


def _summarize(state: StepState) -> str:
    """A short extractive history summary handed to dependent steps."""
    counts = state.turn_count_by_action  # archived turns included (mesh.runtime.history)
    actions = ", ".join(f"{a} x{n}" for a, n in counts.items())
    last = state.history[-1].summary if state.history else ""
    outputs = ", ".join(sorted(state.outputs))
    return f"{state.turn} turns ({actions}); outputs: {outputs or 'none'}; last: {last}"[:600]


