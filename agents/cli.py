"""The ``mesh`` commands of the example workload: ``mesh demo``, ``mesh chaos list`` and ``mesh chaos run``.

``mesh`` does not import this package; it finds ``register`` through the ``agent_mesh.commands``
entry point group declared in ``pyproject.toml`` (``mesh/plugins.py``). The heavy modules
(the demo, the campaign) are imported when their command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the ``mesh`` app and ``list``/``run`` to its ``chaos`` group."""
    from mesh.chaos.cli import app as chaos_app

    app.command("demo")(demo)
    chaos_app.command("list")(list_scenarios)
    chaos_app.command("run")(run_campaign_command)


def demo(
    patients: int | None = typer.Option(
        None, help="Patients in the mock EHR (default 20; 2 with --reasoner local)."
    ),
    page_size: int | None = typer.Option(
        None, help="Patients per fetch turn (default 2; 1 with local: a turn to kill in)."
    ),
    kill_after_turn: int | None = typer.Option(
        None, help="SIGKILL the fetch owner after this turn (0: no kill; default 3, 1 with local)."
    ),
    turn_delay_s: float = typer.Option(0.4, help="Pause after each turn, in seconds."),
    session_timeout_ms: int = typer.Option(
        2500, help="Consumer-group session timeout (bounds failover)."
    ),
    keep_services: bool = typer.Option(False, help="Leave Kafka and Redis running afterwards."),
    keep_topics: bool = typer.Option(
        False, help="Keep this run's topics and Redis keys (deleted by default)."
    ),
    run_dir: Path | None = typer.Option(  # noqa: B008
        None, help="Logs and audit of this run (default: <state dir>/demo/<time>)."
    ),
    reasoner: str = typer.Option(
        "rules",
        help="rules, or local: the model of `mesh dev llm` decides (fewer patients by default).",
    ),
    timeout_s: float | None = typer.Option(
        None, help="Wait this long for the workflow (default 180 s, 1800 s with local)."
    ),
) -> None:
    """Run the reconciliation workflow on local services, kill an agent mid-step, show the resume."""
    # Imported here: the demo pulls in the mock EHR and the process launcher.
    from agents.demo import DemoOptions, run_demo

    # The local model takes 40-160 s a turn on 2 shared cores: few patients and turns by default.
    local = reasoner == "local"
    result = run_demo(
        DemoOptions(
            patients=patients if patients is not None else (2 if local else 20),
            page_size=page_size if page_size is not None else (1 if local else 2),
            kill_after_turn=kill_after_turn if kill_after_turn is not None else (1 if local else 3),
            turn_delay_s=turn_delay_s,
            session_timeout_ms=session_timeout_ms,
            keep_services=keep_services,
            keep_topics=keep_topics,
            run_dir=run_dir,
            reasoner=reasoner,
            timeout_s=timeout_s,
        )
    )
    ok = result.status == "succeeded" and result.duplicate_effects == 0 and result.unauthorized == 0
    raise typer.Exit(0 if ok else 1)


def list_scenarios() -> None:
    """Print every scenario and what it does."""
    from agents.campaign import SCENARIOS

    for s in SCENARIOS.values():
        needs = f" [needs {', '.join(sorted(s.needs))}]" if s.needs else ""
        typer.echo(f"{s.name:<22} {s.description}{needs}")


def run_campaign_command(
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
        0, help="First of the consecutive ports for the private services: 5 for one Kafka node, "
        "9 for three (0: free ports)."
    ),
    kafka_nodes: int = typer.Option(
        1, help="Kafka nodes of the private cluster; with 3, kafka-kill SIGKILLs a partition leader."
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
        kafka_nodes=kafka_nodes,
        patients=patients, turn_delay_s=turn_delay_s, submit_interval_s=submit_interval_s, max_faults=max_faults,
        recover_timeout_s=recover_timeout_s, command=command_line(sys.argv[1:]),
    )  # fmt: skip
    report = run_campaign(opts, progress=lambda line: typer.echo(line))
    typer.echo("")
    typer.echo(report.markdown(max_evidence=3))
    typer.echo(f"report: {Path(report_dir) / 'report.md'} and report.json")
    raise typer.Exit(0 if report.ok else 1)
