"""``mesh chaos run``: fault scenarios against real agent processes, Kafka and Redis, then the checker.

Each scenario gets a fresh cluster (its own topic and key prefix): two ``mesh agent run``
processes per role of the reconciliation workflow, a mock EHR process with a fsynced audit log,
and a trickle of workflows submitted while the scenario injects its faults for real (signals to
processes, SIGKILL and restart of Redis and of the Kafka broker, toxiproxy cuts, a killed OTLP
collector, libfaketime). When every workflow has ended (or the recovery deadline passed) the
history is read back (``mesh.chaos``: workflow log, trace and dead-letter topics, audit log,
store, gossip maps), checked, and saved next to the agents' logs under the report directory.

Service faults need services the campaign owns: by default it starts private Kafka and Redis
(``mesh.dev``) under the report directory. Given a user's own Kafka and Redis, the scenarios that
kill or cut services are skipped (said in the report); the others run against that cluster.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import math
import os
import random
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from agents.cluster import MAX_ENVELOPE_BYTES, Cluster
from agents.mock_ehr import EhrConfig
from agents.specs import reconciliation_spec
from mesh.bus import KafkaBus
from mesh.bus.groups import delete_topics_with_prefix
from mesh.chaos import CampaignReport, History, ScenarioResult, check
from mesh.chaos._collect import (
    flood_digest,
    read_audit_log,
    read_dead_letters,
    read_gossip_maps,
    read_store,
    read_trace,
    read_workflow_log,
)
from mesh.chaos.hostile import hostile_corpus
from mesh.dev import DevConfig, DevServices, free_port
from mesh.dev.toxiproxy import Toxiproxy
from mesh.errors import MeshError, UsageError
from mesh.gossip import ContextMapArchive
from mesh.security import (
    DATA_KEY_ENV,
    DATA_KEY_FILE_ENV,
    Keyring,
    generate_data_key,
    generate_keypair,
    private_key_to_hex,
)
from mesh.store import RedisContextMapStore
from mesh.testing import PeerProcess, PeerProcessConfig
from protocols import Topics

__all__ = ["ROLES", "SCENARIOS", "CampaignOptions", "Scenario", "run_campaign"]

ROLES = ("identity", "fetch", "validate", "report")
READY_TIMEOUT_S = 240.0
"""How long an agent may take to start (a loaded 2-core box takes minutes for eight at once)."""
SHUTDOWN_GRACE_S = 30.0
"""How long agents get to exit after SIGTERM at the end of a scenario (a loaded box is slow)."""
FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CampaignOptions:
    """What to run and how hard."""

    workflows: int = 20
    """Workflows across the whole campaign, split evenly over the scenarios (at least one each)."""
    scenarios: tuple[str, ...] = ("all",)
    """Scenario names, or ``all``."""
    seed: int = 1
    """Seeds every random choice (victims, kill points, outage lengths, hostile corpus)."""
    report_dir: Path = Path("chaos-report")
    """Where ``report.md``, ``report.json``, each scenario's ``history.jsonl`` and logs go."""
    kafka_bootstrap: str = ""
    """A user's own Kafka (with ``redis_url``): service faults are skipped. Empty: private services."""
    redis_url: str = ""
    services_port: int = 0
    """First of the ports for the private services (per Kafka node a broker and a controller port,
    then Redis, the proxied listener and its proxy: 5 for one node, 9 for three); 0 picks free ones."""
    kafka_nodes: int = 1
    """Kafka nodes of the private cluster. With more than one, ``kafka-kill`` SIGKILLs the node that
    leads the most partitions of the workflow log (a partition leader), not the whole cluster."""
    patients: int = 4
    page_size: int = 2
    turn_delay_s: float = 0.15
    submit_interval_s: float = 1.0
    session_timeout_ms: int = 2500
    recover_timeout_s: float = 240.0
    """How long after the last fault every workflow may take to end."""
    max_faults: int = 0
    """Faults per scenario; 0: about one per two workflows (at least 3)."""
    command: str = ""
    """The command line, for the report."""


@dataclass(frozen=True)
class Scenario:
    """A fault scenario: its name, what it does, what it needs, and the coroutine that does it."""

    name: str
    description: str
    inject: Callable[[_Run], Awaitable[None]]
    needs: frozenset[str] = frozenset()
    """``services`` (owns Kafka and Redis), ``toxiproxy``, ``faketime``."""
    prepare: Callable[[_Run], Awaitable[None]] | None = None
    """Runs before the agents start (per-agent environment, helper processes)."""


# -- one scenario's run ------------------------------------------------------------------------


