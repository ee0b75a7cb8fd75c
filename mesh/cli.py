"""The ``mesh`` command: one Typer app, each group defined next to the code it drives."""

from __future__ import annotations

import typer

from mesh.dev.cli import app as dev_app
from mesh.llm.eval_cli import app as eval_app
from mesh.runtime.cli import register as register_runtime

app = typer.Typer(
    name="mesh",
    help="agent-mesh: multi-agent workflows over Kafka and Redis that survive crashes.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(dev_app, name="dev", help="Local Kafka and Redis for development, tests and the demo.")
app.add_typer(eval_app, name="eval", help="Measure how reasoners use their context.")
register_runtime(app)


@app.command()
def demo(
    patients: int = typer.Option(20, help="Patients in the mock EHR."),
    page_size: int = typer.Option(2, help="Patients per fetch turn (small: more turns to kill in)."),
    kill_after_turn: int = typer.Option(3, help="SIGKILL the fetch owner after this turn (0: no kill)."),
    turn_delay_s: float = typer.Option(0.4, help="Pause after each turn, in seconds."),
    session_timeout_ms: int = typer.Option(2500, help="Consumer-group session timeout (bounds failover)."),
    keep_services: bool = typer.Option(False, help="Leave Kafka and Redis running afterwards."),
    reasoner: str = typer.Option("rules", help="rules, or local: the model of `mesh dev llm` decides (use fewer patients)."),
) -> None:
    """Run the reconciliation workflow on local services, kill an agent mid-step, show the resume."""
    # Imported here: agents/ builds on mesh/, not the other way round.
    from agents.demo import DemoOptions, run_demo

    result = run_demo(
        DemoOptions(
            patients=patients, page_size=page_size, kill_after_turn=kill_after_turn,
            turn_delay_s=turn_delay_s, session_timeout_ms=session_timeout_ms, keep_services=keep_services,
            reasoner=reasoner,
        )
    )
    ok = result.status == "succeeded" and result.duplicate_effects == 0 and result.unauthorized == 0
    raise typer.Exit(0 if ok else 1)


def main() -> None:
    """Entry point for ``python -m mesh``."""
    app()
