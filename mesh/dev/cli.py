"""``mesh dev``: start, stop and inspect the local Kafka and Redis."""

from __future__ import annotations

import dataclasses
import logging
import shlex
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from mesh.dev._config import DevConfig
from mesh.dev._errors import DevInstallError, DevServiceError
from mesh.dev._llm import LocalLlm
from mesh.dev._process import log_tail
from mesh.dev._redis_ha import LocalRedisCluster, LocalRedisSentinel
from mesh.dev._services import DevServices, DevStatus

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)
# soft_wrap: CI logs are not terminals; rich would hard-wrap long paths at 80 columns.
_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)

StateDirOpt = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Root of config, data, logs [env MESH_DEV_STATE_DIR, MESH_STATE_DIR]."),
]
KafkaPortOpt = Annotated[
    int | None, typer.Option("--kafka-port", help="Kafka client port [env MESH_DEV_KAFKA_PORT; 19092].")
]
ControllerPortOpt = Annotated[
    int | None,
    typer.Option(
        "--kafka-controller-port",
        help="KRaft controller port [env MESH_DEV_KAFKA_CONTROLLER_PORT; 19093].",
    ),
]
RedisPortOpt = Annotated[
    int | None, typer.Option("--redis-port", help="Redis port [env MESH_DEV_REDIS_PORT; 16379].")
]
FsyncOpt = Annotated[
    str | None,
    typer.Option(
        "--redis-appendfsync",
        help="Redis AOF fsync: always|everysec|no [env MESH_DEV_REDIS_APPENDFSYNC; everysec].",
    ),
]
KafkaNodesOpt = Annotated[
    int | None,
    typer.Option(
        "--kafka-nodes",
        help="KRaft nodes (each broker+controller); 3 makes a cluster that survives losing one. "
        "Node k uses --kafka-port + 2(k-1) and --kafka-controller-port + 2(k-1) [env MESH_DEV_KAFKA_NODES; 1].",
    ),
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option("--timeout-s", help="Seconds a service may take to become ready [env MESH_DEV_START_TIMEOUT_S; 90]."),
]


def _services(
    state_dir: Path | None = None,
    kafka_port: int | None = None,
    kafka_controller_port: int | None = None,
    redis_port: int | None = None,
    redis_appendfsync: str | None = None,
    start_timeout_s: float | None = None,
    kafka_nodes: int | None = None,
) -> DevServices:
    overrides = {
        "state_dir": state_dir,
        "kafka_port": kafka_port,
        "kafka_controller_port": kafka_controller_port,
        "redis_port": redis_port,
        "redis_appendfsync": redis_appendfsync,
        "start_timeout_s": start_timeout_s,
        "kafka_nodes": kafka_nodes,
    }
    # aiokafka logs every refused connection of the readiness probe; the CLI reports failures
    # itself, with the service's own log.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        config = DevConfig(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
        if kafka_nodes is None and "kafka_nodes" not in config.model_fields_set:
            # Neither --kafka-nodes nor MESH_DEV_KAFKA_NODES: follow a cluster that already runs.
            running = DevServices.running_kafka_nodes(config)
            if running is not None:
                config = DevConfig(**{**{k: v for k, v in overrides.items() if v is not None}, "kafka_nodes": running})  # type: ignore[arg-type]
    except ValidationError as exc:
        _err.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None
    return DevServices(config)


def _progress(message: str) -> None:
    _out.print(f"  {message}", style="dim", markup=False, soft_wrap=True)


def _print_status(current: DevStatus) -> None:
    # Plain aligned lines, never wrapped or cut: addresses and log paths get copied and pasted.
    rows = [("service", "state", "pid", "address", "log")]
    for s in current.services:
        rows.append(
            (s.name, "running" if s.running else "stopped", str(s.pid or "-"), s.address, str(s.log_path))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for n, row in enumerate(rows):
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4]
        style = "bold" if n == 0 else ("green" if row[1] == "running" else "yellow")
        _out.print(line, style=style, markup=False, soft_wrap=True)
    for s in current.services:
        if s.note:
            _out.print(f"{s.name}: {s.note}", style="yellow", markup=False, soft_wrap=True)


