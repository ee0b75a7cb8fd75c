"""Assembling one agent process: bus, store, reasoner, prompt builder, runner, worker."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from mesh.bus import Bus, EnvelopeGuard, KafkaBus
from mesh.errors import ConfigError
from mesh.gossip import ContextMapArchive, GossipNode
from mesh.llm import (
    Reasoner,
    ReasonerSettings,
    ReasonerSummarizer,
    RuleReasoner,
)
from mesh.peer import Peer
from mesh.plugins import load_observers, load_roles
from mesh.roles import Role
from mesh.runtime.observers import TurnObserver
from mesh.runtime.options import RuntimeOptions
from mesh.runtime.prompt import StackPromptBuilder
from mesh.runtime.step_runner import StepRunner
from mesh.runtime.trust import AgentTrust
from mesh.runtime.worker import AgentWorker, WorkerOptions
from mesh.settings import MeshSettings
from mesh.store import (
    BlobStore,
    JournalingStateStore,
    RedisConnection,
    RedisStores,
    RunIndex,
    StateStore,
    blob_store_from_settings,
)
from mesh.telemetry import (
    Kpis,
    ScratchpadWriter,
    TraceEventEmitter,
    publish_span,
    setup_metrics,
    setup_tracing,
    shutdown_metrics,
    shutdown_tracing,
)
from protocols import Envelope, EnvelopeCodec, Topics, TraceEvent

__all__ = ["AgentConfig", "build_worker", "load_role", "run_agent"]

log = logging.getLogger("mesh.agent")

_CLOSE_TIMEOUT_S = 8.0
"""Longest wait for one client to close when the agent stops."""


def load_role(role: str, module: str = "") -> Role:
    """``ROLES[role]`` of ``module``, or of the registered roles module when it is empty
    (``mesh.plugins``); a clear error if either is missing."""
    module, roles = load_roles(module)
    if role not in roles:
        raise ConfigError(f"unknown role {role!r}; {module} defines: {', '.join(sorted(roles))}")
    return roles[role]  # type: ignore[no-any-return]


@dataclass(frozen=True)
class AgentConfig:
    """Options of one agent process."""

    role: str
    agent_id: str = ""
    """Defaults to ``<role>-<host>-<pid>``."""
    roles_module: str = ""
    """Python module with a ``ROLES`` mapping; empty: the one registered under the
    ``agent_mesh.roles`` entry point group (``mesh.plugins``)."""
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    worker: WorkerOptions = field(default_factory=WorkerOptions)

    def resolved_agent_id(self) -> str:
        """The agent id, defaulted."""
        return self.agent_id or f"{self.role}-{socket.gethostname()}-{os.getpid()}"


def build_worker(
    role: Role,
    bus: Bus,
    store: StateStore,
    *,
    agent_id: str,
    topics: Topics,
    reasoner: Reasoner | None = None,
    blobs: BlobStore | None = None,
    resources: Mapping[str, Any] | None = None,
    runtime: RuntimeOptions | None = None,
    worker: WorkerOptions | None = None,
    scratchpad: ScratchpadWriter | None = None,
    kpis: Kpis | None = None,
    model: str = "rule",
    prompts: StackPromptBuilder | None = None,
    trace_events: bool = False,
    guard: EnvelopeGuard | None = None,
    gossip: GossipNode | None = None,
    index: RunIndex | None = None,
    observers: Sequence[TurnObserver] = (),
) -> AgentWorker:
    """Wire a worker for ``role``; the reasoner defaults to the role's rule policy.

    ``observers`` watch its turns from outside the loop (``mesh.runtime.observers``), after the
    spans and before the ``kpis`` and ``scratchpad`` ones.
    """
    runtime = runtime or RuntimeOptions()

    async def publish(env: Envelope) -> None:
        with publish_span(topics.workflow_events, kind=env.kind, workflow_id=env.workflow_id,
                          step_id=env.step_id, message_id=env.id) as span:
            await bus.publish(topics.workflow_events, env.with_fields(trace=span.inject()))

    emitter = None
    if trace_events:
        async def publish_event(event: TraceEvent) -> None:
            await bus.publish(topics.trace_events, Envelope.of(event, sender=agent_id))

        emitter = TraceEventEmitter(publish_event, attributes={"agent_id": agent_id, "role": role.name})
    runner = StepRunner(
        reasoner or RuleReasoner(policy=role.policy, name=f"rule/{role.name}"),
        store,
        prompts or StackPromptBuilder(window=runtime.context_window, output_reserve=runtime.max_tokens, model=model,
                                      cold_blobs=blobs, decay_idle_turns=runtime.decay_idle_turns),
        publish,
        agent_id=agent_id,
        role=role.name,
        actions=role.actions,
        blobs=blobs,
        options=runtime,
        resources=resources,
        scratchpad=scratchpad,
        kpis=kpis,
        trace_events=emitter,
        log_topic=topics.workflow_events,
        consumer_group=f"{topics.prefix}.role.{role.name}",
        refreshers=getattr(role, "refresh", None),
        observers=observers,
    )
    return AgentWorker(bus, store, runner, topics=topics, options=worker, guard=guard, gossip=gossip, index=index)


async def run_agent(
    config: AgentConfig,
    settings: MeshSettings | None = None,
    *,
    on_ready: Callable[[AgentWorker], None] | None = None,
) -> None:
    """Run one agent process until SIGTERM/SIGINT: Kafka, Redis, blob store, reasoner, tracing."""
    settings = settings or MeshSettings()
    role = load_role(config.role, config.roles_module)
    agent_id = config.resolved_agent_id()
    topics = Topics(prefix=settings.topic_prefix)
    setup_tracing("agent-mesh", agent_id=agent_id, role=role.name)
    # KPIs go out as OTel metrics under the same OTEL_* rules as spans (OTLP when an endpoint is set).
    setup_metrics("agent-mesh", agent_id=agent_id, role=role.name)
    kpis = Kpis(attributes={"mesh.role": role.name})
    # Every Redis store of this process (MESH_REDIS_*): keyring, gossip maps, checkpoints, run index.
    stores = RedisStores(RedisConnection.from_settings(settings), prefix=f"{settings.topic_prefix}:")
    try:
        trust = await AgentTrust.connect(agent_id, stores.keyring, state_dir=settings.state_dir)
    except BaseException:
        await stores.aclose()
        raise
    bus = KafkaBus(
        settings.kafka_bootstrap,
        codec=EnvelopeCodec(max_bytes=settings.max_envelope_bytes),
        topics=topics,
        client_id=agent_id,
        partitions=settings.topic_partitions,
        replication_factor=settings.topic_replication,
        min_insync_replicas=settings.topic_min_insync_replicas,
        signer=trust.sign,
        # One dead letter per bad record across every role's group and every agent.
        dead_letters=stores.dead_letter_claims(),
    )
    # While Redis is unreachable, checkpoints go to an fsync'd local journal and are replayed in
    # order when it returns (mesh/store/journal.py); the agent keeps working on what it owns.
    # With MESH_REDIS_WAIT_REPLICAS a checkpoint is acknowledged only once a replica has it (WAIT).
    redis_store = stores.checkpoints(
        wait_replicas=settings.redis_wait_replicas, wait_timeout_ms=settings.redis_wait_timeout_ms,
    )
    store = JournalingStateStore(redis_store, settings.state_dir / "journal", agent_id=agent_id)
    # Durable blob copies: a directory (default) or an S3 bucket that outlives the pod (MESH_BLOB_BACKEND).
    blobs = blob_store_from_settings(settings)
    # The run index `mesh status` / `mesh runs` read (a view of the log, written as events fold).
    run_index = stores.run_index()
    scratchpad = ScratchpadWriter.under_state_dir(settings.state_dir)
    # Imported here: the anthropic SDK is slow to import and only agent processes need it.
    from mesh.llm.factory import make_reasoner

    reasoner_settings = ReasonerSettings()
    prompts = StackPromptBuilder(
        window=config.runtime.context_window, output_reserve=config.runtime.max_tokens, model=reasoner_settings.model,
        # Variables unused for N turns leave the prompt for the blob store (MESH_DECAY_IDLE_TURNS).
        cold_blobs=blobs, decay_idle_turns=config.runtime.decay_idle_turns,
    )
    # Provider-reported input tokens calibrate the budget's safety margin (tiktoken undercounts Claude).
    # One limiter for every agent of the mesh (MESH_LLM_RPM / _TPM / _RATE_WINDOW_S); it also
    # shares the provider's Retry-After with all of them.
    # A RedisCluster client has the same script API; the limiter's two keys share one hash tag.
    limiter = stores.rate_limiter(
        rpm=reasoner_settings.rpm, tpm=reasoner_settings.tpm, window_s=reasoner_settings.rate_window_s
    )
    reasoner = make_reasoner(
        reasoner_settings, on_usage=lambda _model, text, usage: prompts.calibrate(text, usage.input_tokens),
        rate_limiter=limiter,
    )
    # Cost estimates of every reasoner call use the configured price table (MESH_LLM_PRICES).
    runtime = dataclasses.replace(config.runtime, prices=reasoner_settings.price_table())
    if isinstance(reasoner, RuleReasoner):
        reasoner = RuleReasoner(policy=role.policy, name=f"rule/{role.name}")
    else:
        prompts.summarizer = ReasonerSummarizer(reasoner)
    http = httpx.AsyncClient(timeout=httpx.Timeout(10.0))
    peer: Peer | None = None
    worker: AgentWorker | None = None
    try:
        await bus.start()
        store.start()
        # The peer gossips, votes and verifies with the same trust object (one keyring, one refresh policy).
        peer = Peer(trust, bus, topics=topics, store=ContextMapArchive(stores.context_maps))
        await peer.start()
        worker = build_worker(
            role, bus, store, agent_id=agent_id, topics=topics, reasoner=reasoner, blobs=blobs,
            resources={"http": http, "settings": settings}, runtime=runtime, worker=config.worker,
            scratchpad=scratchpad, kpis=kpis, prompts=prompts, trace_events=True, guard=trust, gossip=peer.node,
            index=run_index,
            # Users' own sinks, from their packages' entry points (mesh.plugins.OBSERVERS_GROUP).
            observers=load_observers(agent_id, role.name),
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run(on_joined=on_ready)
    finally:
        # Also after a failed start: what was opened is closed (no unclosed Kafka clients).
        # Each close is bounded: a broker or Redis outage must not hold a SIGTERM'd agent.
        closes = [("http", http.aclose), ("reasoner", reasoner.aclose)]
        if peer is not None:
            closes.append(("peer", peer.aclose))
        closes += [("run index", run_index.aclose), ("store", store.aclose), ("blobs", blobs.aclose),
                   ("bus", bus.aclose), ("trust", trust.aclose), ("redis", stores.aclose)]
        for what, close in closes:
            task = asyncio.ensure_future(close())
            done, _ = await asyncio.wait({task}, timeout=_CLOSE_TIMEOUT_S)
            if not done:  # not awaited: a client may swallow the cancellation and keep retrying
                task.cancel()
                log.warning("%s: closing the %s took over %.0f s; going on", agent_id, what, _CLOSE_TIMEOUT_S)
            elif task.exception() is not None:
                log.warning("%s: closing the %s failed: %s", agent_id, what, task.exception())
        shutdown_tracing()
        shutdown_metrics()
        if worker is not None:
            log.info("%s stopped after completing %d step(s)", agent_id, worker.steps_completed)
