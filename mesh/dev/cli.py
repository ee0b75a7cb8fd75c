"""``mesh dev``: start, stop and inspect the local Kafka and Redis."""

import typer

app = typer.Typer(no_args_is_help=True)
