"""What the console reads: Redis (run index, checkpoints, gossip maps, votes) and a live tail of Kafka.

Why one class: every page is a view over the same few sources, and the console must never need
the mesh's data key. Checkpoints and gossip maps are decoded here *without* opening sealed
values: a secret variable is shown as ``REDACTED`` because the console cannot read it, not because
it chose not to. Everything else that leaves this module goes through ``mesh.security``'s redactor
once more in the API layer.

The tail reads the workflow log, the votes topic and the gossip topic from the beginning as a
throwaway consumer group (no commits, no dead letters), so the console never disturbs the agents.
It folds every workflow into a ``WorkflowView`` (the agents' own fold), keeps each workflow's
timeline of owner changes, turns and escalations, and wakes the server-sent-event streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from mesh.bus import KafkaBus, SubscriptionOptions
from mesh.errors import CheckpointNotFound, MeshError, StoreError
from mesh.runtime.view import WorkflowView, run_summary
from mesh.security import REDACTED, redact_text, redact_value
from mesh.settings import MeshSettings
from mesh.store import RedisConnection, RedisStores, RunSummary, step_key
from protocols import (
    Envelope,
    EscalationDecided,
    StepCompleted,
    StepEscalated,
    StepFailed,
    StepProgress,
    StepResumeRequested,
    StepStarted,
    Topics,
    WorkflowCompleted,
    WorkflowSubmitted,
)
from protocols.votes import Ballot, FactDecided, Proposal, QuarantineEvent

__all__ = ["ConsoleData", "TimelineEvent", "decode_checkpoint", "decode_context_map"]

log = logging.getLogger("mesh.console")

_MAX_TIMELINE = 5000
_MAX_PROPOSALS = 2000


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """One moment of a run: a step started or taken over, a turn, an escalation, an end."""

    at_ms: int
    kind: str
    """started | takeover | turn | escalated | resume_requested | completed | failed | workflow"""
    step: str = ""
    agent: str = ""
    turn: int = 0
    epoch: int = 0
    detail: str = ""


@dataclass
class _Run:
    view: WorkflowView
    timeline: list[TimelineEvent] = field(default_factory=list)
    last_owner_ms: dict[str, int] = field(default_factory=dict)
    """Per step, log time of the latest event from its owner (to say how long a dead owner was silent)."""


def _mask_variables(variables: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, raw in variables.items():
        entry = dict(raw) if isinstance(raw, Mapping) else {"value": raw}
        secret = bool(entry.get("secret"))
        out[str(name)] = {
            "value": REDACTED if secret else redact_value(entry.get("value"), key=str(name)),
            "secret": secret,
            "priority": int(entry.get("priority") or 0),
            "origin": str(entry.get("origin") or ""),
            "last_used_turn": int(entry.get("last_used_turn") or 0),
        }
    return out


def decode_checkpoint(data: bytes) -> dict[str, Any]:
    """A step checkpoint as plain data, secret values masked (never opened: no data key needed)."""
    raw = msgpack.unpackb(data, raw=False)
    if not isinstance(raw, dict):
        raise StoreError("checkpoint is not a map")
    raw["variables"] = _mask_variables(raw.get("variables") or {})
    return raw


def decode_context_map(data: bytes) -> dict[str, dict[str, Any]]:
    """A saved gossip map as ``{name: {value, status, origin, hlc, secret}}``, secrets masked, sealed values unopened."""
    raw = msgpack.unpackb(data, raw=False)
    state = (raw or {}).get("state") or {}
    out: dict[str, dict[str, Any]] = {}
    for reg in state.get("registers") or ():
        if not isinstance(reg, dict) or reg.get("deleted"):
            continue
        secret = bool(reg.get("secret"))
        out[str(reg.get("name"))] = {
            "value": REDACTED
            if secret
            else redact_value(reg.get("value"), key=str(reg.get("name"))),
            "status": str(reg.get("status") or "tentative"),
            "origin": str(reg.get("origin") or ""),
            "hash": str(reg.get("value_hash") or ""),
            "secret": secret,
        }
    for s in state.get("sets") or ():
        if not isinstance(s, dict):
            continue
        meta = s.get("meta") or {}
        secret = bool(meta.get("secret"))
        removed = {repr(t) for t in s.get("removed") or ()}
        elements = [e for tag, e in (s.get("adds") or ()) if repr(tag) not in removed]
        out[str(s.get("name"))] = {
            "value": REDACTED if secret else redact_value(sorted(map(str, elements))),
            "status": str(meta.get("status") or "tentative"),
            "origin": str(meta.get("origin") or ""),
            "hash": str(hash(tuple(sorted(map(str, elements))))),
            "secret": secret,
        }
    return out


class ConsoleData:
    """Reads for the console's API; ``start`` begins the live tail, ``aclose`` ends it."""

    def __init__(
        self, settings: MeshSettings, *, scratchpad_dir: Path, max_runs: int = 2000
    ) -> None:
        """Read the mesh configured by ``settings``; scratchpads from ``scratchpad_dir``."""
        self.settings = settings
        self.topics = Topics(prefix=settings.topic_prefix)
        self.key_prefix = f"{settings.topic_prefix}:"
        self.scratchpad_dir = scratchpad_dir
        self.max_runs = max_runs
        # Every MESH_REDIS_* option (Cluster, Sentinel, ACL, TLS), like the agents.
        self.redis = RedisStores(
            RedisConnection.from_settings(settings), prefix=self.key_prefix, socket_timeout_s=3.0
        )
        self.index = self.redis.run_index(socket_timeout_s=3.0)
        self.store = self.redis.checkpoints()
        self.runs: OrderedDict[str, _Run] = OrderedDict()
        self.proposals: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.quarantined: dict[str, dict[str, Any]] = {}
        self.last_seen: dict[str, int] = {}
        """Agent id -> log time (Unix ms) of the latest envelope it sent (gossip digests are periodic)."""
        self.tail_error = ""
        self.tail_position = 0
        """Records the tail has read (a version for the event streams)."""
        self._changed = asyncio.Condition()
        self._bus: KafkaBus | None = None
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        """Set once the tail has caught up with the log (or given up trying)."""

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the Kafka tail in the background (the API answers from Redis meanwhile)."""
        self._task = asyncio.create_task(self._tail(), name="console-tail")

    async def aclose(self) -> None:
        """Stop the tail and close connections."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._bus is not None:
            with contextlib.suppress(MeshError):
                await self._bus.aclose()
        await self.store.aclose()
        await self.index.aclose()
        await self.redis.aclose()

    async def wait_changed(self, after: int, timeout_s: float) -> int:
        """Wait until the tail read past ``after`` (or the timeout); return the new position."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.tail_position > after), timeout_s
                )
        return self.tail_position

    async def _tail(self) -> None:
        client_id = f"console-{uuid.uuid4().hex[:8]}"
        while True:
            try:
                self._bus = KafkaBus(
                    self.settings.kafka_bootstrap,
                    topics=self.topics,
                    client_id=client_id,
                    partitions=self.settings.topic_partitions,
                    replication_factor=self.settings.topic_replication,
                )
                await self._bus.start()
                sub = await self._bus.subscribe(
                    [self.topics.workflow_events, self.topics.votes, self.topics.gossip],
                    group=f"{self.topics.prefix}.console.{uuid.uuid4().hex[:12]}",
                    member=client_id,
                    options=SubscriptionOptions(
                        from_beginning=True,
                        session_timeout_ms=10000,
                        heartbeat_interval_ms=1000,
                        dead_letter=False,
                    ),
                )
                self.tail_error = ""
                quiet = 0
                try:
                    while True:
                        batch = await sub.poll(timeout_ms=250)
                        moved = 0
                        for d in batch:
                            at_ms = d.timestamp_ms or int(time.time() * 1000)
                            self._fold(d.topic, d.envelope, at_ms)
                            # Gossip only refreshes "last seen": it is periodic and would wake every page.
                            moved += d.topic != self.topics.gossip
                        if moved:
                            async with self._changed:
                                self.tail_position += moved
                                self._changed.notify_all()
                        if batch:
                            quiet = 0
                        else:
                            quiet += 1
                            if quiet >= 4:
                                self.ready.set()
                finally:
                    await sub.aclose()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the console stays up and says why the live view stalled
                self.tail_error = redact_text(f"{type(exc).__name__}: {exc}")[:300]
                log.warning("console log tail: %s; retrying in 2 s", self.tail_error)
                self.ready.set()
                if self._bus is not None:
                    with contextlib.suppress(Exception):
                        await self._bus.aclose()
                    self._bus = None
                await asyncio.sleep(2.0)

    # -- folding the tail ------------------------------------------------------------------

    def _fold(self, topic: str, env: Envelope, at_ms: int) -> None:
        if env.sender:
            self.last_seen[env.sender] = max(self.last_seen.get(env.sender, 0), at_ms)
        if topic == self.topics.workflow_events and env.workflow_id:
            self._fold_workflow(env, at_ms)
        elif topic == self.topics.votes:
            self._fold_vote(env, at_ms)

    def _run(self, workflow_id: str) -> _Run:
        run = self.runs.get(workflow_id)
        if run is None:
            run = self.runs[workflow_id] = _Run(WorkflowView(workflow_id))
            while len(self.runs) > self.max_runs:
                self.runs.popitem(last=False)
        else:
            self.runs.move_to_end(workflow_id)
        return run

    def _fold_workflow(self, env: Envelope, at_ms: int) -> None:
        run = self._run(env.workflow_id)
        view = run.view
        step = env.step_id
        before = view.started.get(step, [])[-1:] if step else []
        if not view.apply(env, at_ms=at_ms):
            return
        event: TimelineEvent | None = None
        kind = env.kind
        if kind == StepStarted.KIND:
            started = view.started[step][-1]
            if before and before[0].owner != started.owner:
                silent = at_ms - run.last_owner_ms.get(step, at_ms)
                event = TimelineEvent(
                    at_ms,
                    "takeover",
                    step,
                    started.owner,
                    started.resumed_from_turn,
                    started.epoch,
                    f"took over from {before[0].owner} (silent {silent / 1000:.1f} s) "
                    f"and resumed after turn {started.resumed_from_turn}",
                )
            else:
                event = TimelineEvent(
                    at_ms,
                    "started",
                    step,
                    started.owner,
                    started.resumed_from_turn,
                    started.epoch,
                    f"resumed after turn {started.resumed_from_turn}"
                    if started.resumed_from_turn
                    else "fresh start",
                )
        elif kind == StepProgress.KIND:
            p = env.payload_model(StepProgress)
            event = TimelineEvent(
                at_ms, "turn", step, env.sender, p.turn, 0, f"{p.action}: {p.outcome} {p.detail}"
            )
        elif kind == StepEscalated.KIND:
            e = env.payload_model(StepEscalated)
            event = TimelineEvent(at_ms, "escalated", step, env.sender, e.turn, 0, e.reason)
        elif kind == StepResumeRequested.KIND:
            r = env.payload_model(StepResumeRequested)
            event = TimelineEvent(at_ms, "resume_requested", step, r.requested_by, 0, 0, r.note)
        elif kind == StepCompleted.KIND:
            c = env.payload_model(StepCompleted)
            event = TimelineEvent(at_ms, "completed", step, env.sender, c.turns, 0, c.summary[:200])
        elif kind == StepFailed.KIND:
            f = env.payload_model(StepFailed)
            event = TimelineEvent(at_ms, "failed", step, env.sender, f.turns, 0, f.error)
        elif kind == EscalationDecided.KIND:
            dec = env.payload_model(EscalationDecided)
            edited = ", ".join(v.name for v in dec.variables)
            event = TimelineEvent(
                at_ms,
                "decided",
                step,
                dec.operator,
                0,
                0,
                f"{dec.decision} by {dec.operator} (via {env.sender})"
                + (f", set {edited}" if edited else "")
                + (f": {dec.note}" if dec.note else ""),
            )
        elif kind == WorkflowCompleted.KIND:
            event = TimelineEvent(at_ms, "workflow", "", env.sender, 0, 0, view.status)
        elif kind == WorkflowSubmitted.KIND:
            event = TimelineEvent(
                at_ms, "submitted", "", env.sender, 0, 0, f"by {view.submitted_by}"
            )
        if step:
            run.last_owner_ms[step] = at_ms
        if event is not None and len(run.timeline) < _MAX_TIMELINE:
            run.timeline.append(
                TimelineEvent(
                    event.at_ms,
                    event.kind,
                    event.step,
                    event.agent,
                    event.turn,
                    event.epoch,
                    " ".join(redact_text(event.detail).split())[:300],
                )
            )

    def _fold_vote(self, env: Envelope, at_ms: int) -> None:
        kind = env.kind
        if kind == Proposal.KIND:
            p = env.payload_model(Proposal)
            self.proposals[p.id] = {
                "id": p.id,
                "workflow_id": p.workflow_id,
                "fact_kind": p.fact_kind,
                "key": p.key,
                "proposer": p.proposer,
                "epoch": p.epoch,
                "at_ms": at_ms,
                "outcome": "open",
                "ballots": {},
            }
            while len(self.proposals) > _MAX_PROPOSALS:
                self.proposals.popitem(last=False)
        elif kind == Ballot.KIND:
            b = env.payload_model(Ballot)
            prop = self.proposals.get(b.proposal_id)
            if prop is not None:
                prop["ballots"][b.voter] = {
                    "verdict": b.verdict,
                    "reason": redact_text(b.reason)[:200],
                }
        elif kind == FactDecided.KIND:
            d = env.payload_model(FactDecided)
            prop = self.proposals.get(d.proposal_id)
            if prop is not None:
                prop["outcome"] = d.outcome
        elif kind == QuarantineEvent.KIND:
            q = env.payload_model(QuarantineEvent)
            self.quarantined[q.peer] = {
                "peer": q.peer,
                "reason": q.reason,
                "reputation": q.reputation,
                "threshold": q.threshold,
                "observer": q.observer,
                "at_ms": at_ms,
            }

    # -- reads -----------------------------------------------------------------------------

    async def list_runs(
        self, *, status: str | None, q: str | None, limit: int
    ) -> tuple[list[RunSummary], str]:
        """Recent runs from the run index; the tail's views fill in when Redis cannot answer."""
        try:
            return list(await self.index.list(status=status, name=q, limit=limit)), "index"
        except StoreError as exc:
            views = [
                run_summary(r.view) for r in reversed(self.runs.values()) if r.view.spec is not None
            ]
            picked = [
                v
                for v in views
                if (status is None or v.status == status)
                and (q is None or q in v.name or q in v.workflow_id)
            ][:limit]
            log.warning("run index unreadable (%s); listing from the log tail", exc)
            return picked, "log"

    async def run(self, workflow_id: str) -> tuple[RunSummary | None, str]:
        """One run: the index's entry, or the tail's fold when the index has none."""
        try:
            found = await self.index.get(workflow_id)
        except StoreError:
            found = None
        if found is not None:
            tailed = self.runs.get(workflow_id)
            # The tail may be ahead of the index (agents write it in the background).
            if (
                tailed is not None
                and tailed.view.spec is not None
                and len(tailed.view.seen) > found.events
            ):
                return run_summary(tailed.view), "log"
            return found, "index"
        tailed = self.runs.get(workflow_id)
        if tailed is not None and tailed.view.spec is not None:
            return run_summary(tailed.view), "log"
        return None, ""

    def view(self, workflow_id: str) -> WorkflowView | None:
        """The tail's fold of a workflow (None before the tail read it)."""
        run = self.runs.get(workflow_id)
        return run.view if run is not None else None

    def timeline(self, workflow_id: str) -> list[TimelineEvent]:
        """The tail's timeline of a workflow."""
        run = self.runs.get(workflow_id)
        return list(run.timeline) if run is not None else []

    async def checkpoint(self, workflow_id: str, step_id: str) -> tuple[dict[str, Any] | None, int]:
        """The step's latest checkpoint (secrets masked) and its encoded size; (None, 0) when none."""
        try:
            ckpt = await self.store.read(step_key(workflow_id, step_id))
        except CheckpointNotFound:
            return None, 0
        return decode_checkpoint(ckpt.data), len(ckpt.data)

    def scratchpad(self, workflow_id: str, step_id: str) -> str:
        """The step's scratchpad markdown, redacted ("" when this machine has none)."""
        from mesh.telemetry import ScratchpadWriter

        path = ScratchpadWriter(self.scratchpad_dir).path(workflow_id, step_id)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return redact_text(text[-200_000:])

    async def gossip_maps(self, workflow_id: str) -> dict[str, dict[str, dict[str, Any]]]:
        """Every agent's saved gossip map of a workflow: ``{agent: {name: entry}}``."""
        maps: dict[str, dict[str, dict[str, Any]]] = {}
        # The workflow id is the key's hash tag (one Cluster slot per workflow): ctx:{wf}:<replica>.
        for agent, data in (await self.redis.context_maps.maps_of(workflow_id)).items():
            try:
                maps[agent] = decode_context_map(data)
            except (ValueError, TypeError, msgpack.UnpackException, AttributeError):
                maps[agent] = {}
        return maps

    async def votes(self, workflow_id: str) -> dict[str, dict[str, str]]:
        """Ballots the validators recorded in Redis for a workflow: ``{voter: {proposal: verdict}}``."""
        return await self.redis.ballots(workflow_id)

    async def checkpoints_of(
        self, runs: Sequence[RunSummary]
    ) -> dict[tuple[str, str], tuple[dict[str, Any], int]]:
        """Checkpoints of every step of ``runs`` (for the KPIs), read in one pass."""
        found: dict[tuple[str, str], tuple[dict[str, Any], int]] = {}
        for run in runs:
            for step in run.steps:
                if step.turns <= 0:
                    continue
                try:
                    ckpt, size = await self.checkpoint(run.workflow_id, step.id)
                except (StoreError, ValueError, TypeError, msgpack.UnpackException):
                    continue
                if ckpt is not None:
                    found[(run.workflow_id, step.id)] = (ckpt, size)
        return found
