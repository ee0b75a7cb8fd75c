"""``mesh eval``: position-recall evaluation of reasoners."""

import typer

app = typer.Typer(no_args_is_help=True)
