"""Running the console: the decision publisher and the uvicorn server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from mesh.console._app import Decide, DecisionRequest, create_app
from mesh.console._data import ConsoleData
from mesh.console._settings import ConsoleSettings
from mesh.settings import MeshSettings

__all__ = ["build_app", "mesh_decide", "serve"]


def mesh_decide(settings: MeshSettings, *, client_id: str) -> tuple[Decide, Callable[[], object]]:
    """A ``Decide`` that publishes through a ``MeshClient`` signing as ``client_id`` (connected on first use).

    Returns the callable and a coroutine function that closes the client.
    """
    from mesh.runtime.client import MeshClient

    holder: dict[str, MeshClient] = {}
    lock = asyncio.Lock()

    async def client() -> MeshClient:
        async with lock:
            if "c" not in holder:
                holder["c"] = await MeshClient.connect(settings, client_id=client_id)
            return holder["c"]

    async def decide(
        workflow_id: str, step_id: str, request: DecisionRequest, operator: str
    ) -> str:
        c = await client()
        # A signed EscalationDecided bound to the pause's nonce, the same path as `mesh resume`.
        decided = await c.decide_escalation(
            workflow_id,
            step_id,
            nonce=request.nonce,
            decision=request.decision,
            operator=operator,
            note=request.note,
            variables=dict(request.variables) or None,
        )
        return decided.nonce

    async def aclose() -> None:
        if "c" in holder:
            with contextlib.suppress(Exception):
                await holder.pop("c").aclose()

    return decide, aclose


def build_app(settings: ConsoleSettings, mesh: MeshSettings | None = None) -> FastAPI:
    """The console app for the mesh ``mesh`` configures (environment by default)."""
    mesh = mesh or MeshSettings()
    data = ConsoleData(
        mesh, scratchpad_dir=settings.scratchpads(mesh.state_dir), max_runs=settings.max_runs
    )
    decide, close_decide = mesh_decide(mesh, client_id=f"console-{socket.gethostname()}")
    app = create_app(data, settings, decide=decide)
    app.router.on_shutdown.append(close_decide)  # type: ignore[arg-type]
    return app


def serve(
    settings: ConsoleSettings, mesh: MeshSettings | None = None, *, log_level: str = "info"
) -> None:
    """Serve until interrupted."""
    app = build_app(settings, mesh)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )
