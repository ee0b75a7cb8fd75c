"""CLI commands of the runtime: ``mesh agent run``, ``submit``, ``status``, ``watch``, ``resume``, ``reject``."""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import re
import stat
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from mesh.errors import (
    BusError,
    BusUnavailable,
    MeshError,
    StoreError,
    StoreUnavailable,
    UsageError,
)
from mesh.runtime.agent import AgentConfig, run_agent
from mesh.runtime.client import MeshClient
from mesh.runtime.options import RuntimeOptions
from mesh.runtime.view import WorkflowView, run_summary
from mesh.runtime.worker import WorkerOptions
from mesh.security import redact_text
from mesh.settings import MeshSettings
from mesh.store import RunSummary
from mesh.store.blob import blob_store_from_settings
from mesh.store.retention import SweepResult
from mesh.store.s3 import S3Unavailable
from protocols import WorkflowSpec, WorkflowSpecError

__all__ = ["agent_app", "error_line", "exit_code_of", "load_spec_file", "one_line", "register"]

out = Console()
T = TypeVar("T")

agent_app = typer.Typer(no_args_is_help=True, help="Run agent processes.")

# Exit codes of every command (README "Exit codes").
EXIT_NOT_FOUND = 1
"""Unknown workflow or step, nothing to resume, or a watch that ended before the workflow did."""
EXIT_USAGE = 2
"""Bad input: arguments, options, spec files, variables."""
EXIT_UNAVAILABLE = 3
"""Kafka or Redis unreachable."""
EXIT_RUNTIME = 4
"""Any other error the mesh reported."""
EXIT_INTERNAL = 70
"""A bug: an exception the CLI did not expect (one line; ``MESH_DEBUG=1`` shows the traceback)."""

_MAX_LINE = 400


def one_line(text: str) -> str:
    """``text`` on one printable line: controls escaped, whitespace folded, length capped."""
    cleaned = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" if ord(ch) < 256 else "?" for ch in
                      " ".join(str(text).split()))
    return cleaned if len(cleaned) <= _MAX_LINE else cleaned[: _MAX_LINE - 3] + "..."


def error_line(where: str, message: str) -> None:
    """Print ``mesh <where>: error: <message>`` as exactly one line on stderr."""
    prefix = f"mesh {where}" if where else "mesh"
    sys.stderr.write(f"{prefix}: error: {one_line(redact_text(message))}\n")
    sys.stderr.flush()


def warning_line(where: str, message: str) -> None:
    """Print ``mesh <where>: warning: <message>`` as one line on stderr."""
    sys.stderr.write(f"mesh {where}: warning: {one_line(redact_text(message))}\n")
    sys.stderr.flush()


def exit_code_of(exc: MeshError) -> int:
    """How a mesh error maps to an exit code."""
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if isinstance(exc, BusUnavailable | StoreUnavailable):
        return EXIT_UNAVAILABLE
    return EXIT_RUNTIME


