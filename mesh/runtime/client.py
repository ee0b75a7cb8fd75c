"""Client side of the mesh: submit workflows, read their state, resume paused steps."""

from __future__ import annotations

import getpass
import socket
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from mesh.bus import Bus, SubscriptionOptions
from mesh.runtime.view import WorkflowView
from mesh.settings import MeshSettings
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

    def __init__(self, bus: Bus, *, topics: Topics, client_id: str = "cli") -> None:
        """Use ``bus`` (started) for the mesh whose topics are ``topics``."""
        self.bus = bus
        self.topics = topics
        self.client_id = client_id
        self._owned: list[Any] = []

    @classmethod
    async def connect(cls, settings: MeshSettings | None = None, *, client_id: str = "") -> MeshClient:
        """A client on Kafka whose envelopes are signed with its own key (registered in Redis)."""
        from mesh.bus import KafkaBus
        from mesh.runtime.trust import LogTrust

        settings = settings or MeshSettings()
        client_id = client_id or f"cli-{getpass.getuser()}-{socket.gethostname()}"
        topics = Topics(prefix=settings.topic_prefix)
        trust = await LogTrust.connect(
            client_id, redis_url=settings.redis_url, prefix=settings.topic_prefix, state_dir=settings.state_dir
        )
        bus = KafkaBus(settings.kafka_bootstrap, topics=topics, client_id=client_id, signer=trust.sign,
                       partitions=settings.topic_partitions, replication_factor=settings.topic_replication)
        try:
            await bus.start()
        except BaseException:
            await trust.aclose()
            raise
        client = cls(bus, topics=topics, client_id=client_id)
        client._owned = [bus, trust]
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
                    if view.apply(d.envelope):
                        yield view, d.envelope
                        if until_done and view.finished is not None:
                            return
        finally:
            await sub.aclose()

    async def status(self, workflow_id: str, *, read_s: float = 3.0) -> WorkflowView:
        """The view of a workflow after reading the log for ``read_s`` seconds of quiet."""
        view = WorkflowView(workflow_id)
        async for view, _ in self.follow(workflow_id, timeout_s=read_s):
            if view.finished is not None:
                break
        return view
