"""``mesh demo``: the reconciliation workflow on local services, with a real crash and failover.

It starts Kafka and Redis (``mesh dev``), the mock EHR, and five agent processes (identity,
two fetch members, validate, report), submits the workflow, SIGKILLs the fetch agent that owns
the step part-way through, shows the other member resuming from the last turn checkpoint, and
ends with a summary read from the event log and the EHR's audit log.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
from rich.console import Console
from rich.table import Table

from agents.mock_ehr import EhrConfig, MockEhrProcess, start_mock_ehr_process, summarize_audit_log
from agents.processes import AgentProcesses
from agents.specs import reconciliation_spec
from mesh.gossip import ContextMapArchive
from mesh.runtime import MeshClient, WorkflowView
from mesh.security import ensure_operator_key, operator_key_path
from mesh.settings import MeshSettings
from mesh.store import RedisContextMapStore
from mesh.telemetry import setup_tracing, shutdown_tracing, workflow_trace_id
from protocols import (
    Envelope,
    StepCompleted,
    StepEscalated,
    StepFailed,
    StepProgress,
    StepStarted,
    WorkflowCompleted,
)

__all__ = ["DemoOptions", "DemoResult", "run_demo"]

AGENTS = (("identity", "identity-1"), ("fetch", "fetch-1"), ("fetch", "fetch-2"), ("validate", "validate-1"), ("report", "report-1"))


@dataclass(frozen=True)
class DemoOptions:
    """Knobs of the demo."""

    patients: int = 20
    page_size: int = 2
    """Small pages make the fetch step many turns long, so the kill lands mid-step."""
    kill_after_turn: int = 3
    """SIGKILL the fetch owner once it checkpointed this turn (0 = no kill)."""
    turn_delay_s: float = 0.4
    session_timeout_ms: int = 2500
    timeout_s: float | None = None
    """How long to wait for the workflow: 180 s with rules, 1800 s with the local model."""
    run_dir: Path | None = None
    keep_services: bool = False
    keep_topics: bool = False
    """Leave this run's topics and Redis keys behind (by default the demo deletes them at the end)."""
    reasoner: str = "rules"
    """``rules`` (deterministic policies) or ``local`` (the model of ``mesh dev llm`` decides)."""


@dataclass
class DemoResult:
    """What the demo measured."""

    workflow_id: str = ""
    status: str = ""
    steps_completed: int = 0
    steps_total: int = 0
    turns: int = 0
    resumes: int = 0
    failover_s: float | None = None
    killed: str = ""
    resumed_by: str = ""
    resumed_from_turn: int = 0
    auth_calls: int = 0
    unauthorized: int = 0
    duplicate_effects: int = 0
    effects_created: int = 0
    replays: int = 0
    elapsed_s: float = 0.0
    reasoner: str = "rules"
    decisions: int = 0
    """Decisions the reasoner made (turns plus repaired attempts), read from the step checkpoints."""
    repaired: int = 0
    """Invalid decisions sent back to the reasoner with the error and decided again."""
    filled: int = 0
    """Parameters the runtime filled in from state (the reasoner left them out)."""
    corrected: int = 0
    """Parameters the runtime corrected from state (the reasoner gave another value)."""
    gossip_variables: int = 0
    gossip_replicas_complete: int = 0
    trace_id: str = ""
    """The workflow's trace id (32 hex chars): open it in Jaeger as /trace/<id>."""
    run_dir: str = ""
    events: list[str] = field(default_factory=list)


def _describe(env: Envelope) -> str | None:
    step = env.step_id
    if env.kind == StepStarted.KIND:
        s = env.payload_model(StepStarted)
        how = f"resumed from turn {s.resumed_from_turn} checkpoint" if s.resumed_from_turn else "started"
        return f"[cyan]{s.owner}[/cyan] {how}: step [bold]{step}[/bold] (epoch {s.epoch})"
    if env.kind == StepProgress.KIND:
        p = env.payload_model(StepProgress)
        return f"  {step} turn {p.turn} [dim]{p.owner}[/dim] {p.action}: {p.detail}"
    if env.kind == StepCompleted.KIND:
        c = env.payload_model(StepCompleted)
        return f"[green]completed[/green] {step} in {c.turns} turns by {c.owner}"
    if env.kind == StepFailed.KIND:
        return f"[red]failed[/red] {step}: {env.payload_model(StepFailed).error}"
    if env.kind == StepEscalated.KIND:
        return f"[yellow]paused[/yellow] {step}: {env.payload_model(StepEscalated).reason}"
    if env.kind == WorkflowCompleted.KIND:
        return f"[bold]workflow {env.payload_model(WorkflowCompleted).status}[/bold]"
    return None