@dataclass
class _Run:
    scenario: Scenario
    opts: CampaignOptions
    rng: random.Random
    history: History
    dir: Path
    progress: Progress
    services: DevServices | None
    workflows: int
    cluster: Cluster = field(init=False)
    agent_env: dict[str, dict[str, str]] = field(default_factory=dict)
    cluster_env: dict[str, str] = field(default_factory=dict)
    expected_exits: set[str] = field(default_factory=set)
    submitted: list[str] = field(default_factory=list)
    submitting_done: bool = False
    faults: int = 0
    audit: list[dict[str, Any]] = field(default_factory=list)
    flood: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    helpers: list[Callable[[], None]] = field(default_factory=list)
    toxi: Toxiproxy | None = None
    starting: set[str] = field(default_factory=set)
    """Agents being started (their exit is a failed start, handled by ``replace``)."""
    scratch: dict[str, Any] = field(default_factory=dict)
    """What a scenario's prepare step hands to its inject step (ports, pids)."""
    replacements: itertools.count = field(default_factory=lambda: itertools.count(1))  # type: ignore[type-arg]

    @property
    def max_faults(self) -> int:
        return self.opts.max_faults or max(3, math.ceil(self.workflows / 2))

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def active(self) -> bool:
        """Workflows are still being submitted or running (faults are worth injecting)."""
        if not self.submitting_done:
            return True
        return any(self.cluster.views[wf].finished is None for wf in self.submitted)

    def want_fault(self) -> bool:
        return self.active() and self.faults < self.max_faults

    def running(
        self, roles: tuple[str, ...] = ROLES, *, min_turns: int = 0
    ) -> list[tuple[str, str, str]]:
        """(workflow, step, owner) of running steps whose owner is alive."""
        out = []
        for wf, view in list(self.cluster.views.items()):
            if view.spec is None or view.finished is not None:
                continue
            for step in view.spec.steps:
                if (
                    step.role in roles
                    and view.status_of(step.id) == "running"
                    and view.turns_seen.get(step.id, 0) >= min_turns
                ):
                    owner = self.cluster.owner(wf, step.id)
                    if owner in self.cluster.agents.procs and self.cluster.agents.alive(owner):
                        out.append((wf, step.id, owner))
        return out

    def steps_of(self, owner: str | None = None) -> list[str]:
        return [f"{wf}/{step}" for wf, step, o in self.running() if owner is None or o == owner]

    def fault(self, kind: str, *, at_ms: int | None = None, **data: Any) -> None:
        self.faults += 1
        self.history.record("fault", kind, at_ms=at_ms or self.now_ms(), **data)
        what = ", ".join(f"{k}={v}" for k, v in data.items() if k not in ("steps", "digests"))
        self.progress(f"  fault {self.faults}/{self.max_faults}: {kind} {what}")

    def start_agent(self, role: str, agent_id: str) -> None:
        self.cluster.agents.start(role, agent_id, env=self.agent_env.get(agent_id))
        self.history.record(
            "process", "process.start", at_ms=self.now_ms(), actor=agent_id, role=role
        )

    async def replace(self, victim: str, *, tries: int = 3) -> str:
        """Start a member in the victim's place (same role, environment); "" if none would start.

        An agent that gives up while starting (on a starved box, e.g. no partition assignment within
        its start timeout) is noted and another is tried: a start is not a fault under test.
        """
        role = self.cluster.agents.roles[victim]
        for _ in range(tries):
            new = f"{role}-r{next(self.replacements)}"
            if victim in self.agent_env:  # the replacement takes the victim's place (proxy, clock)
                self.agent_env[new] = self.agent_env[victim]
            self.starting.add(new)
            self.start_agent(role, new)
            try:
                await asyncio.to_thread(
                    self.cluster.agents.wait_ready, new, timeout_s=READY_TIMEOUT_S
                )
                return new
            except RuntimeError as exc:
                self.expected_exits.add(new)
                self.cluster.agents.procs[new].kill()
                self.notes.append(
                    f"replacement {new} did not start: {str(exc).splitlines()[-1][:200]}"
                )
                self.progress(f"  ! replacement {new} did not start")
            finally:
                self.starting.discard(new)
        return ""

    async def kill(self, victim: str, *, point: str, replace: bool = True) -> None:
        steps = self.steps_of(victim)
        self.expected_exits.add(victim)
        await asyncio.to_thread(self.cluster.agents.kill, victim)
        self.fault("fault.sigkill", actor=victim, point=point, steps=steps)
        if replace:
            await self.replace(victim)

    async def sleep(self, low: float, high: float) -> None:
        await asyncio.sleep(self.rng.uniform(low, high))


# -- scenarios -----------------------------------------------------------------------------------

_EFFECT_CALLS = {
    "identity": ("POST /auth/token", 200),
    "fetch": ("GET /patients", 200),
    "validate": ("POST /reconciliations", 201),
    "report": ("POST /reports", 201),
}


async def _victim_after_call(run: _Run, role: str, timeout_s: float = 15.0) -> str | None:
    """Wait for the role's next outgoing call in the audit log; its step's owner (or None)."""
    call, status = _EFFECT_CALLS[role]
    start = len(run.audit)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and run.active():
        for entry in run.audit[start:]:
            if (
                f"{entry.get('method')} {entry.get('path')}" == call
                and entry.get("status") == status
            ):
                key = str(entry.get("idempotency_key") or "")
                parts = key.split(":")
                if len(parts) >= 3 and parts[0] in run.cluster.views:
                    owner = run.cluster.owner(parts[0], parts[1])
                else:
                    candidates = run.running((role,))
                    owner = candidates[-1][2] if candidates else ""
                if owner and run.cluster.agents.alive(owner):
                    return owner
        start = len(run.audit)
        await asyncio.sleep(0.005)
    return None


async def _victim_mid_turn(run: _Run, role: str, timeout_s: float = 15.0) -> str | None:
    deadline = time.monotonic() + timeout_s
    min_turns = 0 if role in ("identity", "report") else 1
    while time.monotonic() < deadline and run.active():
        candidates = run.running((role,), min_turns=min_turns)
        if candidates:
            await asyncio.sleep(run.rng.uniform(0, max(0.05, run.opts.turn_delay_s)))
            owner = run.rng.choice(candidates)[2]
            if run.cluster.agents.alive(owner):
                return owner
        await asyncio.sleep(0.02)
    return None


async def _kill_agents(run: _Run) -> None:
    misses = 0
    order = list(ROLES)
    while run.want_fault() and misses < 12:
        # Every role in turn, each time among those that have a step to hit right now.
        busy = {run.cluster.views[wf].spec.step(step).role for wf, step, _o in run.running()}  # type: ignore[union-attr]
        pending = [wf for wf in run.submitted if "identity" not in run.cluster.views[wf].started]
        if pending or not run.submitting_done:
            busy.add("identity")
        role = next((r for r in order if r in busy), "")
        if not role:
            await asyncio.sleep(0.1)
            continue
        order.remove(role)
        order.append(role)
        point = run.rng.choice(["after-call", "mid-turn"])
        victim = await (
            _victim_after_call(run, role) if point == "after-call" else _victim_mid_turn(run, role)
        )
        if victim is None:
            misses += 1
            continue
        misses = 0
        label = {"identity": "after the token call, before its checkpoint", "fetch": "mid-action (listing fetched)",
                 "validate": "after the effect, before its checkpoint",
                 "report": "after the effect, before its checkpoint"}[role] if point == "after-call" else "mid-turn"  # fmt: skip
        await run.kill(victim, point=f"{role} {label}")
        await run.sleep(0.3, 1.5)


async def _sigterm_rolling(run: _Run) -> None:
    while run.want_fault():
        for role in ROLES:
            members = [
                a
                for a, r in run.cluster.agents.roles.items()
                if r == role and run.cluster.agents.alive(a)
            ]
            if not members or not run.want_fault():
                continue
            victim = run.rng.choice(members)
            steps = run.steps_of(victim)
            run.expected_exits.add(victim)
            proc = run.cluster.agents.procs[victim]
            t0 = run.now_ms()
            proc.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                run.expected_exits.discard(victim)
                proc.kill()
                code = await asyncio.to_thread(proc.wait, 10)
                run.history.record("process", "process.exit", at_ms=run.now_ms(), actor=victim, code=code,
                                   expected=False, last_line="hung for 30 s after SIGTERM (SIGKILLed)")  # fmt: skip
            run.fault("fault.sigterm", at_ms=t0, actor=victim, steps=steps, exit_code=code,
                      exit_ms=run.now_ms() - t0)  # fmt: skip
            await run.replace(victim)
            await run.sleep(0.5, 2.0)


async def _sigstop_zombie(run: _Run) -> None:
    while (
        run.want_fault()
    ):  # until the workflows end: a starved box may take minutes to a first turn
        candidates = run.running(("fetch", "validate"), min_turns=1)
        if not candidates:
            await asyncio.sleep(0.1)
            continue
        wf, step, victim = run.rng.choice(candidates)
        t0 = run.now_ms()
        steps = run.steps_of(victim)
        run.cluster.agents.signal(victim, signal.SIGSTOP)
        hold = run.opts.session_timeout_ms / 1000 * run.rng.uniform(1.5, 3.0)
        run.progress(f"  SIGSTOP {victim} (owner of {wf}/{step}) for {hold:.1f} s")
        try:
            await asyncio.sleep(hold)
        finally:
            run.cluster.agents.signal(victim, signal.SIGCONT)
        run.fault("fault.sigstop", at_ms=t0, healed_ms=run.now_ms(), actor=victim, steps=steps,
                  held_s=round(hold, 1))  # fmt: skip
        await run.sleep(1.0, 3.0)


def _redis_fsync(policy: str) -> Callable[[_Run], Awaitable[None]]:
    async def prepare(run: _Run) -> None:
        assert run.services is not None
        config = run.services.config.model_copy(update={"redis_appendfsync": policy})
        run.services = DevServices(config)
        await asyncio.to_thread(
            run.services.restart_redis
        )  # SIGTERM: the AOF is flushed; not a fault
        run.notes.append(f"Redis restarted with appendfsync {policy} before the agents started")

    return prepare


async def _service_kill(
    run: _Run,
    name: str,
    what: str,
    *,
    first_wait: tuple[float, float],
    down_range: tuple[float, float],
    between: tuple[float, float],
) -> None:
    """SIGKILL one of the campaign's services (``redis`` or ``kafka``), keep it down, restart it."""
    assert run.services is not None
    stop = getattr(run.services, f"stop_{name}")
    start = getattr(run.services, f"start_{name}")
    await run.sleep(*first_wait)
    while run.want_fault():
        steps = run.steps_of()
        t0 = run.now_ms()
        await asyncio.to_thread(stop, kill=True)
        down = run.rng.uniform(*down_range)
        run.progress(f"  SIGKILL {what}, down for {down:.1f} s")
        await asyncio.sleep(down)
        try:
            await _start_until_up(run, start, name)
        finally:
            run.fault(
                f"fault.{name}_sigkill",
                at_ms=t0,
                healed_ms=run.now_ms(),
                steps=steps,
                down_s=round(down, 1),
            )
        await run.sleep(*between)


async def _redis_kill(run: _Run) -> None:
    await _service_kill(run, "redis", "redis", first_wait=(1.0, 3.0), down_range=(0.5, 4.0), between=(2.0, 5.0))


async def _kafka_kill(run: _Run) -> None:
    if run.opts.kafka_nodes > 1:
        await _kafka_leader_kill(run)
        return
    await _service_kill(
        run, "kafka", "kafka broker", first_wait=(2.0, 4.0), down_range=(1.0, 5.0), between=(4.0, 8.0)
    )


async def _log_leaders(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> leader node of ``topic`` (-1 while it has none)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {int(p["partition"]): int(p["leader"]) for p in described[0]["partitions"]}


async def _kafka_leader_kill(run: _Run) -> None:
    """On a multi-node cluster: SIGKILL the node leading the most partitions of the workflow log,
    restart it after 1-5 s; the history records the node, its partitions and when they had a new
    leader again."""
    assert run.services is not None
    topic = Topics(run.cluster.prefix).workflow_events
    await run.sleep(2.0, 4.0)
    while run.want_fault():
        steps = run.steps_of()
        leaders = await _log_leaders(run.cluster.kafka_bootstrap, topic)
        counts: dict[int, int] = {}
        for node in leaders.values():
            if node >= 0:
                counts[node] = counts.get(node, 0) + 1
        if not counts:
            await run.sleep(1.0, 2.0)
            continue
        victim = max(sorted(counts), key=lambda n: counts[n])
        led = sorted(p for p, n in leaders.items() if n == victim)
        t0 = run.now_ms()
        await asyncio.to_thread(run.services.stop_kafka_node, victim, kill=True)
        down = run.rng.uniform(1.0, 5.0)
        run.progress(f"  SIGKILL kafka node {victim} (leader of {len(led)} of {len(leaders)} log partitions), "
                     f"down for {down:.1f} s")
        elected_ms = 0
        deadline = time.monotonic() + down
        while time.monotonic() < deadline or not elected_ms:
            if not elected_ms:
                try:
                    now = await _log_leaders(run.cluster.kafka_bootstrap, topic)
                    if all(now.get(p, -1) not in (victim, -1) for p in led):
                        elected_ms = run.now_ms()
                except Exception:  # the cluster is electing; ask again
                    pass
            if time.monotonic() > deadline + 60:
                break
            await asyncio.sleep(0.2)
        try:
            await _start_until_up(run, functools.partial(run.services.start_kafka_node, victim), "kafka")
        finally:
            run.fault("fault.kafka_leader_sigkill", at_ms=t0, healed_ms=run.now_ms(), steps=steps, node=victim,
                      partitions=led, elected_ms=elected_ms or None, down_s=round(down, 1))
        await run.sleep(4.0, 8.0)


async def _start_until_up(run: _Run, start: Callable[[], bool], name: str, tries: int = 3) -> None:
    """A restart that failed (a loaded box, a port still held) is tried again; the note says so."""
    for attempt in range(1, tries + 1):
        try:
            await asyncio.to_thread(start)
            return
        except MeshError as exc:
            run.notes.append(f"{name} restart attempt {attempt} failed: {str(exc).splitlines()[0]}")
            if attempt == tries:
                raise


async def _prepare_cut(run: _Run) -> None:
    assert run.services is not None and run.toxi is not None
    cfg = run.services.config
    assert cfg.kafka_proxied_bootstrap is not None
    redis_proxy = await asyncio.to_thread(run.toxi.proxy, f"redis-{run.dir.name}", cfg.redis_port)
    # A minority: one member of each multi-turn role reaches Kafka and Redis only through the proxies.
    for agent_id in ("fetch-b", "validate-b"):
        run.agent_env[agent_id] = {
            "MESH_KAFKA_BOOTSTRAP": cfg.kafka_proxied_bootstrap, "MESH_REDIS_URL": f"redis://{cfg.host}:{redis_proxy}/0",
        }  # fmt: skip


async def _network_cut(run: _Run) -> None:
    assert run.toxi is not None
    names = ("kafka", f"redis-{run.dir.name}")
    await run.sleep(2.0, 4.0)
    while run.want_fault():
        minority = [
            a
            for a in run.cluster.agents.procs
            if a in run.agent_env and run.cluster.agents.alive(a)
        ]
        steps = [s for a in minority for s in run.steps_of(a)]
        t0 = run.now_ms()
        await asyncio.to_thread(run.toxi.cut, *names)
        hold = run.rng.uniform(3.0, 8.0)
        run.progress(f"  cut {', '.join(minority)} from Kafka and Redis for {hold:.1f} s")
        try:
            await asyncio.sleep(hold)
        finally:
            await asyncio.to_thread(run.toxi.heal, *names)
        run.fault("fault.network_cut", at_ms=t0, healed_ms=run.now_ms(), agents=",".join(minority), steps=steps,
                  held_s=round(hold, 1))  # fmt: skip
        await run.sleep(2.0, 5.0)


async def _flood(run: _Run) -> None:
    await run.sleep(1.0, 2.0)
    topics = run.cluster.topics
    while run.want_fault():
        running = run.running()
        wf = running[0][0] if running else (run.submitted[-1] if run.submitted else "wf-none")
        # The corpus names its sender "chaos-test"; the campaign signs as itself.
        corpus = hostile_corpus(
            run.rng,
            workflow_id=wf,
            sign=lambda env: run.cluster.trust.sign(env.with_fields(sender=run.cluster.client_id)),
            size=30,
        )
        digests = []
        for topic in (topics.workflow_events, topics.gossip, topics.votes):
            for _label, raw in corpus:
                await run.cluster.bus.publish_raw(topic, raw, key=wf)
                digests.append(flood_digest(raw, max_envelope_bytes=MAX_ENVELOPE_BYTES))
        run.flood.update(digests)
        run.fault(
            "fault.hostile_flood",
            steps=run.steps_of(),
            records=len(digests),
            workflow=wf,
            no_recovery=True,
        )
        await run.sleep(2.0, 4.0)


async def _prepare_collector(run: _Run) -> None:
    port = free_port()
    run.cluster_env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                            "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_EXPORTER_OTLP_TIMEOUT": "2"})  # fmt: skip
    run.scratch["collector_port"] = port
    _start_sink(run, port)


def _start_sink(run: _Run, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesh.chaos.otlp_sink", "--port", str(port), "--log", str(run.dir / "otlp.log")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.readline()
    run.scratch["collector_pid"] = proc.pid

    def stop() -> None:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)

    run.helpers.append(stop)
    return proc


