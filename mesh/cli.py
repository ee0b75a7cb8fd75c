"""The ``mesh`` command: one Typer app, each group defined next to the code it drives."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import typer

from mesh.chaos.cli import app as chaos_app
from mesh.console.cli import console as console_command
from mesh.dev.cli import app as dev_app
from mesh.errors import MeshError
from mesh.evals.cli import app as eval_app
from mesh.ingress.cli import ingress as ingress_command
from mesh.ingress.cli import schema_app
from mesh.plugins import register_commands
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
# Commands of packages built on mesh (the demo, the fault campaign): registered through the
# agent_mesh.commands entry point group, so mesh never imports them (mesh/plugins.py).
register_commands(app)


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
