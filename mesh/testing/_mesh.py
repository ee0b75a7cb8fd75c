"""An in-memory mesh: a workflow of your roles, run in one process without Kafka or Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from mesh.bus import InMemoryBroker, InMemoryBus
from mesh.errors import MeshError
from mesh.llm import Reasoner
from mesh.roles import Role, check_role
from mesh.runtime import AgentWorker, MeshClient, RuntimeOptions, WorkerOptions, WorkflowView
from mesh.runtime.agent import build_worker
from mesh.store import InMemoryBlobStore, InMemoryStateStore
from mesh.testing._anthropic import FakeAnthropicServer
from protocols import Topics, WorkflowSpec, parse_workflow_spec

__all__ = ["InMemoryMesh", "WorkflowTimeout", "reasoner_for"]


class WorkflowTimeout(MeshError):
    """A workflow did not finish within the time ``InMemoryMesh.wait`` was given."""


class InMemoryMesh:
    """Agents serving ``roles`` over the in-memory bus and store, and a client to submit to them.

    The same ``AgentWorker`` and turn loop as ``mesh agent run``, over ``InMemoryBus`` and
    ``InMemoryStateStore`` (which honour the Kafka and Redis contracts the runtime relies on:
    keyed partitions, consumer groups, fenced checkpoints). Decisions come from each role's rule
    policy unless ``reasoner`` builds one per role (e.g. an ``AnthropicReasoner`` pointed at a
    ``FakeAnthropicServer``). Use as ``async with InMemoryMesh(ROLES) as mesh: view = await mesh.run(spec)``.
    """

    def __init__(
        self,
        roles: Mapping[str, Role] | Iterable[Role],
        *,
        agents_per_role: int = 1,
        resources: Mapping[str, Any] | None = None,
        reasoner: Callable[[Role], Reasoner] | None = None,
        runtime: RuntimeOptions | None = None,
        partitions: int = 4,
        prefix: str = "test",
    ) -> None:
        """Serve every role of ``roles`` with ``agents_per_role`` agents; ``resources`` is what
        executors read with ``ctx.resource(name)`` (an ``httpx.AsyncClient``, a ``MockService``'s client)."""
        self.roles: Mapping[str, Role] = (
            dict(roles) if isinstance(roles, Mapping) else {r.name: r for r in roles}
        )
        for role in self.roles.values():
            check_role(role)
        self.agents_per_role = agents_per_role
        self.resources = dict(resources or {})
        self.reasoner = reasoner
        self.runtime = runtime or RuntimeOptions()
        self.topics = Topics(prefix=prefix)
        self.broker = InMemoryBroker(default_partitions=partitions)
        """The in-memory Kafka stand-in every agent and the client share."""
        self.store = InMemoryStateStore()
        """Checkpoints and secrets, as Redis would hold them."""
        self.blobs = InMemoryBlobStore()
        """Durable checkpoint copies and archived history."""
        self.workers: list[AgentWorker] = []
        self.client = MeshClient(
            InMemoryBus(self.broker, topics=self.topics, client_id="client"), topics=self.topics
        )
        """Submits workflows and follows their events (``mesh.runtime.MeshClient``)."""
        self._tasks: list[asyncio.Task[None]] = []
        self._reasoners: list[Reasoner] = []

    async def __aenter__(self) -> InMemoryMesh:
        """Start one worker per agent."""
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop every worker and wait for it."""
        await self.aclose()

    def start(self) -> None:
        """Start the workers (``async with`` does it)."""
        for role in self.roles.values():
            for n in range(1, self.agents_per_role + 1):
                self.start_agent(role.name, f"{role.name}-{n}")

    def start_agent(self, role: str, agent_id: str) -> AgentWorker:
        """Start one more agent of ``role`` (a second member takes over a stopped one's steps)."""
        definition = self.roles[role]
        bus = InMemoryBus(self.broker, topics=self.topics, client_id=agent_id)
        worker = build_worker(
            definition, bus, self.store, agent_id=agent_id, topics=self.topics, blobs=self.blobs,
            reasoner=self._new_reasoner(definition),
            resources=self.resources, runtime=self.runtime, worker=WorkerOptions(poll_timeout_ms=50),
        )  # fmt: skip
        self.workers.append(worker)
        self._tasks.append(asyncio.create_task(worker.run(), name=f"agent {agent_id}"))
        return worker

    def _new_reasoner(self, role: Role) -> Reasoner | None:
        if self.reasoner is None:
            return None
        reasoner = self.reasoner(role)
        self._reasoners.append(reasoner)
        return reasoner

    async def submit(
        self,
        spec: WorkflowSpec | Mapping[str, Any] | str,
        *,
        variables: Mapping[str, Any] | None = None,
    ) -> str:
        """Submit a workflow (a spec, its plain data, or its YAML text); return its id."""
        if isinstance(spec, str):
            spec = parse_workflow_spec(spec, source="<InMemoryMesh.submit>")
        elif not isinstance(spec, WorkflowSpec):
            spec = WorkflowSpec.parse(spec, source="<InMemoryMesh.submit>")
        return await self.client.submit(spec, variables=variables)

    async def wait(self, workflow_id: str, *, timeout_s: float = 30.0) -> WorkflowView:
        """The workflow's view once it finished; ``WorkflowTimeout`` if it did not within ``timeout_s``."""
        view: WorkflowView | None = None
        async for view, _ in self.client.follow(workflow_id, timeout_s=timeout_s):  # noqa: B007
            pass
        if view is None or view.finished is None:
            steps = ", ".join(sorted(view.completed)) if view is not None else "none"
            raise WorkflowTimeout(
                f"workflow {workflow_id} did not finish in {timeout_s:g} s (completed steps: {steps})"
            )
        return view

    async def run(
        self,
        spec: WorkflowSpec | Mapping[str, Any] | str,
        *,
        variables: Mapping[str, Any] | None = None,
        timeout_s: float = 30.0,
    ) -> WorkflowView:
        """Submit a workflow and wait for it to finish; return its view (``view.finished.status``,
        ``view.completed[step].outputs``)."""
        return await self.wait(await self.submit(spec, variables=variables), timeout_s=timeout_s)

    async def aclose(self) -> None:
        """Stop every worker and wait for them to exit."""
        for worker in self.workers:
            worker.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for reasoner in self._reasoners:
            await reasoner.aclose()
        self._reasoners.clear()


def reasoner_for(
    server: FakeAnthropicServer, *, model: str = "claude-test"
) -> Callable[[Role], Reasoner]:
    """For ``InMemoryMesh(reasoner=...)``: every role decides with the real ``anthropic`` SDK
    talking to ``server`` (a ``FakeAnthropicServer``, started), whatever it is scripted to answer."""
    # Imported here: the anthropic SDK is slow to import and rule-policy tests do not need it.
    from mesh.llm.anthropic_reasoner import AnthropicReasoner

    def make(_role: Role) -> Reasoner:
        return AnthropicReasoner(api_key="test-key", model=model, base_url=server.base_url)

    return make