async def _drive(opts: DemoOptions, settings: MeshSettings, agents: AgentProcesses, ehr: MockEhrProcess,
                 console: Console, result: DemoResult) -> None:
    client = await MeshClient.connect(settings, client_id="demo")
    try:
        spec = reconciliation_spec(patients=opts.patients, page_size=opts.page_size)
        wf = await client.submit(spec, variables={"ehr_base_url": ehr.base_url})
        result.workflow_id, result.steps_total = wf, len(spec.steps)
        result.trace_id = format(workflow_trace_id(wf), "032x")
        console.print(f"submitted workflow [bold]{wf}[/bold] ({len(spec.steps)} steps, trace {result.trace_id})")
        t0 = time.monotonic()
        killed_at: float | None = None
        fetch_owner = ""
        view = WorkflowView(wf)
        timeout_s = opts.timeout_s if opts.timeout_s is not None else (1800.0 if opts.reasoner == "local" else 180.0)
        async for view, env in client.follow(wf, timeout_s=timeout_s):  # noqa: B007 - read after the loop
            line = _describe(env)
            if line:
                console.print(f"[dim]{time.monotonic() - t0:6.1f}s[/dim] {line}")
                result.events.append(line)
            if env.kind == StepStarted.KIND and env.step_id == "fetch":
                started = env.payload_model(StepStarted)
                if killed_at is not None and started.owner != result.killed:
                    result.failover_s = time.monotonic() - killed_at
                    result.resumed_by, result.resumed_from_turn = started.owner, started.resumed_from_turn
                    console.print(
                        f"[bold green]failover:[/bold green] {started.owner} took over fetch "
                        f"{result.failover_s:.1f} s after the kill, from the turn {started.resumed_from_turn} checkpoint"
                    )
                fetch_owner = started.owner
            if (env.kind == StepProgress.KIND and env.step_id == "fetch" and opts.kill_after_turn
                    and killed_at is None and env.payload_model(StepProgress).turn >= opts.kill_after_turn):
                pid = agents.kill(fetch_owner)
                killed_at, result.killed = time.monotonic(), fetch_owner
                console.print(f"[bold red]SIGKILL[/bold red] {fetch_owner} (pid {pid}), the owner of fetch, after turn "
                              f"{env.payload_model(StepProgress).turn}")
        # Every agent gossips the variables steps discovered; read each replica's persisted map.
        await asyncio.sleep(1.5)  # a debounced save after the last change
        redis = aioredis.Redis.from_url(settings.redis_url)
        try:
            # The run's data key (its state dir), not this process's default: a refreshed token is
            # gossiped sealed with it.
            from mesh.security import load_data_cipher

            cipher = load_data_cipher(state_dir=settings.state_dir)
            maps = ContextMapArchive(
                RedisContextMapStore(redis, prefix=f"{settings.topic_prefix}:"), cipher=cipher
            )
            names = {v.name for c in view.completed.values() for v in c.variables}
            result.gossip_variables = len(names)
            for _, agent_id in AGENTS:
                if agent_id == result.killed:
                    continue
                cmap = await maps.load(wf, agent_id)
                held = {name for name, _ in cmap.items()} if cmap is not None else set()
                result.gossip_replicas_complete += names <= held
        finally:
            await redis.aclose()
        await _count_decisions(settings, wf, [s.id for s in spec.steps], result)
        result.status = view.status if view.finished else f"{view.status} (timed out)"
        result.steps_completed = len(view.completed)
        result.turns = sum(c.turns for c in view.completed.values())
        result.resumes = view.resumes()
    finally:
        await client.aclose()


async def _count_decisions(settings: MeshSettings, workflow_id: str, steps: list[str], result: DemoResult) -> None:
    """Decisions, repairs and injections of every step, from its last checkpoint in Redis."""
    from mesh.errors import CheckpointNotFound
    from mesh.runtime.state import StepState
    from mesh.security import load_data_cipher
    from mesh.store import RedisStateStore, step_key

    cipher = load_data_cipher(state_dir=settings.state_dir)
    store = RedisStateStore.from_url(settings.redis_url, key_prefix=f"{settings.topic_prefix}:")
    try:
        for step_id in steps:
            try:
                checkpoint = await store.read(step_key(workflow_id, step_id))
            except CheckpointNotFound:  # a step that never ran
                continue
            for record in StepState.from_bytes(checkpoint.data, cipher).history:
                result.decisions += 1 + record.repairs
                result.repaired += record.repairs
                result.filled += sum(" (filled " in note for note in record.injected)
                result.corrected += sum(" (corrected " in note for note in record.injected)
    finally:
        await store.aclose()


def _clean_up_run(settings: MeshSettings, console: Console) -> None:
    """Delete the run's topics and Redis keys (its prefix is unique to the run)."""
    import redis

    from mesh.bus.groups import delete_topics_with_prefix
    from mesh.errors import MeshError

    try:
        topics = asyncio.run(delete_topics_with_prefix(settings.kafka_bootstrap, settings.topic_prefix))
        with redis.Redis.from_url(settings.redis_url) as client:
            keys = list(client.scan_iter(match=f"{settings.topic_prefix}:*", count=500))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
        console.print(f"[dim]cleaned up: {len(topics)} topic(s), {len(keys)} Redis key(s) of {settings.topic_prefix}[/dim]")
    except (MeshError, redis.RedisError, OSError) as exc:
        console.print(f"[yellow]could not clean up {settings.topic_prefix}: {exc}[/yellow]")