async def _collector_down(run: _Run) -> None:
    port = int(run.scratch["collector_port"])
    await run.sleep(2.0, 4.0)
    while run.want_fault():
        pid = int(run.scratch["collector_pid"])
        t0 = run.now_ms()
        os.kill(pid, signal.SIGKILL)
        down = run.rng.uniform(5.0, 12.0)
        run.progress(f"  SIGKILL the OTLP collector, down for {down:.1f} s")
        await asyncio.sleep(down)
        await asyncio.to_thread(_start_sink, run, port)
        run.fault("fault.collector_sigkill", at_ms=t0, healed_ms=run.now_ms(), steps=run.steps_of(),
                  down_s=round(down, 1), no_recovery=True)  # fmt: skip
        await run.sleep(1.0, 3.0)


async def _prepare_skew(run: _Run) -> None:
    # libfaketime (Debian's libfaketime) shifts the wall clock of one member of each role; the
    # monotonic clock stays real so timers and timeouts keep working.
    for i, role in enumerate(ROLES):
        skew = ("+90s", "-90s")[i % 2]
        run.agent_env[f"{role}-b"] = {"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME": skew,
                                      "FAKETIME_DONT_FAKE_MONOTONIC": "1", "FAKETIME_NO_CACHE": "1"}  # fmt: skip


async def _clock_skew(run: _Run) -> None:
    for agent_id, env in list(run.agent_env.items()):
        if "FAKETIME" in env:
            run.fault("fault.clock_skew", actor=agent_id, skew=env["FAKETIME"], no_recovery=True)
    # Make the skewed members hand steps over to the others and back: kill skewed owners mid-turn.
    while run.want_fault():
        skewed = [
            o for _wf, _s, o in run.running(min_turns=0) if "FAKETIME" in run.agent_env.get(o, {})
        ]
        if not skewed:
            await asyncio.sleep(0.2)
            if not run.active():
                return
            continue
        await run.kill(run.rng.choice(skewed), point="skewed owner mid-turn")
        await run.sleep(1.0, 3.0)


async def _lying_validators(run: _Run) -> None:
    """n = 4 validators (f = 1), one of them lying, as real gossip-node processes on the run's topics."""
    pairs = [generate_keypair(f"validator-{i}") for i in range(1, 5)] + [
        generate_keypair("proposer")
    ]
    keyring = json.dumps(Keyring({p.agent_id: p.public_key for p in pairs}).to_dict())
    validators = tuple(p.agent_id for p in pairs[:4])
    liar = run.rng.choice(validators)
    truth = {"patients_checked": run.opts.patients, "planted_issues": 4}
    workers: dict[str, PeerProcess] = {}
    topics = Topics(f"{run.cluster.prefix}-votes")
    for p in pairs:
        config = PeerProcessConfig(
            agent_id=p.agent_id, private_key_hex=private_key_to_hex(p.private_key), keyring_json=keyring,
            bootstrap=run.cluster.kafka_bootstrap, topic_prefix=topics.prefix, redis_url=run.cluster.redis_url,
            key_prefix=f"{run.cluster.prefix}:quorum:", validators=validators, truth=truth, lie=p.agent_id == liar,
            session_timeout_ms=run.opts.session_timeout_ms * 2,
        )  # fmt: skip
        workers[p.agent_id] = PeerProcess(config, stderr_path=run.dir / f"{p.agent_id}.log")
    run.progress(f"  validators {', '.join(validators)} (n=4, f=1); {liar} lies")
    try:
        # Their own topics: the mesh's agents do not know these keys (and must not dead-letter them).
        await KafkaBus(
            run.cluster.kafka_bootstrap, topics=topics, client_id="chaos-campaign"
        ).ensure_topics(list(topics.all()))
        await asyncio.gather(*(w.start(timeout_s=120) for w in workers.values()))
        proposer = workers["proposer"]
        wf = "votes-" + run.cluster.prefix
        # False and true facts alternate (false first): every run puts max_faults lies to the vote,
        # however fast the workflows beside it end.
        n = 0
        while run.faults < run.max_faults:
            n += 1
            name = run.rng.choice(sorted(truth))
            false = n % 2 == 1
            value = truth[name] + run.rng.randint(1, 9) if false else truth[name]
            reply = await proposer.request("propose", wf=wf, name=name, value=value)
            if false:
                run.fault("fault.false_proposal", proposal_id=reply["id"], name=name, value=value, liar=liar,
                          no_recovery=True)  # fmt: skip
            deadline = time.monotonic() + 60
            pending = set(workers)
            while pending and time.monotonic() < deadline:
                for agent_id in sorted(pending):
                    outcome = (await workers[agent_id].request("decision", id=reply["id"]))[
                        "outcome"
                    ]
                    if outcome != "pending":
                        pending.discard(agent_id)
                        run.history.record("votes", "fact.decided", at_ms=run.now_ms(), workflow_id=wf, actor=agent_id,
                                           proposal_id=reply["id"], name=name, value=value, outcome=outcome)  # fmt: skip
                await asyncio.sleep(0.2)
            if pending:
                run.notes.append(
                    f"proposal {name}={value}: undecided after 60 s at {', '.join(sorted(pending))}"
                )
            await run.sleep(0.2, 1.0)
    finally:
        await asyncio.gather(*(w.aclose() for w in workers.values()), return_exceptions=True)
        await _delete_topics(run.cluster.kafka_bootstrap, topics.prefix, run.notes)


