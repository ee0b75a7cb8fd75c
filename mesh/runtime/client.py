"""Client side of the mesh: submit workflows, read their state, decide on paused steps."""

from __future__ import annotations

import getpass
import socket
import time
import uuid
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mesh.bus import Bus, SubscriptionOptions
from mesh.errors import StoreError, UsageError
from mesh.runtime.view import WorkflowView, run_summary
from mesh.security import is_secret_key, redact_text
from mesh.settings import MeshSettings
from mesh.store import RunIndex, RunSummary
from mesh.telemetry import workflow_span
from protocols import (
    EditedVariable,
    Envelope,
    EscalationDecided,
    Topics,
    WorkflowSpec,
    WorkflowSubmitted,
    deterministic_event_id,
)

__all__ = ["DecisionError", "MeshClient", "Pause", "new_workflow_id"]

Decision = Literal["resume", "reject", "edit"]


class DecisionError(UsageError):
    """A decision that cannot be published: the step is not paused, or the decision is malformed."""


@dataclass(frozen=True, slots=True)
class Pause:
    """A paused step as the run index or the log shows it: what a decision must answer."""

    workflow_id: str
    step_id: str
    nonce: str
    """The pause's nonce: a decision applies only with it."""
    kind: str
    """spinning | budget | invalid_decision | reasoner_unavailable"""
    reason: str


def new_workflow_id(name: str = "wf") -> str:
    """A fresh workflow id: the spec name plus a short random suffix."""
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40] or "wf"
    return f"{safe}-{uuid.uuid4().hex[:8]}"