def run_demo(opts: DemoOptions | None = None, *, console: Console | None = None) -> DemoResult:
    """Run the demo end to end; returns its measurements (and prints as it goes)."""
    from mesh.dev import DevServices

    opts = opts or DemoOptions()
    console = console or Console()
    started = time.monotonic()
    run_dir = opts.run_dir or Path(MeshSettings().state_dir) / "demo" / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    result = DemoResult(run_dir=str(run_dir))

    console.rule("agent-mesh demo: patient reconciliation with a crash")
    services = DevServices()
    up = services.up(progress=lambda msg: console.print(f"[dim]services:[/dim] {msg}"))
    console.print(f"kafka {services.kafka_bootstrap}, redis {services.redis_url} "
                  f"(started: {', '.join(up.started) or 'none, already running'})")
    prefix = f"demo{time.strftime('%H%M%S')}{os.getpid() % 1000}"
    env = {**os.environ, "MESH_KAFKA_BOOTSTRAP": services.kafka_bootstrap, "MESH_REDIS_URL": services.redis_url,
           "MESH_TOPIC_PREFIX": prefix, "MESH_STATE_DIR": str(run_dir / "state")}
    env.pop("ANTHROPIC_API_KEY", None) if env.get("MESH_DEMO_RULES", "1") == "1" else None
    if opts.reasoner == "local":  # agents decide with the local model (mesh dev llm), through the SDK
        from mesh.dev._llm import LocalLlm

        local = LocalLlm(services.config)
        llm_up = local.up(progress=lambda msg: console.print(f"[dim]llm:[/dim] {msg}"))
        env.update(local.env())
        result.reasoner = f"{llm_up.model} on {llm_up.base_url}"
        console.print(f"agents decide with {result.reasoner}")
    settings = MeshSettings(kafka_bootstrap=services.kafka_bootstrap, redis_url=services.redis_url,
                            topic_prefix=prefix, state_dir=run_dir / "state")
    ehr = start_mock_ehr_process(run_dir / "ehr-audit.jsonl", config=EhrConfig(patients=opts.patients))
    console.print(f"mock EHR on {ehr.base_url} (audit log {ehr.audit_log})")
    # Dev trust root: the demo's agents and client read this operator key and certify their own keys.
    ensure_operator_key(operator_key_path(run_dir / "state"))
    agents = AgentProcesses(run_dir, env, turn_delay_s=opts.turn_delay_s, session_timeout_ms=opts.session_timeout_ms)
    try:
        for role, agent_id in AGENTS:
            agents.start(role, agent_id)
        agents.wait_ready(timeout_s=180.0)  # agents join their groups slowly on a loaded machine
        console.print(f"agents ready: {', '.join(a for _, a in AGENTS)} (logs in {run_dir})")
        # The submit opens the workflow's root span: exported (OTEL_* variables) like the agents' spans.
        setup_tracing("agent-mesh", agent_id="demo", role="client")
        asyncio.run(_drive(opts, settings, agents, ehr, console, result))
    finally:
        shutdown_tracing()
        agents.stop_all()
        ehr.stop()
        if not opts.keep_topics:
            _clean_up_run(settings, console)
        if up.started and not opts.keep_services:
            services.down()
    audit = summarize_audit_log(run_dir / "ehr-audit.jsonl")
    result.auth_calls, result.unauthorized = audit.auth_calls, audit.unauthorized
    result.duplicate_effects, result.effects_created, result.replays = (
        audit.duplicate_effects, audit.effects_created, audit.replays)
    result.elapsed_s = time.monotonic() - started
    console.print(summary_table(result))
    return result


def summary_table(r: DemoResult) -> Table:
    """The closing summary."""
    t = Table(title=f"summary of {r.workflow_id}", title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    rows = [
        ("workflow", r.status),
        ("reasoner", r.reasoner),
        ("steps completed", f"{r.steps_completed}/{r.steps_total}"),
        ("turns", str(r.turns)),
        (f"decisions by {'the model' if r.reasoner != 'rules' else 'the rules'}", str(r.decisions)),
        ("invalid decisions repaired", str(r.repaired)),
        ("parameters injected: filled / corrected", f"{r.filled} / {r.corrected}"),
        ("resumes from checkpoint", str(r.resumes)),
        ("killed agent", r.killed or "-"),
        ("resumed by", f"{r.resumed_by} from turn {r.resumed_from_turn}" if r.resumed_by else "-"),
        ("failover time", f"{r.failover_s:.2f} s" if r.failover_s is not None else "-"),
        ("auth calls", str(r.auth_calls)),
        ("401 responses", str(r.unauthorized)),
        ("side effects created", str(r.effects_created)),
        ("idempotent replays", str(r.replays)),
        ("duplicated effects", str(r.duplicate_effects)),
        ("gossiped variables", f"{r.gossip_variables}, held by {r.gossip_replicas_complete}/{len(AGENTS) - bool(r.killed)} live agents"),
        ("trace id", r.trace_id or "-"),
        ("wall time", f"{r.elapsed_s:.1f} s"),
        ("logs", r.run_dir),
    ]
    for k, v in rows:
        t.add_row(k, v)
    return t
