"""CLI commands of the runtime: ``mesh agent run``, ``submit``, ``status``, ``watch``, ``resume``."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from mesh.errors import MeshError
from mesh.runtime.agent import AgentConfig, run_agent
from mesh.runtime.client import MeshClient
from mesh.runtime.options import RuntimeOptions
from mesh.runtime.view import WorkflowView
from mesh.runtime.worker import WorkerOptions
from mesh.security import redact_text
from mesh.settings import MeshSettings
from protocols import WorkflowSpecError, load_workflow_spec

__all__ = ["agent_app", "register"]

console = Console(stderr=True)
out = Console()
T = TypeVar("T")

agent_app = typer.Typer(no_args_is_help=True, help="Run agent processes.")


def _run(coro: Awaitable[T]) -> T:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except MeshError as exc:
        console.print(f"[red]error:[/red] {redact_text(str(exc))}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@asynccontextmanager
async def _client(settings: MeshSettings) -> AsyncIterator[MeshClient]:
    client = await MeshClient.connect(settings)
    try:
        yield client
    finally:
        await client.aclose()


@agent_app.command("run")
def agent_run(
    role: Annotated[str, typer.Option("--role", "-r", help="Role to serve (identity, fetch, validate, report, ...).")],
    agent_id: Annotated[str, typer.Option(help="Agent id (default: <role>-<host>-<pid>).")] = "",
    roles_module: Annotated[str, typer.Option(help="Python module with a ROLES mapping.")] = "agents.roles",
    turn_delay_s: Annotated[float, typer.Option(help="Pause after each turn, in seconds (demos).")] = 0.0,
    session_timeout_ms: Annotated[int, typer.Option(help="Consumer-group session timeout; bounds failover time.")] = 2500,
    heartbeat_interval_ms: Annotated[int, typer.Option(help="Consumer-group heartbeat interval.")] = 500,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
) -> None:
    """Run one agent process of ROLE until SIGTERM or Ctrl-C."""
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mesh.telemetry import install_log_redaction

    install_log_redaction()
    config = AgentConfig(
        role=role, agent_id=agent_id, roles_module=roles_module,
        runtime=RuntimeOptions(turn_delay_s=turn_delay_s),
        worker=WorkerOptions(
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            heartbeat_file=os.environ.get("MESH_HEARTBEAT_FILE", ""),
        ),
    )

    def ready(worker: Any) -> None:
        print(f"agent {worker.agent_id} ready (role {worker.role}, group {worker.group})", flush=True)

    _run(run_agent(config, MeshSettings(), on_ready=ready))


def _parse_vars(values: list[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for item in values:
        name, eq, raw = item.partition("=")
        if not eq or not name:
            raise typer.BadParameter(f"--var expects NAME=VALUE, got {item!r}")
        try:
            parsed[name] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[name] = raw
    return parsed


def submit(
    file: Annotated[Path, typer.Argument(help="Workflow spec, YAML or JSON.")],
    workflow_id: Annotated[str, typer.Option(help="Workflow id (default: <name>-<random>).")] = "",
    var: Annotated[list[str], typer.Option("--var", help="Override a variable: NAME=VALUE (JSON or text).")] = [],  # noqa: B006
    watch: Annotated[bool, typer.Option("--watch", help="Follow progress until it finishes.")] = False,
) -> None:
    """Submit a workflow; prints its id."""
    try:
        spec = load_workflow_spec(file)
    except WorkflowSpecError as exc:
        console.print(f"[red]invalid workflow:[/red] {exc}")
        raise typer.Exit(2) from None
    variables = _parse_vars(var)

    async def go() -> str:
        async with _client(MeshSettings()) as client:
            wf = await client.submit(spec, workflow_id=workflow_id or None, variables=variables)
            out.print(wf)
            if watch:
                await _watch(client, wf, timeout_s=None)
            return wf

    _run(go())


def render(view: WorkflowView) -> Table:
    """A table of the workflow's steps."""
    table = Table(title=f"{view.workflow_id}: {view.status}", title_justify="left")
    for col in ("step", "role", "status", "owner", "turns", "resumes", "last"):
        table.add_column(col)
    if view.spec is None:
        table.add_row("?", "", "not submitted (or not yet seen)", "", "", "", "")
        return table
    for step in view.spec.steps:
        starts = view.started.get(step.id, [])
        owner = starts[-1].owner if starts else ""
        done = view.completed.get(step.id)
        turns = done.turns if done else view.turns_seen.get(step.id, 0)
        resumes = sum(1 for s in starts if s.resumed_from_turn > 0)
        prog = view.progress.get(step.id)
        last = ""
        if step.id in view.escalated:
            last = view.escalated[step.id].reason
        elif step.id in view.failed:
            last = view.failed[step.id].error
        elif prog is not None:
            last = f"{prog.action}: {prog.detail}"
        status = view.status_of(step.id)
        color = {"completed": "green", "failed": "red", "paused": "yellow", "running": "cyan"}.get(status, "white")
        table.add_row(step.id, step.role, f"[{color}]{status}[/{color}]", owner, str(turns), str(resumes), redact_text(last)[:70])
    return table


async def _watch(client: MeshClient, wf: str, *, timeout_s: float | None) -> WorkflowView:
    view = WorkflowView(wf)
    with Live(render(view), console=out, refresh_per_second=8) as live:
        async for view, _ in client.follow(wf, timeout_s=timeout_s):
            live.update(render(view))
    return view


def status(
    workflow_id: Annotated[str, typer.Argument(help="Workflow id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show a workflow's steps as the event log tells them."""

    async def go() -> None:
        async with _client(MeshSettings()) as client:
            view = await client.status(workflow_id)
        if as_json:
            out.print_json(json.dumps({
                "workflow_id": workflow_id, "status": view.status,
                "steps": {s.id: view.status_of(s.id) for s in (view.spec.steps if view.spec else ())},
            }))
        else:
            out.print(render(view))
        if view.spec is None:
            raise typer.Exit(1)

    _run(go())


def watch(
    workflow_id: Annotated[str, typer.Argument(help="Workflow id.")],
    timeout_s: Annotated[float, typer.Option(help="Give up after this many seconds (0 = never).")] = 0,
) -> None:
    """Follow a workflow live until it finishes."""

    async def go() -> None:
        async with _client(MeshSettings()) as client:
            view = await _watch(client, workflow_id, timeout_s=timeout_s or None)
        if view.finished is None:
            raise typer.Exit(1)

    _run(go())


def resume(
    workflow_id: Annotated[str, typer.Argument(help="Workflow id.")],
    step_id: Annotated[str, typer.Argument(help="The paused step.")],
    note: Annotated[str, typer.Option(help="Why it may continue (kept in the log).")] = "",
) -> None:
    """Let a paused (escalated) step continue from its last checkpoint."""

    async def go() -> None:
        async with _client(MeshSettings()) as client:
            await client.resume(workflow_id, step_id, note=note)
        out.print(f"resume requested for {workflow_id}/{step_id}")

    _run(go())


def register(app: typer.Typer, *, extra: dict[str, Callable[..., Any]] | None = None) -> None:
    """Add the runtime's commands to the ``mesh`` app."""
    app.add_typer(agent_app, name="agent", help="Run agent processes.")
    app.command("submit")(submit)
    app.command("status")(status)
    app.command("watch")(watch)
    app.command("resume")(resume)