def _fail(exc: Exception) -> typer.Exit:
    _err.print(f"[red]error:[/red] {exc}", markup=True, soft_wrap=True)
    return typer.Exit(1)


@app.command()
def install(state_dir: StateDirOpt = None) -> None:
    """Resolve the Kafka jars (Maven) and install redis-server (apt-get) without starting them."""
    services = _services(state_dir)
    try:
        report = services.ensure_installed(progress=_progress)
    except DevInstallError as exc:
        raise _fail(exc) from None
    how = "resolved with Maven" if report.maven_ran else "already cached"
    _out.print(f"kafka {services.config.kafka_version} jars {how} in {services.config.kafka_libs_dir}")
    _out.print(f"redis-server: {report.redis_server}")
    _out.print(f"install took {report.elapsed_s:.1f} s")


@app.command()
def up(
    state_dir: StateDirOpt = None,
    kafka_port: KafkaPortOpt = None,
    kafka_controller_port: ControllerPortOpt = None,
    redis_port: RedisPortOpt = None,
    redis_appendfsync: FsyncOpt = None,
    timeout_s: TimeoutOpt = None,
    kafka_nodes: KafkaNodesOpt = None,
    llm: Annotated[
        bool, typer.Option("--llm", help="Also start the local model server (see `mesh dev llm`).")
    ] = False,
    redis_cluster: Annotated[
        bool,
        typer.Option(
            "--redis-cluster",
            help="Also start a Redis Cluster: 3 masters + 3 replicas [ports from env MESH_DEV_REDIS_CLUSTER_PORT; 17000].",
        ),
    ] = False,
    redis_sentinel: Annotated[
        bool,
        typer.Option(
            "--redis-sentinel",
            help="Also start a master, a replica and 3 sentinels [env MESH_DEV_REDIS_SENTINEL_PORT; 17100].",
        ),
    ] = False,
) -> None:
    """Start Kafka (one broker, or a KRaft cluster with --kafka-nodes 3) and Redis; with --llm the local model too.

    Running services are left alone. With --redis-cluster / --redis-sentinel a replicated Redis
    starts as well; point the mesh at it with the MESH_REDIS_* lines printed at the end.
    """
    services = _services(
        state_dir, kafka_port, kafka_controller_port, redis_port, redis_appendfsync, timeout_s, kafka_nodes
    )
    try:
        report = services.up(progress=_progress)
    except (DevServiceError, DevInstallError) as exc:
        raise _fail(exc) from None
    if report.already_running and not report.started:
        _out.print("already running: nothing to do")
    else:
        if report.already_running:
            _out.print(f"already running: {', '.join(report.already_running)}")
        _out.print(f"started: {', '.join(report.started)} in {report.elapsed_s:.1f} s")
    _print_status(report.status)
    _out.print(
        f"MESH_KAFKA_BOOTSTRAP={services.kafka_bootstrap} MESH_REDIS_URL={services.redis_url}"
    )
    _ensure_dev_operator_key()
    for wanted, ha in ((redis_cluster, LocalRedisCluster), (redis_sentinel, LocalRedisSentinel)):
        if wanted:
            _redis_ha_up(ha(services.config))
    if llm:
        _llm_up(LocalLlm(services.config))


def _redis_ha_up(ha: LocalRedisCluster | LocalRedisSentinel) -> None:
    kind = "redis cluster" if isinstance(ha, LocalRedisCluster) else "redis sentinel set"
    _progress(f"starting {kind} ({', '.join(str(n.port) for n in ha.nodes)})")
    try:
        started = ha.up()
    except (DevServiceError, DevInstallError) as exc:
        raise _fail(exc) from None
    _out.print(f"{kind} {'started' if started else 'already running'}")
    _out.print(" ".join(f"{k}={v}" for k, v in ha.env().items()), markup=False)


def _ensure_dev_operator_key() -> None:
    # Dev convenience: agents of this state dir can read it, so they certify their own keys.
    from mesh.security import ensure_operator_key, operator_key_path
    from mesh.settings import MeshSettings

    path = operator_key_path(MeshSettings().state_dir)
    _, created = ensure_operator_key(path)
    if created:
        _out.print(f"dev operator key created: {path} (agents here certify their own keys; dev only)")


