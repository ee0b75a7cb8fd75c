"""``mesh chaos``: run a fault campaign, list its scenarios, check a saved history again."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from mesh.chaos._checker import check
from mesh.chaos._history import History

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)


@app.command("list")
def list_scenarios() -> None:
    """Print every scenario and what it does."""
    # Imported here: the workload (agents/) builds on mesh/, not the other way round.
    from agents.campaign import SCENARIOS

    for s in SCENARIOS.values():
        needs = f" [needs {', '.join(sorted(s.needs))}]" if s.needs else ""
        typer.echo(f"{s.name:<22} {s.description}{needs}")


@app.command("run")
def run(
    workflows: int = typer.Option(
        20, help="Workflows over the whole campaign, split evenly over the scenarios."
    ),
    scenarios: str = typer.Option(
        "all", help="Comma-separated scenario names (`mesh chaos list`), or all."
    ),
    seed: int = typer.Option(
        1, help="Seeds every random choice; the same seed picks the same faults."
    ),
    report_dir: str = typer.Option(
        "chaos-report", help="Where report.md, report.json, histories and logs go."
    ),
    kafka_bootstrap: str = typer.Option(
        "", help="Your own Kafka (with --redis-url); service faults are then skipped."
    ),
    redis_url: str = typer.Option("", help="Your own Redis (with --kafka-bootstrap)."),
    services_port: int = typer.Option(
        0, help="First of 5 consecutive ports for the private services (0: free ports)."
    ),
    patients: int = typer.Option(
        4, help="Patients per workflow (fetch and validate turns grow with it)."
    ),
    turn_delay_s: float = typer.Option(
        0.15, help="Pause after each turn, in seconds (longer steps: more to kill)."
    ),
    submit_interval_s: float = typer.Option(1.0, help="Seconds between two submissions."),
    max_faults: int = typer.Option(
        0, help="Faults per scenario (0: one per two workflows, at least 3)."
    ),
    recover_timeout_s: float = typer.Option(
        240.0, help="How long workflows may take to end after the faults."
    ),
) -> None:
    """Run fault scenarios on real processes, check the history, write the report; exit 1 on any anomaly."""
    from agents.campaign import CampaignOptions, command_line, run_campaign

    opts = CampaignOptions(
        workflows=workflows, scenarios=tuple(s.strip() for s in scenarios.split(",") if s.strip()), seed=seed,
        report_dir=Path(report_dir), kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, services_port=services_port,
        patients=patients, turn_delay_s=turn_delay_s, submit_interval_s=submit_interval_s, max_faults=max_faults,
        recover_timeout_s=recover_timeout_s, command=command_line(sys.argv[1:]),
    )  # fmt: skip
    report = run_campaign(opts, progress=lambda line: typer.echo(line))
    typer.echo("")
    typer.echo(report.markdown(max_evidence=3))
    typer.echo(f"report: {Path(report_dir) / 'report.md'} and report.json")
    raise typer.Exit(0 if report.ok else 1)


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
