"""``mesh chaos``: check a saved history again.

The campaign itself (``mesh chaos list``, ``mesh chaos run``) drives the example workload, so
``agents/cli.py`` adds those two commands to this group through the ``agent_mesh.commands``
entry point group (``mesh.plugins``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from mesh.chaos._checker import check
from mesh.chaos._history import History

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)


@app.command("check")
def check_history(
    history: str = typer.Argument(..., help="A history.jsonl written by `mesh chaos run`."),
) -> None:
    """Check a saved history again; print each anomaly with its evidence; exit 1 on any."""
    result = check(History.load(Path(history)))
    for a in result.anomalies:
        typer.echo(f"{a.kind}: {a.summary}")
        for e in a.evidence:
            typer.echo(f"    {e.brief()}")
    f = result.figures
    typer.echo(
        f"{f.workflows} workflows, {f.completed} completed, {f.faults} faults, {len(result.anomalies)} anomalies"
    )
    raise typer.Exit(0 if result.ok else 1)
