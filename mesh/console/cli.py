"""``mesh console``: serve the operator's console."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

__all__ = ["console"]


def console(
    host: Annotated[
        str, typer.Option(help="Address to bind (MESH_CONSOLE_HOST; default 127.0.0.1).")
    ] = "",
    port: Annotated[int, typer.Option(help="Port (MESH_CONSOLE_PORT; default 8470).")] = -1,
    jaeger_ui_url: Annotated[
        str, typer.Option(help="Jaeger UI base URL for trace links (MESH_CONSOLE_JAEGER_UI_URL).")
    ] = "",
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "info",
) -> None:
    """Serve the web console (runs, steps, mesh, dashboard, escalations) and its JSON API.

    Localhost only unless MESH_CONSOLE_ALLOW_REMOTE=1; remote clients and every write need the
    bearer token (MESH_CONSOLE_TOKEN or MESH_CONSOLE_TOKEN_FILE).
    """
    from mesh.console import ConsoleSettings, serve
    from mesh.telemetry import install_log_redaction

    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_log_redaction()
    overrides: dict[str, object] = {}
    if host:
        overrides["host"] = host
    if port >= 0:
        overrides["port"] = port
    if jaeger_ui_url:
        overrides["jaeger_ui_url"] = jaeger_ui_url
    settings = ConsoleSettings(**overrides)  # type: ignore[arg-type]
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.allow_remote:
        print(
            f"mesh console: error: binding {settings.host} serves other machines: set MESH_CONSOLE_ALLOW_REMOTE=1 "
            "and a token (MESH_CONSOLE_TOKEN or MESH_CONSOLE_TOKEN_FILE)",
            file=sys.stderr,
        )
        raise typer.Exit(2)
    if settings.allow_remote and not settings.bearer_token():
        print(
            "mesh console: error: MESH_CONSOLE_ALLOW_REMOTE needs a bearer token (MESH_CONSOLE_TOKEN or _FILE)",
            file=sys.stderr,
        )
        raise typer.Exit(2)
    print(
        f"mesh console on http://{settings.host}:{settings.port}/ (API: /api, OpenAPI: /api/openapi.json)",
        flush=True,
    )
    serve(settings, log_level=log_level)