class MeshClient:
    """Publishes to and reads from the workflow event log."""

    def __init__(
        self, bus: Bus, *, topics: Topics, client_id: str = "cli", index: RunIndex | None = None,
        bootstrap_servers: str = "",
    ) -> None:
        """Use ``bus`` (started) for the mesh whose topics are ``topics``; ``index`` is the run index."""
        self.bus = bus
        self.topics = topics
        self.client_id = client_id
        self.index = index
        self.index_error = ""
        """Why the run index could not be read last time ("" if it could)."""
        self.bootstrap_servers = bootstrap_servers
        self._owned: list[Any] = []

    @classmethod
    async def connect(
        cls, settings: MeshSettings | None = None, *, client_id: str = "", read_only: bool = False
    ) -> MeshClient:
        """A client on Kafka whose envelopes are signed with its own key (registered in Redis).

        ``read_only`` clients (``status``, ``watch``, ``runs``) publish nothing, so they need no key
        and work without Redis: they read the run index when Redis answers, else the log.
        """
        from mesh.bus import KafkaBus
        from mesh.runtime.trust import AgentTrust
        from mesh.store import RedisConnection, RedisStores

        settings = settings or MeshSettings()
        client_id = client_id or f"cli-{getpass.getuser()}-{socket.gethostname()}"
        topics = Topics(prefix=settings.topic_prefix)
        stores = RedisStores(RedisConnection.from_settings(settings), prefix=f"{settings.topic_prefix}:")
        trust = None
        if not read_only:
            try:
                trust = await AgentTrust.connect(client_id, stores.keyring, state_dir=settings.state_dir)
            except BaseException:
                await stores.aclose()
                raise
        bus = KafkaBus(settings.kafka_bootstrap, topics=topics, client_id=client_id,
                       signer=trust.sign if trust is not None else None,
                       partitions=settings.topic_partitions, replication_factor=settings.topic_replication,
                       min_insync_replicas=settings.topic_min_insync_replicas)
        index = stores.run_index(socket_timeout_s=2.0)
        try:
            await bus.start()
        except BaseException:
            await index.aclose()
            await stores.aclose()
            raise
        client = cls(bus, topics=topics, client_id=client_id, index=index, bootstrap_servers=settings.kafka_bootstrap)
        client._owned = [bus, index, stores]
        return client

    async def aclose(self) -> None:
        """Close what ``connect`` opened."""
        for resource in self._owned:
            await resource.aclose()
        self._owned = []

    async def submit(
        self,
        spec: WorkflowSpec,
        *,
        workflow_id: str | None = None,
        variables: Mapping[str, Any] | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> str:
        """Publish ``WorkflowSubmitted``; ``variables`` override the spec's initial variables."""
        wf = workflow_id or new_workflow_id(spec.name)
        if variables:
            spec = spec.model_copy(update={"variables": {**spec.variables, **variables}})
        # The root span of the workflow's one trace; every step span descends from it.
        with workflow_span(wf, name=f"workflow {spec.name}", attributes={"mesh.workflow.name": spec.name},
                           topic=self.topics.workflow_events) as span:
            carrier = dict(trace) if trace else span.inject()
            await self.bus.publish(
                self.topics.workflow_events,
                Envelope.of(
                    WorkflowSubmitted(spec=spec, submitted_by=self.client_id),
                    sender=self.client_id,
                    workflow_id=wf,
                    id=deterministic_event_id(wf, "submitted"),
                    trace=carrier,
                ),
            )
        return wf

    async def decide_escalation(
        self,
        workflow_id: str,
        step_id: str,
        *,
        nonce: str,
        decision: Decision,
        operator: str,
        note: str = "",
        variables: Mapping[str, Any] | None = None,
        secrets: Collection[str] = (),
    ) -> EscalationDecided:
        """Publish a signed ``EscalationDecided`` for the pause ``nonce`` of a step.

        ``resume`` continues the step from its checkpoint, ``reject`` fails it, ``edit`` sets
        ``variables`` and resumes. The owning agent applies it only if ``nonce`` is still the
        step's current pause; a decision for an older pause is refused there (and by every
        reader of the log). Variables named in ``secrets``, or whose name looks like a credential
        (``token``, ``password``...), are sealed with the mesh's data key before they leave this
        process, so they are never in the log in plaintext; the note goes through the redactor.
        Returns what was published; ``DecisionError`` if the decision is malformed.
        """
        edited = []
        for name, value in (variables or {}).items():
            if name in secrets or is_secret_key(name):
                from mesh.security import data_cipher

                sealed = data_cipher().seal(value, context=("decision", workflow_id, step_id, nonce, name))
                edited.append(EditedVariable(name=name, secret=True, sealed=sealed))
            else:
                edited.append(EditedVariable(name=name, value=value))
        try:
            payload = EscalationDecided(
                nonce=nonce, decision=decision, operator=operator, note=redact_text(note), variables=tuple(edited),
                decided_at_ms=int(time.time() * 1000),
            )
        except ValueError as exc:
            raise DecisionError(f"invalid decision: {exc}") from None
        await self.bus.publish(
            self.topics.workflow_events,
            Envelope.of(payload, sender=self.client_id, workflow_id=workflow_id, step_id=step_id),
        )
        return payload

    async def current_pause(self, workflow_id: str, step_id: str, *, read_s: float = 3.0) -> Pause | None:
        """The step's current pause (run index first, then the log); None if it is not paused."""
        run = await self.indexed(workflow_id)
        if run is not None:
            step = next((s for s in run.steps if s.id == step_id), None)
            if step is not None and step.status == "paused" and step.escalation_nonce:
                return Pause(workflow_id, step_id, step.escalation_nonce, step.escalation_kind, step.last)
        # The index may lag or be gone: the log is the source of truth.
        view = await self.status(workflow_id, read_s=read_s)
        pause = view.escalated.get(step_id)
        if pause is None or not pause.nonce:
            return None
        return Pause(workflow_id, step_id, pause.nonce, pause.kind, pause.reason)

    async def resume(self, workflow_id: str, step_id: str, *, note: str = "", operator: str = "") -> EscalationDecided:
        """Decide ``resume`` on the step's current pause (``mesh resume``); ``DecisionError`` if not paused."""
        pause = await self.current_pause(workflow_id, step_id)
        if pause is None:
            raise DecisionError(f"step {step_id!r} of {workflow_id!r} is not paused")
        return await self.decide_escalation(
            workflow_id, step_id, nonce=pause.nonce, decision="resume", operator=operator or self.client_id, note=note
        )

    async def follow(
        self, workflow_id: str, *, timeout_s: float | None = None, until_done: bool = True
    ) -> AsyncIterator[tuple[WorkflowView, Envelope]]:
        """Yield the view after each event of ``workflow_id``, from the first, live.

        Reads the log as a throwaway consumer group, so it never disturbs the agents.
        """
        sub = await self.bus.subscribe(
            [self.topics.workflow_events],
            group=f"{self.topics.prefix}.reader.{uuid.uuid4().hex[:12]}",
            member=f"{self.client_id}-reader",
            options=SubscriptionOptions(from_beginning=True, session_timeout_ms=10000, heartbeat_interval_ms=1000),
        )
        view = WorkflowView(workflow_id)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while deadline is None or time.monotonic() < deadline:
                for d in await sub.poll(timeout_ms=200):
                    if d.envelope.workflow_id != workflow_id:
                        continue
                    if view.apply(d.envelope, at_ms=d.timestamp_ms):
                        yield view, d.envelope
                        if until_done and view.finished is not None:
                            return
        finally:
            await sub.aclose()

    async def indexed(self, workflow_id: str) -> RunSummary | None:
        """The run index's entry for a workflow; None if it has none or cannot be read (see ``index_error``)."""
        if self.index is None:
            return None
        try:
            run = await self.index.get(workflow_id)
        except StoreError as exc:
            self.index_error = str(exc)
            return None
        self.index_error = ""
        return run

    async def summary(self, workflow_id: str, *, read_s: float = 3.0) -> tuple[RunSummary | None, str]:
        """The run summary and where it came from (``index`` or ``log``); None when the workflow is unknown.

        One key read when the agents have indexed it; else a replay of the log.
        """
        run = await self.indexed(workflow_id)
        if run is not None:
            return run, "index"
        view = await self.status(workflow_id, read_s=read_s)
        return (run_summary(view) if view.spec is not None else None), "log"

    async def scan(
        self, *, read_s: float = 3.0, max_workflows: int = 100_000, only: str | None = None
    ) -> dict[str, WorkflowView]:
        """Workflows in the log, folded (``mesh runs``/``status`` without the index).

        Reads from the first event until ``read_s`` seconds pass with nothing new (or, with
        ``only``, until that workflow finishes).
        """
        sub = await self.bus.subscribe(
            [self.topics.workflow_events],
            group=f"{self.topics.prefix}.reader.{uuid.uuid4().hex[:12]}",
            member=f"{self.client_id}-reader",
            options=SubscriptionOptions(from_beginning=True, session_timeout_ms=10000, heartbeat_interval_ms=1000),
        )
        views: dict[str, WorkflowView] = {}
        quiet_until = time.monotonic() + read_s
        try:
            while time.monotonic() < quiet_until:
                batch = await sub.poll(timeout_ms=200)
                if batch:
                    quiet_until = time.monotonic() + read_s
                for d in batch:
                    wf = d.envelope.workflow_id
                    if not wf or (only is not None and wf != only):
                        continue
                    if wf not in views and len(views) >= max_workflows:
                        continue
                    view = views.setdefault(wf, WorkflowView(wf))
                    view.apply(d.envelope, at_ms=d.timestamp_ms)
                    if only is not None and view.finished is not None:
                        return views
        finally:
            await sub.aclose()
        return views

    async def role_members(self, roles: list[str]) -> dict[str, int]:
        """Live members of each role's consumer group (``BusError`` if Kafka cannot say)."""
        from mesh.bus.groups import group_member_counts

        groups = {f"{self.topics.prefix}.role.{r}": r for r in roles}
        counts = await group_member_counts(self.bootstrap_servers, list(groups), client_id=f"{self.client_id}-admin")
        return {groups[g]: n for g, n in counts.items()}

    async def status(self, workflow_id: str, *, read_s: float = 3.0) -> WorkflowView:
        """The view of a workflow from the log: read until it finished or ``read_s`` seconds of quiet."""
        views = await self.scan(read_s=read_s, only=workflow_id)
        return views.get(workflow_id) or WorkflowView(workflow_id)
