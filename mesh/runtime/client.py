"""Client side of the mesh: submit workflows, read their state, resume paused steps."""

from __future__ import annotations

import getpass
import socket
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from mesh.bus import Bus, SubscriptionOptions
from mesh.errors import StoreError
from mesh.runtime.view import WorkflowView, run_summary
from mesh.settings import MeshSettings
from mesh.store import RunIndex, RunSummary
from mesh.telemetry import workflow_span
from protocols import (
    Envelope,
    StepResumeRequested,
    Topics,
    WorkflowSpec,
    WorkflowSubmitted,
    deterministic_event_id,
)

__all__ = ["MeshClient", "new_workflow_id"]


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
        from mesh.runtime.trust import LogTrust
        from mesh.store import RedisRunIndex

        settings = settings or MeshSettings()
        client_id = client_id or f"cli-{getpass.getuser()}-{socket.gethostname()}"
        topics = Topics(prefix=settings.topic_prefix)
        trust = None
        if not read_only:
            trust = await LogTrust.connect(
                client_id, redis_url=settings.redis_url, prefix=settings.topic_prefix, state_dir=settings.state_dir
            )
        bus = KafkaBus(settings.kafka_bootstrap, topics=topics, client_id=client_id,
                       signer=trust.sign if trust is not None else None,
                       partitions=settings.topic_partitions, replication_factor=settings.topic_replication,
                       min_insync_replicas=settings.topic_min_insync_replicas)
        index = RedisRunIndex.from_url(settings.redis_url, key_prefix=f"{settings.topic_prefix}:", socket_timeout_s=2.0)
        try:
            await bus.start()
        except BaseException:
            await index.aclose()
            if trust is not None:
                await trust.aclose()
            raise
        client = cls(bus, topics=topics, client_id=client_id, index=index, bootstrap_servers=settings.kafka_bootstrap)
        client._owned = [bus, index] + ([trust] if trust is not None else [])
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

    async def resume(self, workflow_id: str, step_id: str, *, note: str = "") -> None:
        """Let a paused step continue (``mesh resume``)."""
        await self.bus.publish(
            self.topics.workflow_events,
            Envelope.of(
                StepResumeRequested(requested_by=self.client_id, note=note),
                sender=self.client_id,
                workflow_id=workflow_id,
                step_id=step_id,
            ),
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