def _run(coro: Awaitable[T], where: str = "") -> T:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except MeshError as exc:
        error_line(where, redact_text(_explain(exc)))
        raise typer.Exit(exit_code_of(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _explain(exc: MeshError) -> str:
    text = str(exc)
    if isinstance(exc, BusUnavailable):
        return f"Kafka unreachable at {MeshSettings().kafka_bootstrap} (MESH_KAFKA_BOOTSTRAP): {text}"
    if isinstance(exc, StoreUnavailable) and not isinstance(exc, S3Unavailable):
        return f"Redis unreachable at {_redacted_url(MeshSettings().redis_url)} (MESH_REDIS_URL): {text}"
    return text


def _redacted_url(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@asynccontextmanager
async def _client(settings: MeshSettings, *, read_only: bool = False) -> AsyncIterator[MeshClient]:
    # aiokafka logs connection trouble (with tracebacks) itself, and the bus's outage log sums it up
    # for long-running agents; the CLI says it once, in one line.
    for name in ("aiokafka", "kafka", "mesh.bus.kafka"):
        quiet = logging.getLogger(name)
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
    client = await MeshClient.connect(settings, read_only=read_only)
    try:
        yield client
    finally:
        await client.aclose()


@agent_app.command("run")
def agent_run(
    role: Annotated[str, typer.Option("--role", "-r", help="Role to serve (identity, fetch, validate, report, ...).")],
    agent_id: Annotated[str, typer.Option(help="Agent id (default: <role>-<host>-<pid>).")] = "",
    roles_module: Annotated[str, typer.Option(
        help="Python module with a ROLES mapping (default: the one registered under the agent_mesh.roles entry point group).",
    )] = "",
    turn_delay_s: Annotated[float, typer.Option(help="Pause after each turn, in seconds (demos).")] = 0.0,
    session_timeout_ms: Annotated[int, typer.Option(help="Consumer-group session timeout; bounds failover time.")] = 2500,
    heartbeat_interval_ms: Annotated[int, typer.Option(help="Consumer-group heartbeat interval.")] = 500,
    group_instance_id: Annotated[str, typer.Option(
        envvar="MESH_GROUP_INSTANCE_ID",
        help="Stable member id (static membership; the pod name): a restart within the session timeout moves no partition.",
    )] = "",
    drain_timeout_s: Annotated[float, typer.Option(
        envvar="MESH_DRAIN_TIMEOUT_S", help="On SIGTERM, seconds a turn in flight may take to finish and checkpoint.",
    )] = 20.0,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
) -> None:
    """Run one agent process of ROLE until SIGTERM or Ctrl-C."""
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mesh.telemetry import install_log_redaction

    install_log_redaction()
    settings = MeshSettings()
    config = AgentConfig(
        role=role, agent_id=agent_id, roles_module=roles_module,
        runtime=RuntimeOptions(
            turn_delay_s=turn_delay_s,
            history_window=settings.history_window, history_segment=settings.history_window,
            decay_idle_turns=settings.decay_idle_turns,
        ),
        worker=WorkerOptions(
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            heartbeat_file=os.environ.get("MESH_HEARTBEAT_FILE", ""),
            group_instance_id=group_instance_id,
            drain_timeout_s=drain_timeout_s,
            finished_ttl_s=settings.finished_ttl_s,
        ),
    )

    def ready(worker: Any) -> None:
        print(f"agent {worker.agent_id} ready (role {worker.role}, group {worker.group})", flush=True)

    _run(run_agent(config, settings, on_ready=ready), "agent run")


class InputError(UsageError):
    """A user mistake the CLI found before talking to any service (one line: what and where)."""


_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")


def _parse_vars(values: list[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for i, item in enumerate(values, 1):
        name, eq, raw = item.partition("=")
        if not eq or not name:
            raise InputError(f"--var #{i}: expected NAME=VALUE, got {item!r}")
        if not _VAR_NAME.match(name):
            raise InputError(f"--var #{i}: {name!r} is not a variable name (letters, digits, _ . -; not a digit first)")
        try:
            parsed[name] = json.loads(raw)
        except (ValueError, RecursionError):
            parsed[name] = raw
    return parsed


MAX_SPEC_BYTES = 4 * 1024 * 1024
"""Largest spec file ``submit`` reads (``MESH_MAX_SPEC_BYTES`` overrides)."""

MAX_SPEC_VALUES = 200_000
"""Most values (after YAML aliases are expanded) a spec may hold: stops "billion laughs" files."""


def load_spec_file(path: Path) -> WorkflowSpec:
    """Read and check a spec file; every problem is an ``InputError`` naming the file (and line)."""
    limit = int(os.environ.get("MESH_MAX_SPEC_BYTES", MAX_SPEC_BYTES))
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{path}: is a directory, not a workflow spec")
        if st.st_size > limit:
            raise InputError(f"{path}: {st.st_size} bytes, over the {limit}-byte limit for a spec (MESH_MAX_SPEC_BYTES)")
        with path.open("rb") as fh:
            raw = fh.read(limit + 1)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > limit:
        raise InputError(f"{path}: over the {limit}-byte limit for a spec (MESH_MAX_SPEC_BYTES)")
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise InputError(f"{path}: binary file (NUL byte at offset {nul}), not a YAML or JSON spec")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    try:
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
        else:
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
                problem = getattr(exc, "problem", None) or str(exc)
                raise InputError(f"{where}: invalid YAML: {problem}") from None
            except ValueError as exc:  # e.g. a timestamp or number yaml cannot build
                raise InputError(f"{path}: invalid YAML value: {exc}") from None
    except RecursionError:
        raise InputError(f"{path}: nested too deeply to parse") from None
    _check_shape(path, data)
    if not isinstance(data, dict):
        raise InputError(f"{path}: a workflow spec must be a mapping, got {type(data).__name__}")
    try:
        return WorkflowSpec.parse(data, source=str(path))
    except WorkflowSpecError as exc:
        raise InputError(f"invalid workflow: {exc}") from None
    except RecursionError:
        raise InputError(f"invalid workflow: {path}: too deep or too long a dependency chain to check") from None
    except (ValueError, TypeError) as exc:
        raise InputError(f"invalid workflow: {path}: {type(exc).__name__}: {exc}") from None


def _check_shape(path: Path, data: Any) -> None:
    """Refuse cyclic data (YAML anchors that contain themselves) and alias bombs, iteratively."""
    seen = 0
    on_path: set[int] = set()
    stack: list[tuple[Any, Any]] = []

    def enter(value: Any) -> None:
        nonlocal seen
        seen += 1
        if seen > MAX_SPEC_VALUES:
            raise InputError(f"{path}: over {MAX_SPEC_VALUES} values once YAML aliases are expanded")
        if isinstance(value, dict | list):
            if id(value) in on_path:
                raise InputError(f"{path}: cyclic spec (a YAML anchor refers to itself)")
            on_path.add(id(value))
            children = iter(list(value.keys()) + list(value.values()) if isinstance(value, dict) else value)
            stack.append((value, children))

    enter(data)
    while stack:
        value, children = stack[-1]
        child = next(children, _END)
        if child is _END:
            stack.pop()
            on_path.discard(id(value))
        else:
            enter(child)


_END = object()


def submit(
    file: Annotated[Path, typer.Argument(help="Workflow spec, YAML or JSON.")],
    workflow_id: Annotated[str, typer.Option(help="Workflow id (default: <name>-<random>).")] = "",
    var: Annotated[list[str], typer.Option("--var", help="Override a variable: NAME=VALUE (JSON or text).")] = [],  # noqa: B006
    watch: Annotated[bool, typer.Option("--watch", help="Follow progress until it finishes.")] = False,
    check_roles: Annotated[bool, typer.Option(help="Warn when no agent serves a role the spec needs.")] = True,
) -> None:
    """Submit a workflow; prints its id."""
    spec = load_spec_file(file)
    variables = _parse_vars(var)
    if workflow_id and not _WORKFLOW_ID.match(workflow_id):
        raise InputError(f"--workflow-id: {workflow_id!r} is not a workflow id (1-200 of letters, digits, _ . : -)")

    async def go() -> str:
        async with _client(MeshSettings()) as client:
            if check_roles:
                await _warn_unserved_roles(client, sorted({s.role for s in spec.steps}))
            wf = await client.submit(spec, workflow_id=workflow_id or None, variables=variables)
            out.print(wf)
            if watch:
                await _watch(client, wf, timeout_s=None)
            return wf

    _run(go(), "submit")


_WORKFLOW_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


async def _warn_unserved_roles(client: MeshClient, roles: list[str]) -> None:
    try:
        members = await client.role_members(roles)
    except BusError as exc:
        warning_line("submit", f"cannot tell which roles are served: {exc}")
        return
    idle = [r for r in roles if members.get(r, 0) == 0]
    if idle:
        groups = ", ".join(f"{client.topics.prefix}.role.{r}" for r in idle)
        warning_line(
            "submit",
            f"no agent is serving role(s) {', '.join(idle)} (consumer group(s) {groups} have no members); "
            "the workflow waits until one starts (mesh agent run --role ROLE)",
        )


_COLORS = {"completed": "green", "failed": "red", "paused": "yellow", "running": "cyan", "succeeded": "green"}


def render(run: RunSummary | WorkflowView) -> Table:
    """A table of the workflow's steps."""
    if isinstance(run, WorkflowView):
        run = run_summary(run)
    title = f"{run.workflow_id}: {run.status}" + (f"  trace {run.trace_id}" if run.trace_id else "")
    table = Table(title=title, title_justify="left")
    for col in ("step", "role", "status", "owner", "epoch", "turns", "resumes", "last"):
        table.add_column(col)
    if not run.steps:
        table.add_row("?", "", "not submitted (or not yet seen)", "", "", "", "", "")
    for step in run.steps:
        color = _COLORS.get(step.status, "white")
        table.add_row(
            escape(step.id), escape(step.role), f"[{color}]{step.status}[/{color}]", escape(step.owner),
            str(step.epoch or ""), str(step.turns), str(step.resumes), escape(redact_text(step.last)[:70]),
        )
    return table


async def _watch(client: MeshClient, wf: str, *, timeout_s: float | None) -> WorkflowView:
    view = WorkflowView(wf)
    with Live(render(view), console=out, refresh_per_second=8) as live:
        async for view, _ in client.follow(wf, timeout_s=timeout_s):
            live.update(render(view))
    return view


def _unknown(wf: str) -> str:
    return f"workflow {wf!r} is unknown (not in the run index, not in the workflow log)"


def _summary_json(wf: str, run: RunSummary | None, source: str) -> str:
    if run is None:
        return json.dumps({"workflow_id": wf, "status": "unknown", "known": False})
    doc = json.loads(run.to_json())
    doc.pop("v", None)
    doc["known"] = True
    doc["source"] = source
    doc["step_details"] = doc.pop("steps")
    doc["steps"] = {s.id: s.status for s in run.steps}
    return json.dumps(doc)


def status(
    workflow_id: Annotated[str, typer.Argument(help="Workflow id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    read_s: Annotated[float, typer.Option(help="Without the index: seconds of log quiet that end the replay.")] = 3.0,
) -> None:
    """Show a workflow's steps: from the run index (one key), else by replaying the log."""

    async def go() -> None:
        async with _client(MeshSettings(), read_only=True) as client:
            run, source = await client.summary(workflow_id, read_s=read_s)
        from mesh.telemetry import workflow_trace_id

        # One trace per workflow; its id is derived from the workflow id when the index has none.
        trace_id = (run.trace_id if run is not None else "") or format(workflow_trace_id(workflow_id), "032x")
        if as_json:
            doc = json.loads(_summary_json(workflow_id, run, source))
            if run is not None:
                doc["trace_id"] = trace_id
            out.print(json.dumps(doc), soft_wrap=True, markup=False, highlight=False)
        elif run is not None:
            out.print(render(run))
            out.print(f"trace id: {trace_id}")
        if run is None:
            error_line("status", _unknown(workflow_id))
            raise typer.Exit(EXIT_NOT_FOUND)

    _run(go(), "status")


def watch(
    workflow_id: Annotated[str, typer.Argument(help="Workflow id.")],
    timeout_s: Annotated[float, typer.Option(help="Give up after this many seconds (0 = never).")] = 0,
    poll_s: Annotated[float, typer.Option(help="Seconds between reads of the run index.")] = 0.5,
) -> None:
    """Follow a workflow live until it finishes (the run index when there, else the log)."""

    async def go() -> None:
        deadline = None if not timeout_s else time.monotonic() + timeout_s
        async with _client(MeshSettings(), read_only=True) as client:
            run, source = await client.summary(workflow_id)
            if run is None:
                error_line("watch", _unknown(workflow_id))
                raise typer.Exit(EXIT_NOT_FOUND)
            if source == "index":
                with Live(render(run), console=out, refresh_per_second=8) as live:
                    while not run.finished and (deadline is None or time.monotonic() < deadline):
                        await asyncio.sleep(poll_s)
                        latest = await client.indexed(workflow_id)
                        if latest is None:  # Redis went away or the entry expired: the log has it all
                            break
                        run = latest
                        live.update(render(run))
                if run.finished:
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    raise typer.Exit(EXIT_NOT_FOUND)
            left = None if deadline is None else max(deadline - time.monotonic(), 0.1)
            view = await _watch(client, workflow_id, timeout_s=left)
        if view.finished is None:
            raise typer.Exit(EXIT_NOT_FOUND)

    _run(go(), "watch")


def _decide(
    workflow_id: str, step_id: str, decision: str, *, note: str, operator: str, variables: dict[str, Any], where: str
) -> str:
    """Publish a decision on the step's current pause (nonce from the run index, else the log)."""

    async def go() -> str:
        async with _client(MeshSettings()) as client:
            run, _ = await client.summary(workflow_id)
            if run is None:
                error_line(where, _unknown(workflow_id))
                raise typer.Exit(EXIT_NOT_FOUND)
            step = next((s for s in run.steps if s.id == step_id), None)
            if step is None:
                known = ", ".join(s.id for s in run.steps)
                error_line(where, f"workflow {workflow_id!r} has no step {step_id!r} (its steps: {known})")
                raise typer.Exit(EXIT_NOT_FOUND)
            pause = await client.current_pause(workflow_id, step_id)
            if pause is None:
                error_line(where, f"step {step_id!r} of {workflow_id!r} is {step.status}, not paused: nothing to decide")
                raise typer.Exit(EXIT_NOT_FOUND)
            await client.decide_escalation(
                workflow_id, step_id, nonce=pause.nonce, decision=decision,  # type: ignore[arg-type]
                operator=operator or getpass.getuser(), note=note, variables=variables or None,
            )
            return pause.kind

    return _run(go(), where)


def resume(
    workflow_id: Annotated[str, typer.Argument(help="Workflow id.")],
    step_id: Annotated[str, typer.Argument(help="The paused step.")],
    note: Annotated[str, typer.Option(help="Why it may continue (kept in the log).")] = "",
    operator: Annotated[str, typer.Option(help="Who decides (default: your login name).")] = "",
    set_vars: Annotated[
        list[str] | None,
        typer.Option("--set", help="NAME=VALUE (JSON or text) to change before resuming (an edit); repeatable."),
    ] = None,
) -> None:
    """Let a paused (escalated) step continue from its last checkpoint: a signed decision on its current pause."""
    variables = _parse_vars(list(set_vars or []))
    kind = _decide(workflow_id, step_id, "edit" if variables else "resume", note=note, operator=operator,
                   variables=variables, where="resume")
    out.print(f"resume requested for {workflow_id}/{step_id} (paused: {kind})")


def reject(
    workflow_id: Annotated[str, typer.Argument(help="Workflow id.")],
    step_id: Annotated[str, typer.Argument(help="The paused step.")],
    note: Annotated[str, typer.Option(help="Why it is rejected (kept in the log).")] = "",
    operator: Annotated[str, typer.Option(help="Who decides (default: your login name).")] = "",
) -> None:
    """Fail a paused (escalated) step, and so its workflow: a signed decision on its current pause."""
    kind = _decide(workflow_id, step_id, "reject", note=note, operator=operator, variables={}, where="reject")
    out.print(f"rejected {workflow_id}/{step_id} (paused: {kind}); the step fails")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration_s(text: str, *, option: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``7d``, ``1w`` in seconds; ``InputError`` otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise InputError(f"{option}: {text!r} is not a duration (e.g. 90s, 15m, 2h, 7d)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


_STATUSES = ("pending", "running", "paused", "succeeded", "failed")


def runs(
    status_filter: Annotated[str, typer.Option("--status", help="Only runs in this status: " + ", ".join(_STATUSES) + ".")] = "",
    since: Annotated[str, typer.Option(help="Only runs updated within this long (90s, 15m, 2h, 7d).")] = "",
    name: Annotated[str, typer.Option(help="Only runs whose spec name or id contains this.")] = "",
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of a table.")] = False,
    read_s: Annotated[float, typer.Option(help="Without the index: seconds of log quiet that end the replay.")] = 3.0,
) -> None:
    """List recent workflows from the run index (or, without Redis, from the log)."""
    if status_filter and status_filter not in _STATUSES:
        raise InputError(f"--status: {status_filter!r} is not one of {', '.join(_STATUSES)}")
    if limit < 0 or limit > 100_000:
        raise InputError(f"--limit: {limit} is out of range (0..100000)")
    since_ms = int((time.time() - parse_duration_s(since, option="--since")) * 1000) if since else 0

    async def go() -> list[RunSummary]:
        async with _client(MeshSettings(), read_only=True) as client:
            if client.index is not None:
                try:
                    return list(await client.index.list(
                        status=status_filter or None, name=name or None, updated_since_ms=since_ms, limit=limit,
                    ))
                except StoreError as exc:
                    warning_line("runs", f"run index unavailable ({exc}); listing from the workflow log")
            views = await client.scan(read_s=read_s)
        found = [run_summary(v) for v in views.values() if v.spec is not None]
        found = [
            r for r in found
            if (not status_filter or r.status == status_filter)
            and (not name or name in r.name or name in r.workflow_id)
            and r.updated_ms >= since_ms
        ]
        found.sort(key=lambda r: (r.updated_ms, r.workflow_id), reverse=True)
        return found[:limit]

    found = _run(go(), "runs")
    if as_json:
        for run in found:
            out.print(_summary_json(run.workflow_id, run, "index"), soft_wrap=True, markup=False, highlight=False)
        return
    table = Table(title=f"{len(found)} run(s)", title_justify="left")
    for col in ("workflow", "name", "status", "steps done", "updated", "trace"):
        table.add_column(col)
    for run in found:
        done = sum(1 for s in run.steps if s.status == "completed")
        updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.updated_ms / 1000)) if run.updated_ms else ""
        table.add_row(escape(run.workflow_id), escape(run.name), f"[{_COLORS.get(run.status, 'white')}]{run.status}[/]",
                      f"{done}/{len(run.steps)}", updated, run.trace_id[:16])
    out.print(table)


def gc(
    blobs_older_than: Annotated[str, typer.Option(help="Delete blob copies older than this (default MESH_BLOB_RETENTION_S).")] = "",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")] = False,
) -> None:
    """Apply the blob retention policy: delete checkpoint blob copies older than the age given."""
    settings = MeshSettings()
    age = parse_duration_s(blobs_older_than, option="--blobs-older-than") if blobs_older_than else settings.blob_retention_s
    if age <= 0:
        out.print("blob retention is 0 (keep forever): nothing to do")
        return

    async def go() -> SweepResult:
        blobs = blob_store_from_settings(settings)
        try:
            return await blobs.delete_older_than(age, dry_run=dry_run)
        finally:
            await blobs.aclose()

    result = _run(go(), "gc")
    verb = "would delete" if dry_run else "deleted"
    out.print(f"{verb} {result.deleted} blob(s) ({result.bytes_freed} bytes) older than {age:.0f} s "
              f"from the {settings.blob_backend} blob store; kept {result.kept}", markup=False, highlight=False)


def turns(
    workflow_id: Annotated[str, typer.Argument(help="Workflow id.")],
    step_id: Annotated[str, typer.Argument(help="Step id.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per turn instead of a table.")] = False,
    last: Annotated[int, typer.Option(help="Only the last N turns (0: all).")] = 0,
) -> None:
    """Show a step's whole turn history: the archived turns from the blob store, then the checkpoint's."""
    from mesh.runtime.history import read_history
    from mesh.runtime.state import StepState
    from mesh.store import RedisConnection, RedisStateStore, step_key

    settings = MeshSettings()

    async def go() -> tuple[StepState, list[Any]]:
        store = RedisStateStore.connect(RedisConnection.from_settings(settings), key_prefix=f"{settings.topic_prefix}:")
        blobs = blob_store_from_settings(settings)
        try:
            ckpt = await store.read(step_key(workflow_id, step_id))
            state = StepState.from_bytes(ckpt.data)
            return state, await read_history(state, blobs)
        finally:
            await store.aclose()
            await blobs.aclose()

    state, records = _run(go(), "turns")
    if last > 0:
        records = records[-last:]
    secrets = state.secret_values()
    if as_json:
        for rec in records:
            doc = {"turn": rec.turn, "action": rec.action, "outcome": rec.outcome,
                   "summary": redact_text(rec.summary, secrets), "params": rec.params,
                   "injected": rec.injected, "repairs": rec.repairs, "retries": rec.retries,
                   "duration_ms": round(rec.duration_ms, 3)}
            out.print(redact_text(json.dumps(doc, default=str), secrets), soft_wrap=True, markup=False, highlight=False)
        return
    digest = state.archive
    where = f"archived: turns 1..{digest.through} in {digest.segments} segment(s)" if digest.turns else "none archived"
    out.print(f"{workflow_id}/{step_id}: {state.status}, {state.turn} turn(s); {where}; "
              f"{len(state.history)} in the checkpoint", markup=False, highlight=False)
    table = Table(box=None)
    for col in ("turn", "action", "outcome", "summary"):
        table.add_column(col)
    for rec in records:
        table.add_row(str(rec.turn), escape(rec.action), rec.outcome, escape(redact_text(rec.summary, secrets)[:100]))
    out.print(table)


def register(app: typer.Typer, *, extra: dict[str, Callable[..., Any]] | None = None) -> None:
    """Add the runtime's commands to the ``mesh`` app."""
    app.add_typer(agent_app, name="agent", help="Run agent processes.")
    app.command("submit")(submit)
    app.command("status")(status)
    app.command("watch")(watch)
    app.command("resume")(resume)
    app.command("reject")(reject)
    app.command("runs")(runs)
    app.command("gc")(gc)
    app.command("turns")(turns)
