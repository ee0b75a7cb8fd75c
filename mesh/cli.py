"""The ``mesh`` command: one Typer app, each group defined next to the code it drives."""

from __future__ import annotations

import typer

from mesh.dev.cli import app as dev_app
from mesh.llm.eval_cli import app as eval_app

app = typer.Typer(
    name="mesh",
    help="agent-mesh: multi-agent workflows over Kafka and Redis that survive crashes.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(dev_app, name="dev", help="Local Kafka and Redis for development, tests and the demo.")
app.add_typer(eval_app, name="eval", help="Measure how reasoners use their context.")


def main() -> None:
    """Entry point for ``python -m mesh``."""
    app()
