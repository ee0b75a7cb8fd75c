"""Throughput curve: completed 4-step workflows per second and latency by load, agents and brokers.

Run ``python -m bench.throughput`` (every cell: concurrency 10, 100 and 1,000; 1, 2 and 4 agent
processes per role; one broker and a 3-node KRaft cluster) or pick with ``--concurrency``,
``--per-role`` and ``--kafka-nodes``; the box has 2 shared cores, so run what fits.

For each Kafka topology a private ``mesh dev`` Kafka is started (``DevConfig.isolated``: one
broker, or ``kafka_nodes=3`` combined broker+controller nodes; the mesh then creates its topics
with 3 replicas and ``min.insync.replicas=2``) and stopped afterwards; Redis is the shared one
(``MESH_REDIS_URL`` or ``mesh dev``). For each agents-per-role value, fresh topics and
``4 x per-role`` ``mesh agent run`` processes (rule reasoner, no turn delay) and the mock EHR;
then, in order, each concurrency level: N reconciliation workflows (2 patients, page size 2:
identity, fetch, validate, report) submitted at once, until every ``WorkflowCompleted``.

* wf/s = completed / (first ``WorkflowSubmitted`` -> last ``WorkflowCompleted``, record timestamps);
  latency = each workflow's submitted -> completed.
* CPU ms per workflow, by process: Kafka (every JVM node), Redis, the agents, the mock EHR and
  this process (submitter + reader), from ``/proc/<pid>/stat`` before and after the batch. With
  2 cores, 2,000 / (total CPU ms per workflow) is the box's ceiling in wf/s.
* ``--profile N``: one more run (one broker, 1 agent per role, N workflows) with every agent under
  cProfile; their CPU time split into signing/verifying (Ed25519), Kafka client, Redis client,
  codec (msgpack, pydantic), asyncio and sockets, the mesh runtime, and the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pstats
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agents.specs import reconciliation_spec
from bench.common import (
    Services,
    Stats,
    command_line,
    console,
    delete_keys,
    delete_topics,
    print_header,
    print_table,
    run_id,
    services,
)
from mesh.bus import KafkaBus, SubscriptionOptions
from mesh.dev import DevConfig, DevServices
from mesh.runtime import MeshClient, WorkerOptions
from mesh.runtime.trust import AgentTrust
from mesh.store import RedisConnection, RedisKeyringStore
from protocols import Topics, WorkflowCompleted, WorkflowSubmitted

__all__ = ["CATEGORIES", "Cell", "categorize", "cpu_seconds", "main", "parse_ints"]

ROLES = ("identity", "fetch", "validate", "report")
SPEC_PATH = Path(__file__).resolve().parents[1] / "agents" / "workflows" / "reconciliation.yaml"
_TICKS = os.sysconf("SC_CLK_TCK")

CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # (label, substrings of "<file>:<function>" of a profiled function); first match wins. A
    # builtin (isinstance, compile, ...) counts for the functions that called it.
    ("sign + verify (Ed25519)", ("ed25519", "Ed25519", "mesh/security", "cryptography")),
    ("input limits check (protocols.limits)", ("protocols/limits",)),
    ("envelope codec (msgpack)", ("msgpack", "protocols/")),
    ("pydantic (validation, model classes)", ("pydantic", "/typing.py")),
    ("Kafka client (aiokafka)", ("aiokafka", "kafka")),
    ("Redis client (redis-py)", ("/redis/", "hiredis")),
    ("telemetry (OpenTelemetry, logging)", ("opentelemetry", "/logging/", "mesh/telemetry")),
    ("gossip + quorum", ("mesh/gossip", "mesh/quorum")),
    (
        "asyncio + sockets",
        ("asyncio", "selectors", "socket", "ssl", "<method 'send", "<method 'recv"),
    ),
    ("start-up (imports, tiktoken load)", ("importlib", "<frozen", "marshal", "tiktoken/load")),
    ("mesh runtime (Python)", ("/mesh/",)),
)
"""How profiled functions are grouped; anything unmatched is "other Python"."""

_IDLE = ("<method 'poll' of 'select.epoll' objects>", "<method 'select' of 'select.epoll' objects>")


def parse_ints(text: str) -> list[int]:
    """``"10,100,1000"`` -> ``[10, 100, 1000]``."""
    return [int(part) for part in text.split(",") if part.strip()]


def categorize(
    stats: Mapping[tuple[str, int, str], tuple[object, ...]],
) -> tuple[dict[str, float], float]:
    """CPU seconds by category (own time of each function) and seconds idle in epoll.

    A builtin's own time (``isinstance`` from a validator, ``compile`` from a class factory) is
    split over its callers by each call edge's time, so it lands where the cost comes from.
    """
    spent: dict[str, float] = {label: 0.0 for label, _ in CATEGORIES}
    spent["other Python"] = 0.0
    idle = 0.0
    for (filename, _line, func), row in stats.items():
        own = float(row[2])  # type: ignore[arg-type]  # pstats rows: (cc, nc, tt, ct, callers)
        if func in _IDLE:
            idle += own
            continue
        label = _label(f"{filename}:{func}")
        callers = row[4] if len(row) > 4 else {}
        if filename == "~" and label == "other Python" and isinstance(callers, dict) and callers:
            edges = {caller: float(edge[2]) for caller, edge in callers.items()}
            total = sum(edges.values()) or 1.0
            for (c_file, _c_line, c_func), edge_s in edges.items():
                spent[_label(f"{c_file}:{c_func}")] += own * edge_s / total
            continue
        spent[label] += own
    return spent, idle


def _label(where: str) -> str:
    for label, needles in CATEGORIES:
        if any(n in where for n in needles):
            return label
    return "other Python"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process (all its threads) has used; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass
class Cell:
    """One measured batch: topology, agents per role, concurrency and what came out."""

    kafka_nodes: int
    per_role: int
    concurrency: int
    completed: int = 0
    succeeded: int = 0
    span_s: float = 0.0
    latency: Stats | None = None
    cpu_ms: dict[str, float] = field(default_factory=dict)
    """CPU ms per completed workflow by process group, idle burn subtracted."""
    idle_cpu_pct: float = 0.0
    """CPU the process groups burn with nothing to do, in % of one core (measured before the batch)."""

    @property
    def wf_per_s(self) -> float:
        """Completed workflows per second of span."""
        return self.completed / self.span_s if self.span_s > 0 else 0.0


@contextlib.contextmanager
def _kafka(nodes: int, tmp: Path, heap_mb: int, port: int) -> Iterator[DevServices]:
    state_dir = tmp / f"kafka{nodes}"
    if port:
        # Node k on port + 2(k-1), its controller on port + 1 + 2(k-1); Redis is not started here.
        config = DevConfig(
            state_dir=state_dir,
            kafka_nodes=nodes,
            kafka_heap_mb=heap_mb,
            kafka_port=port,
            kafka_controller_port=port + 1,
            redis_port=port + 2 * nodes,
        )
    else:
        config = DevConfig.isolated(state_dir, kafka_nodes=nodes, kafka_heap_mb=heap_mb)
    dev = DevServices(config)
    dev.up(services=("kafka",))
    try:
        yield dev
    finally:
        dev.down()


def _agent_env(kafka: str, redis: str, prefix: str, state_dir: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "MESH_KAFKA_BOOTSTRAP": kafka,
        "MESH_REDIS_URL": redis,
        "MESH_TOPIC_PREFIX": prefix,
        "MESH_STATE_DIR": str(state_dir),
        "MESH_TOPIC_PARTITIONS": "6",
        "PYTHONPATH": str(SPEC_PATH.parents[2]),
    }
    env.pop("ANTHROPIC_API_KEY", None)  # rule reasoner only: no LLM calls
    env.pop("MESH_TOPIC_REPLICATION", None)  # sized to the cluster: 3 replicas on 3 nodes
    return env


class _Cpu:
    """CPU seconds of named process groups, sampled before and after a batch."""

    def __init__(self, groups: Mapping[str, Sequence[int]]) -> None:
        self.groups = groups

    def sample(self) -> tuple[float, dict[str, float]]:
        """(monotonic time, CPU seconds used so far by each group)."""
        out = {name: sum(cpu_seconds(p) for p in pids) for name, pids in self.groups.items()}
        t = os.times()
        out["bench process"] = t.user + t.system
        return time.monotonic(), out

    @staticmethod
    def rates(
        a: tuple[float, dict[str, float]], b: tuple[float, dict[str, float]]
    ) -> dict[str, float]:
        """CPU seconds per second of each group between two samples."""
        dt = max(b[0] - a[0], 1e-9)
        return {k: (b[1][k] - a[1][k]) / dt for k in b[1]}


async def _run_cell(
    kafka: DevServices,
    redis_url: str,
    per_role: int,
    levels: Sequence[int],
    *,
    redis_pids: Sequence[int],
    profile_dir: Path | None = None,
    timeout_s: float,
) -> list[Cell]:
    from agents.mock_ehr import EhrConfig, start_mock_ehr_process
    from agents.processes import AgentProcesses

    prefix = run_id("tp")
    topics = Topics(prefix=prefix)
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="bench-tp-") as tmp_name:
        tmp = Path(tmp_name)
        ehr = start_mock_ehr_process(tmp / "audit.jsonl", config=EhrConfig(patients=2))
        agents = AgentProcesses(
            tmp,
            _agent_env(kafka.kafka_bootstrap, redis_url, prefix, tmp / "state"),
            turn_delay_s=0.0,
            session_timeout_ms=WorkerOptions().session_timeout_ms,
        )
        trust = await AgentTrust.connect(
            "bench", RedisKeyringStore.connect(RedisConnection(url=redis_url), prefix=f"{prefix}:"), state_dir=tmp / "state"
        )
        bus = KafkaBus(
            kafka.kafka_bootstrap,
            topics=topics,
            client_id="bench-tp",
            partitions=6,
            signer=trust.sign,
        )
        try:
            await bus.start()
            for role in ROLES:
                for n in range(1, per_role + 1):
                    launcher = (
                        [
                            sys.executable,
                            "-m",
                            "bench.cpu_profile",
                            str(profile_dir / f"{role}-{n}.prof"),
                            "mesh",
                        ]
                        if profile_dir is not None
                        else []
                    )
                    agents.start(role, f"{role}-{n}", launcher=launcher)
            await asyncio.to_thread(agents.wait_ready, timeout_s=300.0)
            sub = await bus.subscribe(
                [topics.workflow_events],
                group=f"{prefix}.bench-reader",
                options=SubscriptionOptions(session_timeout_ms=10000, heartbeat_interval_ms=1000),
            )
            await asyncio.sleep(3.0)  # let the role groups settle before the clock starts
            cpu = _Cpu(
                {
                    "Kafka": [p for node in kafka.kafka_nodes if (p := node.pid()) is not None],
                    "Redis": list(redis_pids),
                    "agents": [proc.pid for proc in agents.procs.values()],
                    "mock EHR": [ehr.pid],
                }
            )
            client = MeshClient(bus, topics=topics, client_id="bench")
            spec = reconciliation_spec(patients=2, page_size=2)
            for level in levels:
                cells.append(
                    await _batch(
                        client,
                        sub,
                        spec,
                        ehr.base_url,
                        level,
                        cpu,
                        timeout_s=timeout_s,
                        cell=Cell(len(kafka.kafka_nodes), per_role, level),
                    )
                )
            await sub.aclose()
        finally:
            await asyncio.to_thread(agents.stop_all, timeout_s=30.0)
            ehr.stop()
            await bus.aclose()
            await trust.aclose()
            await delete_topics(kafka.kafka_bootstrap, prefix)
            await delete_keys(redis_url, prefix)
    return cells


async def _batch(
    client: MeshClient,
    sub: object,
    spec: object,
    ehr_url: str,
    n: int,
    cpu: _Cpu,
    *,
    timeout_s: float,
    cell: Cell,
    idle_s: float = 5.0,
) -> Cell:
    # Idle first: what each group burns doing nothing (polls, heartbeats, gossip digests, JVM) is
    # subtracted, so the figure is the work a workflow costs, not the box's contention.
    idle_from = cpu.sample()
    await asyncio.sleep(idle_s)
    before = cpu.sample()
    idle = _Cpu.rates(idle_from, before)
    ids = set(
        await asyncio.gather(
            *(
                client.submit(spec, variables={"ehr_base_url": ehr_url})  # type: ignore[arg-type]
                for _ in range(n)
            )
        )
    )
    submitted: dict[str, int] = {}
    completed: dict[str, int] = {}
    ok = 0
    deadline = time.monotonic() + timeout_s
    while len(completed) < n and time.monotonic() < deadline:
        for d in await sub.poll(timeout_ms=200):  # type: ignore[attr-defined]
            env = d.envelope
            if env.workflow_id not in ids:
                continue
            if env.kind == WorkflowSubmitted.KIND:
                submitted.setdefault(env.workflow_id, d.timestamp_ms)
            elif env.kind == WorkflowCompleted.KIND and env.workflow_id not in completed:
                completed[env.workflow_id] = d.timestamp_ms
                ok += env.payload_model(WorkflowCompleted).status == "succeeded"
    after = cpu.sample()
    cell.completed, cell.succeeded = len(completed), ok
    if completed and submitted:
        cell.span_s = (max(completed.values()) - min(submitted.values())) / 1000
        lat = [(completed[wf] - submitted[wf]) / 1000 for wf in completed if wf in submitted]
        cell.latency = Stats.of(lat) if lat else None
        busy_s = after[0] - before[0]
        cell.idle_cpu_pct = 100 * sum(idle.values())
        cell.cpu_ms = {
            k: max(0.0, after[1][k] - before[1][k] - idle[k] * busy_s) * 1000 / len(completed)
            for k in after[1]
        }
    # One line per batch as it ends: a run cut short still leaves its figures.
    st = cell.latency
    console.print(
        f"  kafka nodes {cell.kafka_nodes}, {cell.per_role}/role, {n} workflows: {cell.completed} done "
        f"({cell.succeeded} ok) in {cell.span_s:.1f} s = {cell.wf_per_s:.2f} wf/s; latency p50 "
        f"{st.p50 if st else float('nan'):.1f} s p99 {st.p99 if st else float('nan'):.1f} s; CPU ms/wf "
        + ", ".join(f"{k} {v:.0f}" for k, v in cell.cpu_ms.items())
        + f", total {sum(cell.cpu_ms.values()):.0f}; idle burn {cell.idle_cpu_pct:.0f}% of a core",
        markup=False,
    )
    return cell


def _profile_table(profile_dir: Path) -> tuple[list[str], list[list[object]]]:
    """Agents (columns) and one row per category: % of each agent's CPU, then all agents' CPU s."""
    per_agent: dict[str, dict[str, float]] = {}
    for path in sorted(profile_dir.glob("*.prof")):
        per_agent[path.stem], _idle = categorize(pstats.Stats(str(path)).stats)  # type: ignore[attr-defined]
    labels = [label for label, _ in CATEGORIES] + ["other Python"]
    rows: list[list[object]] = []
    for label in [*labels, "total"]:
        row: list[object] = [label]
        all_s = 0.0
        for spent in per_agent.values():
            busy = sum(spent.values())
            value = busy if label == "total" else spent[label]
            all_s += value
            row.append(100 * value / busy if busy else 0.0)
        everyone = sum(sum(spent.values()) for spent in per_agent.values())
        row += [100 * all_s / everyone if everyone else 0.0, all_s]
        rows.append(row)
    return list(per_agent), rows


def _print_profile(profile_dir: Path, what: str, cmd: str) -> None:
    agents, rows = _profile_table(profile_dir)
    if not agents:
        return
    print_table(
        f"where the agents' CPU goes (cProfile with a CPU clock, {what}; % of each agent's CPU)",
        ["category", *agents, "all agents %", "all agents CPU s"],
        rows,
        command=cmd,
        caption="own time per function, builtins counted for their callers; start-up (imports, "
        "tiktoken) included; cProfile slows what it measures, so read the shares",
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected cells and print the tables; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--concurrency",
        type=parse_ints,
        default=[10, 100, 1000],
        help="workflows submitted at once, comma separated (default 10,100,1000)",
    )
    parser.add_argument(
        "--per-role",
        type=parse_ints,
        default=[1, 2, 4],
        help="agent processes per role, comma separated (default 1,2,4)",
    )
    parser.add_argument(
        "--kafka-nodes",
        type=parse_ints,
        default=[1, 3],
        help="Kafka topologies: 1 (one broker) and/or 3 (KRaft cluster) (default 1,3)",
    )
    parser.add_argument(
        "--kafka-heap-mb", type=int, default=384, help="JVM heap of each Kafka node"
    )
    parser.add_argument(
        "--kafka-port",
        type=int,
        default=0,
        help="first Kafka port (node k: +2(k-1), controllers +1); default: free ports",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also profile every agent (1 per role, one broker) over N workflows",
    )
    parser.add_argument("--timeout-s", type=float, default=900.0, help="longest wait for one batch")
    parser.add_argument(
        "--quick", action="store_true", help="10 and 100 workflows, 1 and 2 per role, one broker"
    )
    parser.add_argument(
        "--from-profiles",
        type=Path,
        default=None,
        metavar="DIR",
        help="only print the profile table of an earlier --profile run's directory",
    )
    args = parser.parse_args(argv)
    # A background run (SIGINT ignored there) stopped with SIGTERM still stops its agents and Kafka.
    signal.signal(signal.SIGTERM, _interrupt)
    if args.quick:
        args.concurrency, args.per_role, args.kafka_nodes = [10, 100], [1, 2], [1]
    cmd = command_line("bench.throughput", argv)
    if args.from_profiles is not None:
        _print_profile(args.from_profiles, f"profiles in {args.from_profiles}", cmd)
        return 0
    svc: Services = services(need=("redis",))
    redis_pids = (
        [p] if svc.source == "mesh dev" and (p := DevServices().redis.pid()) is not None else []
    )
    print_header(
        "bench.throughput: workflows/s and latency by concurrency, agents per role and brokers",
        "bench.throughput",
        argv,
        f"redis {svc.redis_url} ({svc.source}); Kafka started per topology",
    )
    cells: list[Cell] = []
    profile_dir: Path | None = None
    with tempfile.TemporaryDirectory(prefix="bench-tp-kafka-") as tmp_name:
        tmp = Path(tmp_name)
        for nodes in args.kafka_nodes:
            with _kafka(nodes, tmp, args.kafka_heap_mb, args.kafka_port) as kafka:
                console.print(f"kafka: {nodes} node(s) at {kafka.kafka_bootstrap}")
                for per_role in args.per_role:
                    cells += asyncio.run(
                        _run_cell(
                            kafka,
                            svc.redis_url,
                            per_role,
                            args.concurrency,
                            redis_pids=redis_pids,
                            timeout_s=args.timeout_s,
                        )
                    )
                if args.profile and nodes == 1:
                    profile_dir = Path(tempfile.mkdtemp(prefix="bench-throughput-profiles-"))
                    console.print(f"agent profiles (pstats, CPU clock): {profile_dir}")
                    asyncio.run(
                        _run_cell(
                            kafka,
                            svc.redis_url,
                            1,
                            [args.profile],
                            redis_pids=redis_pids,
                            profile_dir=profile_dir,
                            timeout_s=args.timeout_s,
                        )
                    )
    base = {
        (c.per_role, c.concurrency): c.wf_per_s
        for c in cells
        if c.kafka_nodes == min(args.kafka_nodes)
    }
    groups = ["Kafka", "Redis", "agents", "mock EHR", "bench process"]
    rows = []
    for c in cells:
        lat = c.latency
        ref = base.get((c.per_role, c.concurrency), 0.0)
        rows.append(
            [
                c.kafka_nodes,
                c.per_role,
                c.concurrency,
                f"{c.completed}/{c.succeeded}",
                c.span_s,
                c.wf_per_s,
                lat.p50 if lat else float("nan"),
                lat.p99 if lat else float("nan"),
                *(c.cpu_ms.get(g, float("nan")) for g in groups),
                sum(c.cpu_ms.values()),
                2000 / sum(c.cpu_ms.values()) if sum(c.cpu_ms.values()) > 0 else float("nan"),
                c.idle_cpu_pct,
                c.wf_per_s / ref if ref else float("nan"),
            ]
        )
    print_table(
        "completed 4-step workflows (reconciliation, 2 patients, page size 2, rule reasoner, no turn delay)",
        [
            "nodes",
            "per role",
            "concurrent",
            "done/ok",
            "span s",
            "wf/s",
            "p50 s",
            "p99 s",
            *groups,
            "total",
            "2-core ceiling wf/s",
            "idle CPU %",
            f"wf/s x {min(args.kafka_nodes)} node(s)",
        ],
        rows,
        command=cmd,
        caption="latency = WorkflowSubmitted -> WorkflowCompleted, span = first submit -> last completion "
        "(record timestamps); Kafka .. total: CPU ms per completed workflow from /proc/<pid>/stat, with "
        "the idle burn measured just before (idle CPU %, of one core) subtracted; ceiling = 2,000 / total",
    )
    if profile_dir is not None:
        _print_profile(profile_dir, f"{args.profile} workflows, one broker, 1 agent per role", cmd)
    console.print(
        f"machine after the run: load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