SCENARIOS: Mapping[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("kill-agents", "SIGKILL owners of every role (identity included) right after their outgoing "
                 "call (between the effect and its checkpoint; mid-action for fetch) or at a random point of a turn; "
                 "a replacement starts after each kill", _kill_agents),
        Scenario("sigterm-rolling", "rolling update: SIGTERM one member of each role in turn, wait for it to exit, "
                 "start its replacement", _sigterm_rolling),
        Scenario("sigstop-zombie", "SIGSTOP the owner of a multi-turn step for 1.5-3 session timeouts, then SIGCONT "
                 "(it must stand down)", _sigstop_zombie),
        Scenario("redis-kill-everysec", "SIGKILL redis-server (appendfsync everysec) and restart it after 0.5-4 s",
                 _redis_kill, frozenset({"services"}), _redis_fsync("everysec")),
        Scenario("redis-kill-always", "SIGKILL redis-server (appendfsync always) and restart it after 0.5-4 s",
                 _redis_kill, frozenset({"services"}), _redis_fsync("always")),
        Scenario("kafka-kill", "SIGKILL the Kafka broker (single-broker cluster: it leads every partition; with "
                 "--kafka-nodes 3, the node leading the most workflow-log partitions) and restart it after 1-5 s",
                 _kafka_kill, frozenset({"services"})),
        Scenario("network-cut", "toxiproxy cuts a minority (one fetch and one validate member) from Kafka and "
                 "Redis for 3-8 s, then heals", _network_cut, frozenset({"services", "toxiproxy"}), _prepare_cut),
        Scenario("hostile-flood", "a flood of hostile records (tests' fuzz corpus: deep nesting, cycles, forged, "
                 "truncated, random bytes...) on the workflow, gossip and votes topics", _flood),
        Scenario("collector-down", "agents export spans over OTLP/HTTP to a collector process that is SIGKILLed "
                 "for 5-12 s and restarted", _collector_down, frozenset(), _prepare_collector),
        Scenario("lying-validators", "4 validator processes (n = 4, f = 1) vote on true and false facts while "
                 "one of them lies (accepts the false, rejects the true)", _lying_validators),
        Scenario("clock-skew", "one member of each role runs 90 s ahead or behind (libfaketime); skewed owners "
                 "are killed mid-turn so steps cross clocks", _clock_skew, frozenset({"faketime"}), _prepare_skew),
    )
}  # fmt: skip
"""Every scenario, by name, in campaign order."""


# -- the campaign ------------------------------------------------------------------------------


def _select(names: tuple[str, ...]) -> list[Scenario]:
    if not names or names == ("all",) or "all" in names:
        return list(SCENARIOS.values())
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise UsageError(f"unknown scenario(s) {', '.join(unknown)}; `mesh chaos list` shows them")
    return [SCENARIOS[n] for n in names]


async def _tail_audit(run: _Run) -> None:
    path = run.cluster.ehr.audit_log
    offset = 0
    buffer = b""
    while True:
        try:
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            offset += len(chunk)
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                try:
                    run.audit.append(json.loads(line))
                except ValueError:
                    continue
        await asyncio.sleep(0.005)


async def _watch_deaths(run: _Run) -> None:
    """An agent that exits untold is recorded (and replaced, so the run can still finish)."""
    while True:
        await asyncio.sleep(0.5)
        for agent_id, proc in list(run.cluster.agents.procs.items()):
            if (
                proc.poll() is not None
                and agent_id not in run.expected_exits
                and agent_id not in run.starting
            ):
                run.expected_exits.add(agent_id)
                try:
                    tail = run.cluster.agents.log_text(agent_id).strip().splitlines()[-1:]
                except OSError:
                    tail = []
                run.history.record("process", "process.exit", at_ms=run.now_ms(), actor=agent_id,
                                   code=proc.returncode, expected=False, last_line=(tail or [""])[0][:300])  # fmt: skip
                run.progress(f"  ! {agent_id} exited with {proc.returncode} untold")
                await run.replace(agent_id)


def _print_state(run: _Run) -> str:
    finished = sum(1 for wf in run.submitted if run.cluster.views[wf].finished is not None)
    return (
        f"submitted {len(run.submitted)}/{run.workflows}, finished {finished}, faults {run.faults}"
    )