@app.command()
def down(state_dir: StateDirOpt = None) -> None:
    """Stop the services `mesh dev up` started (anything else is left alone)."""
    services = _services(state_dir)
    holders = sorted({pid for name in ("redis", "kafka") for pid in services.lease_holders(name)})
    if holders:
        # Stopping anyway is the user's call; say whom it will hurt.
        _out.print(
            f"warning: test sessions still use these services (pids {', '.join(map(str, holders))})",
            style="yellow",
            markup=False,
        )
    try:
        report = services.down()
    except DevServiceError as exc:
        raise _fail(exc) from None
    if LocalLlm(services.config).down():
        report = dataclasses.replace(report, stopped=(*report.stopped, "llm"))
    for ha in (LocalRedisCluster(services.config), LocalRedisSentinel(services.config)):
        if ha.root.exists() and ha.down():
            report = dataclasses.replace(report, stopped=(*report.stopped, ha.root.name))
    if report.stopped:
        _out.print(f"stopped: {', '.join(report.stopped)} in {report.elapsed_s:.1f} s")
    else:
        _out.print("nothing was running")


@app.command()
def status(
    state_dir: StateDirOpt = None,
    kafka_port: KafkaPortOpt = None,
    kafka_controller_port: ControllerPortOpt = None,
    redis_port: RedisPortOpt = None,
    kafka_nodes: KafkaNodesOpt = None,
) -> None:
    """Print each service, its pid, address and log file; exit 1 unless all run."""
    services = _services(state_dir, kafka_port, kafka_controller_port, redis_port, kafka_nodes=kafka_nodes)
    current = services.status()
    _print_status(current)
    if not current.all_running:
        raise typer.Exit(1)


@app.command()
def logs(
    service: Annotated[str, typer.Argument(help="kafka, kafka-<k> (node k of a cluster) or redis")],
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many lines.")] = 40,
    state_dir: StateDirOpt = None,
) -> None:
    """Print the last lines of a service's log."""
    node = service[6:] if service.startswith("kafka-") else ""
    services = _services(state_dir, kafka_nodes=max(2, int(node)) if node.isdigit() and int(node) <= 9 else None)
    if service not in ("kafka", "redis") and not (node.isdigit() and 1 <= int(node) <= 9):
        _err.print("service must be kafka, kafka-<k> or redis")
        raise typer.Exit(2)
    target = services.redis if service == "redis" else services.kafka_node(int(node or 1))
    _out.print(f"[dim]{target.log_path}[/dim]")
    _out.print(log_tail(target.log_path, lines), markup=False)


# -- the local model (mesh/dev/_llm.py) ------------------------------------------------------------


def _llm_up(local: LocalLlm) -> None:
    try:
        report = local.up(progress=_progress)
    except (DevServiceError, DevInstallError) as exc:
        raise _fail(exc) from None
    how = "started" if report.started else "already running"
    _out.print(f"llm {how}: {report.model} on {report.base_url} ({report.elapsed_s:.1f} s)")
    # Ready to paste into a shell; the prefill ends in a newline, which only $'...' can carry
    # (repr() in '...' would hand the agents a literal backslash-n).
    for name, value in local.env().items():
        _out.print(f"export {name}={_shell_quote(value)}", markup=False)


def _shell_quote(value: str) -> str:
    if "\n" not in value:
        return shlex.quote(value)
    return "$'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


@app.command()
def llm(
    state_dir: StateDirOpt = None,
    port: Annotated[int | None, typer.Option("--port", help="Server port [env MESH_DEV_LLM_PORT; 18080].")] = None,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the local model server instead.")] = False,
) -> None:
    """Build (once, cached) and start llama-server with the pinned model; print ANTHROPIC_BASE_URL."""
    from mesh.dev._llm import LlmConfig

    services = _services(state_dir)
    local = LocalLlm(services.config, LlmConfig(port=port) if port is not None else None)
    if stop:
        _out.print("stopped llm" if local.down() else "llm was not running")
        return
    _llm_up(local)
