"""``mesh ingress`` (task events in, workflows out) and ``mesh schema`` (the contracts it checks)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mesh.errors import MeshError

__all__ = ["ingress", "schema_app"]

schema_app = typer.Typer(no_args_is_help=True, help="Print the JSON Schemas of what the mesh accepts from outside.")


@schema_app.command("task-event")
def schema_task_event(
    compact: Annotated[bool, typer.Option("--compact", help="One line instead of indented JSON.")] = False,
) -> None:
    """The JSON Schema (2020-12) of a task event (CloudEvents 1.0, structured JSON mode)."""
    from protocols import task_event_schema

    print(json.dumps(task_event_schema(), indent=None if compact else 2, sort_keys=False))


def ingress(
    ingress_id: Annotated[str, typer.Option(help="Agent id and signing identity (default: ingress-<host>-<pid>).")] = "",
    workflows_dir: Annotated[
        Path | None,
        typer.Option(help="Specs a task event may name (default: MESH_INGRESS_WORKFLOWS_DIR or agents/workflows)."),
    ] = None,
    dedupe_ttl_s: Annotated[int, typer.Option(min=1, help="How long an event's source+id is remembered, in seconds.")] = 7 * 24 * 3600,
    max_event_bytes: Annotated[int, typer.Option(min=1024, help="Larger events are dead-lettered as oversize.")] = 1_048_576,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
) -> None:
    """Read task events from <prefix>.tasks and submit the workflows they ask for (signed)."""
    from mesh.ingress._service import IngressOptions, default_workflows_dir, run_ingress
    from mesh.settings import MeshSettings
    from mesh.telemetry import install_log_redaction

    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    options = IngressOptions(
        ingress_id=ingress_id, workflows_dir=workflows_dir or default_workflows_dir(),
        dedupe_ttl_s=dedupe_ttl_s, max_event_bytes=max_event_bytes,
    )

    def ready(ing: Any) -> None:
        print(f"agent {ing.ingress_id} ready (role ingress, group {ing.group}, topic {ing.topics.tasks})", flush=True)

    try:
        asyncio.run(run_ingress(options, MeshSettings(), on_ready=ready))
    except MeshError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