async def _run_scenario(
    scenario: Scenario, opts: CampaignOptions, *, workflows: int, seed: int, services: DevServices | None,
    toxi: Toxiproxy | None, progress: Progress,
) -> ScenarioResult:  # fmt: skip
    began = time.monotonic()
    run_dir = opts.report_dir / scenario.name
    run_dir.mkdir(parents=True, exist_ok=True)
    for old in run_dir.glob("*.log"):
        old.unlink()
    unread = ""
    run = _Run(
        scenario,
        opts,
        random.Random(seed),
        History(),
        run_dir,
        progress,
        services,
        workflows,
        toxi=toxi,
    )
    kafka = services.kafka_bootstrap if services is not None else opts.kafka_bootstrap
    redis_url = services.redis_url if services is not None else opts.redis_url
    if scenario.prepare is not None:
        await scenario.prepare(run)
    if services is not None:
        services = run.services  # prepare may have changed its configuration
    run.cluster = Cluster(
        run_dir, kafka, redis_url, patients=opts.patients, turn_delay_s=opts.turn_delay_s,
        session_timeout_ms=opts.session_timeout_ms, client_id="chaos-campaign",
        ehr=EhrConfig(patients=max(opts.patients, 5), latency_ms=5.0), env=run.cluster_env,
    )  # fmt: skip
    tasks: list[asyncio.Task[None]] = []
    try:
        agents = [(role, f"{role}-{m}") for role in ROLES for m in ("a", "b")]
        for role, agent_id in agents:
            run.history.record(
                "process", "process.start", at_ms=run.now_ms(), actor=agent_id, role=role
            )
        await run.cluster.start(agents, env=run.agent_env, ready_timeout_s=READY_TIMEOUT_S)
        progress(f"  {len(agents)} agents ready (prefix {run.cluster.prefix})")
        tasks = [asyncio.create_task(_tail_audit(run)), asyncio.create_task(_watch_deaths(run))]
        spec = reconciliation_spec(patients=opts.patients, page_size=opts.page_size)

        async def submit() -> None:
            for _ in range(workflows):
                run.submitted.append(await run.cluster.submit(spec))
                await asyncio.sleep(opts.submit_interval_s)
            run.submitting_done = True

        async def report_progress() -> None:
            while True:
                await asyncio.sleep(10)
                progress(f"  {_print_state(run)}")

        submitter = asyncio.create_task(submit())
        tasks.append(asyncio.create_task(report_progress()))
        try:
            await scenario.inject(run)
        except MeshError as exc:
            run.notes.append(f"the scenario stopped early: {exc}")
            progress(f"  ! scenario stopped early: {exc}")
        await submitter
        deadline = time.monotonic() + opts.recover_timeout_s
        while run.active() and time.monotonic() < deadline:  # noqa: ASYNC110 - the reader task folds the views
            await asyncio.sleep(0.2)
        if run.active():
            run.notes.append(
                f"not every workflow ended within {opts.recover_timeout_s:.0f} s of the last fault"
            )
        progress(f"  {_print_state(run)}; reading the history back")
        await asyncio.sleep(3.0)  # debounced gossip saves, last dead letters
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        tasks = []
        if run.services is not None:
            await asyncio.to_thread(
                run.services.up
            )  # a scenario that failed midway may have left one down
        own = list(run.history)  # the campaign's own records (faults, processes, votes)
        for attempt in range(1, 4):
            # Each attempt reads everything again into a fresh copy (new consumer groups): a
            # half-read history would be checked as if events were missing.
            run.history = History(own)
            try:
                await _collect(run, attempt=attempt)
                break
            except MeshError as exc:
                progress(f"  ! reading the history back failed (attempt {attempt}): {exc}")
                if attempt == 3:
                    unread = f"the history could not be read back: {str(exc).splitlines()[0]}"
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stop in run.helpers:
            stop()
        # Shutdown: SIGTERM every agent, and say (as a note, not an anomaly) who had to be SIGKILLed.
        t0 = time.monotonic()
        await run.cluster.aclose(grace_s=SHUTDOWN_GRACE_S)
        await _delete_topics(run.cluster.kafka_bootstrap, run.cluster.prefix, run.notes)
        hung = [
            a
            for a, p in run.cluster.agents.procs.items()
            if a not in run.expected_exits and p.returncode == -signal.SIGKILL
        ]
        if hung:
            run.notes.append(
                f"at shutdown {len(hung)} agent(s) were still running {SHUTDOWN_GRACE_S:.0f} s after SIGTERM "
                f"and were SIGKILLed: {', '.join(hung)} (shutdown took {time.monotonic() - t0:.0f} s)"
            )
    if run.faults == 0:
        run.notes.append("no fault landed (the workflows ended before the scenario found a target)")
    history_path = run_dir / "history.jsonl"
    run.history.save(history_path)
    result = check(run.history)
    return ScenarioResult(scenario.name, scenario.description, result, time.monotonic() - began, str(history_path),
                          run.notes, crashed=unread)  # fmt: skip


async def _delete_topics(bootstrap: str, prefix: str, notes: list[str]) -> None:
    """Delete the scenario's topics: a broker restarted later reloads every partition it holds."""
    try:
        await delete_topics_with_prefix(bootstrap, prefix, client_id="chaos-campaign")
    except MeshError as exc:  # the report matters more than the cleanup
        notes.append(f"topics {prefix}.* not deleted: {exc}")


async def _collect(run: _Run, *, attempt: int = 1) -> None:
    c = run.cluster
    h = run.history
    group = f"{c.prefix}.history{attempt}"
    # Every agent (replacements included) has registered its key by now: load them all once, so the
    # concurrent readers below never race one another's rate-limited keyring reload.
    await c.trust.register()
    await asyncio.gather(
        read_workflow_log(h, c.bus, c.topics.workflow_events, group=f"{group}-log", guard=c.trust),
        read_trace(h, c.bus, c.topics.trace_events, group=f"{group}-trace", guard=c.trust),
        read_dead_letters(h, c.bus, c.topics.dead_letter, group=f"{group}-dlq", flood=run.flood,
                          max_envelope_bytes=MAX_ENVELOPE_BYTES),
    )  # fmt: skip
    read_audit_log(h, c.ehr.audit_log)
    steps = {
        e.workflow_id: [str(s["id"]) for s in e.get("steps", [])]
        for e in h.of("log", "workflow.submitted")
    }
    await read_store(h, c.store, steps)
    client = aioredis.Redis.from_url(c.redis_url)
    try:
        maps = ContextMapArchive(RedisContextMapStore(client, prefix=f"{c.prefix}:"))
        await read_gossip_maps(h, maps.load, steps, list(c.agents.procs))
    finally:
        await client.aclose()


def _needs_met(scenario: Scenario, services: DevServices | None, toxi: Toxiproxy | None) -> str:
    if "services" in scenario.needs and services is None:
        return "needs services the campaign owns (a user's own Kafka and Redis are not killed)"
    if "toxiproxy" in scenario.needs and services is not None and services.config.kafka_nodes > 1:
        return "needs a single-node private Kafka (its proxied listener); run it without --kafka-nodes"
    if "toxiproxy" in scenario.needs and toxi is None:
        return "needs toxiproxy-server (MESH_TOXIPROXY_SERVER, on PATH, or `go` to build it)"
    if "faketime" in scenario.needs and not FAKETIME_LIB.exists():
        return f"needs libfaketime ({FAKETIME_LIB}; Debian: apt-get install libfaketime)"
    return ""


def _private_services(opts: CampaignOptions, *, with_proxy: bool) -> DevServices:
    root = (opts.report_dir / "services").resolve()
    nodes = max(1, opts.kafka_nodes)
    if opts.services_port:
        p = opts.services_port
        # Node k listens on p + 2(k-1) (broker) and p + 1 + 2(k-1) (controller); Redis comes after.
        ports: dict[str, object] = {
            "kafka_port": p,
            "kafka_controller_port": p + 1,
            "redis_port": p + 2 * nodes,
            "kafka_nodes": nodes,
        }
        if with_proxy:
            ports.update(kafka_proxied_port=p + 2 * nodes + 1, kafka_proxied_advertised_port=p + 2 * nodes + 2)
        return DevServices(DevConfig(state_dir=root, start_timeout_s=300, **ports))  # type: ignore[arg-type]
    extra: dict[str, object] = {"kafka_nodes": nodes}
    if with_proxy:
        extra.update(kafka_proxied_port=free_port(), kafka_proxied_advertised_port=free_port())
    return DevServices(DevConfig.isolated(root, start_timeout_s=300, **extra))


def run_campaign(opts: CampaignOptions, *, progress: Progress = print) -> CampaignReport:
    """Run the selected scenarios one after the other; write and return the report."""
    scenarios = _select(opts.scenarios)
    # The campaign's own readers see every outage too; their client chatter is not the report.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    # Agents seal secrets at rest with the data key; the campaign opens their gossip maps with it.
    if not os.environ.get(DATA_KEY_ENV) and not os.environ.get(DATA_KEY_FILE_ENV):
        os.environ[DATA_KEY_ENV] = generate_data_key()
    own = bool(opts.kafka_bootstrap or opts.redis_url)
    if own and not (opts.kafka_bootstrap and opts.redis_url):
        raise UsageError(
            "give both --kafka-bootstrap and --redis-url, or neither (private services)"
        )
    report = CampaignReport(
        command=opts.command or "mesh chaos run", seed=opts.seed,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        environment={"services": "user's" if own else "private (mesh dev)", "cpus": str(os.cpu_count()),
                     "python": sys.version.split()[0]},
    )  # fmt: skip
    # Ctrl-C stops the campaign (asyncio's own handler would only cancel the scenario's main task,
    # which waits for its processes and goes on to the next scenario). Cleanup runs either way.
    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        previous_handler = signal.signal(signal.SIGINT, _interrupt)
    per = max(1, opts.workflows // len(scenarios))
    extra = max(0, opts.workflows - per * len(scenarios))
    toxi: Toxiproxy | None = None
    services: DevServices | None = None
    if opts.kafka_nodes > 1 and any("toxiproxy" in s.needs for s in scenarios):
        # The proxied listener the network cut goes through is single-node (mesh dev).
        progress("network cuts need a single-node private Kafka; skipped with --kafka-nodes > 1")
    elif not own and any("toxiproxy" in s.needs for s in scenarios):
        try:
            toxi = Toxiproxy(log_path=opts.report_dir / "toxiproxy.log")
            opts.report_dir.mkdir(parents=True, exist_ok=True)
            toxi.start()
        except MeshError as exc:
            progress(f"toxiproxy unavailable: {exc}")
            toxi = None
    if not own:
        services = _private_services(opts, with_proxy=toxi is not None)
        progress(
            f"starting private Kafka and Redis ({services.kafka_bootstrap}, {services.redis_url})"
        )
        services.up()
        if toxi is not None:
            cfg = services.config
            assert cfg.kafka_proxied_port is not None
            toxi.proxy(
                "kafka", cfg.kafka_proxied_port, listen_port=cfg.kafka_proxied_advertised_port
            )
    try:
        for i, scenario in enumerate(scenarios):
            n = per + (1 if i < extra else 0)
            why = _needs_met(scenario, services, toxi)
            progress(
                f"[{i + 1}/{len(scenarios)}] {scenario.name}: {n} workflows, seed {opts.seed + i}"
            )
            if why:
                progress(f"  skipped: {why}")
                report.scenarios.append(ScenarioResult(scenario.name, scenario.description, check(History()), 0.0,
                                                       notes=[f"skipped: {why}"]))  # fmt: skip
                continue
            try:
                result = asyncio.run(
                    _run_scenario(
                        scenario, opts, workflows=n, seed=opts.seed + i, services=services, toxi=toxi,
                        progress=progress,
                    )
                )  # fmt: skip
            except (MeshError, RuntimeError, OSError, TimeoutError) as exc:
                # One broken scenario (a service that would not come back) does not cost the others.
                progress(f"  ! scenario crashed: {type(exc).__name__}: {exc}")
                crashed = f"the scenario crashed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                result = ScenarioResult(
                    scenario.name, scenario.description, check(History()), 0.0, crashed=crashed
                )
            report.scenarios.append(result)
            kinds = (
                ", ".join(f"{k} {v}" for k, v in sorted(result.result.by_kind().items()))
                or "no anomaly"
            )
            f = result.result.figures
            progress(
                f"  done in {result.elapsed_s:.0f} s: {f.completed}/{f.workflows} completed, {f.faults} faults, {kinds}"
            )
            report.write(opts.report_dir)
            if services is not None:
                services = DevServices(
                    services.config.model_copy(update={"redis_appendfsync": "everysec"})
                )
                services.up()  # a scenario may have left a service down if it failed midway
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
        if toxi is not None:
            toxi.stop()
        if services is not None:
            services.down()
    report.write(opts.report_dir)
    return report


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def command_line(argv: list[str]) -> str:
    """The exact command, quoted for a shell."""
    return "mesh " + " ".join(shlex.quote(a) for a in argv)
