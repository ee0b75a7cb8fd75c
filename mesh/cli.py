"""The ``mesh`` command: one Typer app, each group defined next to the code it drives."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from mesh.chaos.cli import app as chaos_app
from mesh.console.cli import console as console_command
from mesh.dev.cli import app as dev_app
from mesh.errors import MeshError
from mesh.ingress.cli import ingress as ingress_command
from mesh.ingress.cli import schema_app
from mesh.llm.eval_cli import app as eval_app
from mesh.runtime.cli import EXIT_INTERNAL, EXIT_USAGE, error_line, exit_code_of
from mesh.runtime.cli import register as register_runtime
from mesh.security.cli import app as keys_app

app = typer.Typer(
    name="mesh",
    help="agent-mesh: multi-agent workflows over Kafka and Redis that survive crashes.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(dev_app, name="dev", help="Local Kafka and Redis for development, tests and the demo.")
app.add_typer(chaos_app, name="chaos", help="Fault campaigns: inject real faults, check the history, report.")
app.add_typer(eval_app, name="eval", help="Measure how reasoners use their context.")
app.add_typer(keys_app, name="keys", help="The operator key and agent key certificates (the trust root).")
register_runtime(app)
app.add_typer(schema_app, name="schema", help="Print the JSON Schemas of what the mesh accepts from outside.")
app.command("ingress")(ingress_command)
app.command("console")(console_command)


@app.command()
def demo(
    patients: int | None = typer.Option(None, help="Patients in the mock EHR (default 20; 2 with --reasoner local)."),
    page_size: int | None = typer.Option(None, help="Patients per fetch turn (default 2; 1 with local: a turn to kill in)."),
    kill_after_turn: int | None = typer.Option(None, help="SIGKILL the fetch owner after this turn (0: no kill; default 3, 1 with local)."),
    turn_delay_s: float = typer.Option(0.4, help="Pause after each turn, in seconds."),
    session_timeout_ms: int = typer.Option(2500, help="Consumer-group session timeout (bounds failover)."),
    keep_services: bool = typer.Option(False, help="Leave Kafka and Redis running afterwards."),
    keep_topics: bool = typer.Option(False, help="Keep this run's topics and Redis keys (deleted by default)."),
    run_dir: Path | None = typer.Option(None, help="Logs and audit of this run (default: <state dir>/demo/<time>)."),  # noqa: B008
    reasoner: str = typer.Option("rules", help="rules, or local: the model of `mesh dev llm` decides (use fewer patients)."),
    timeout_s: float | None = typer.Option(None, help="Wait this long for the workflow (default 180 s, 1800 s with local)."),
) -> None:
    """Run the reconciliation workflow on local services, kill an agent mid-step, show the resume."""
    # Imported here: agents/ builds on mesh/, not the other way round.
    from agents.demo import DemoOptions, run_demo

    # The local model takes 10-60 s a turn on 2 shared cores: few patients and turns by default.
    local = reasoner == "local"
    result = run_demo(
        DemoOptions(
            patients=patients if patients is not None else (2 if local else 20),
            page_size=page_size if page_size is not None else (1 if local else 2),
            kill_after_turn=kill_after_turn if kill_after_turn is not None else (1 if local else 3),
            turn_delay_s=turn_delay_s, session_timeout_ms=session_timeout_ms, keep_services=keep_services,
            keep_topics=keep_topics,
            run_dir=run_dir,
            reasoner=reasoner,
            timeout_s=timeout_s,
        )
    )
    ok = result.status == "succeeded" and result.duplicate_effects == 0 and result.unauthorized == 0
    raise typer.Exit(0 if ok else 1)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the ``mesh`` command on ``argv``; return its exit code.

    Every mistake ends as one line on stderr (``mesh <command>: error: <what and where>``) and a
    non-zero exit code; no traceback reaches the user (``MESH_DEBUG=1`` prints it for bugs).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    command = _command()
    try:
        result = command.main(args=args, prog_name="mesh", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        error_line("", "aborted")
        return 130
    except typer.TyperException as exc:  # typer's (vendored click's) usage errors
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            sys.stdout.write(ctx.get_help() + "\n")
            where = " ".join(ctx.command_path.split()[1:])
            error_line(where, f"missing command (the list is above; mesh {where} --help)".replace("  ", " "))
            return EXIT_USAGE
        where = " ".join(ctx.command_path.split()[1:]) if ctx is not None else ""
        hint = f" (mesh {where} --help)".replace("  ", " ") if where else " (mesh --help)"
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        error_line(where, message + hint)
        return int(getattr(exc, "exit_code", 0) or EXIT_USAGE)
    except MeshError as exc:  # raised before any asyncio.run (bad input found by the CLI itself)
        error_line(_where(args), str(exc))
        return exit_code_of(exc)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: still one line, the traceback only when asked for
        if os.environ.get("MESH_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        error_line(_where(args), f"internal error: {type(exc).__name__}: {exc} (MESH_DEBUG=1 shows the traceback)")
        return EXIT_INTERNAL
    return int(result) if isinstance(result, int) else 0


@functools.cache
def _command() -> Any:
    return typer.main.get_command(app)


def _where(args: Sequence[str]) -> str:
    words = [a for a in args[:2] if a.isidentifier()]
    return " ".join(words[:1])


def main() -> None:
    """Entry point for ``python -m mesh`` and the ``mesh`` script."""
    sys.exit(run())
