"""``mesh eval``: the seed's claims measured: position recall, cognitive offloading, p^k retries.

Each command prints trials, a 95% confidence interval (Wilson) and the wall time it took.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import ExitStack
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mesh.evals._position import PositionEvalOptions, PositionEvalReport, run_position_eval
from mesh.llm.backoff import RetryPolicy
from mesh.llm.errors import ReasonerError
from mesh.llm.reasoner import Reasoner
from mesh.llm.rule_reasoner import RuleReasoner
from mesh.llm.settings import ReasonerSettings
from mesh.testing import FakeAnthropicServer, NeedleResponder

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)

FAKE_API_KEY = "fake-key-for-local-server"
"""Key used against the local fake server; it is not a credential."""


class ReasonerChoice(StrEnum):
    """Which reasoner ``mesh eval`` asks."""

    rule = "rule"
    anthropic = "anthropic"
    fake = "fake"
    local = "local"


def _parse_positions(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated percentages, got {text!r}") from None


def _build_reasoner(
    choice: ReasonerChoice, base_url: str | None, seed: int, stack: ExitStack
) -> Reasoner:
    from mesh.llm.anthropic_reasoner import AnthropicReasoner  # the SDK is slow to import

    if choice is ReasonerChoice.rule:
        return RuleReasoner()
    if choice is ReasonerChoice.fake:
        if base_url is None:  # no server given: run one in needle mode, in-process
            srv = stack.enter_context(FakeAnthropicServer(NeedleResponder(seed=seed)))
            base_url = srv.base_url
        return AnthropicReasoner(
            api_key=FAKE_API_KEY, base_url=base_url, model="fake-needle", retry=RetryPolicy(2)
        )
    if choice is ReasonerChoice.local:  # llama-server of `mesh dev llm`: no key, prefill on
        from mesh.dev._llm import LocalLlm, local_reasoner_env

        env = local_reasoner_env(base_url or LocalLlm().base_url)
        return AnthropicReasoner(
            api_key=env["ANTHROPIC_API_KEY"],
            base_url=env["ANTHROPIC_BASE_URL"],
            model=env["MESH_LLM_MODEL"],
            timeout_s=float(env["MESH_LLM_TIMEOUT_S"]),
            send_temperature=True,
            tool_prefill=env["MESH_LLM_TOOL_PREFILL"],
            max_decision_tokens=int(env["MESH_LLM_MAX_DECISION_TOKENS"]),
            retry=RetryPolicy(2),
        )
    settings = ReasonerSettings()
    if base_url is not None:
        settings = settings.model_copy(update={"base_url": base_url})
    return AnthropicReasoner.from_settings(settings)


def _render(report: PositionEvalReport, console: Console) -> None:
    trials = report.options.trials
    table = Table(
        title=f"Recall by needle position: {report.reasoner}",
        caption=(
            f"{report.options.context_tokens} tokens of history, {trials} trials per cell, "
            f"95% Wilson intervals, {report.elapsed_s:.0f} s"
        ),
    )
    table.add_column("position", justify="right")
    table.add_column("naive recall", justify="right")
    table.add_column("stack recall", justify="right")

    def cell(recall: float, n: int) -> str:
        low, high = report.interval(recall, n)
        return f"{recall:.2f} ({low:.2f}-{high:.2f})"

    for point in report.points:
        table.add_row(
            f"{point.position_pct}%",
            cell(point.naive_recall, trials),
            cell(point.stack_recall, trials),
        )
    table.add_section()
    total = trials * len(report.points)
    table.add_row("mean", cell(report.mean("naive"), total), cell(report.mean("stack"), total))
    console.print(table)


@app.command("position")
def position(
    reasoner: Annotated[
        ReasonerChoice,
        typer.Option(
            help="rule: extractive; anthropic: ANTHROPIC_API_KEY; fake: local needle server; local: `mesh dev llm`"
        ),
    ] = ReasonerChoice.fake,
    base_url: Annotated[
        str | None, typer.Option(help="API base URL (anthropic, or an already running fake)")
    ] = None,
    trials: Annotated[int, typer.Option(min=1, help="trials per position and layout")] = 5,
    context_tokens: Annotated[int, typer.Option(min=100, help="tokens of filler history")] = 4000,
    positions: Annotated[
        str, typer.Option(help="needle positions, percent of the history")
    ] = "0,10,20,30,40,50,60,70,80,90,100",
    seed: Annotated[int, typer.Option(help="seed of needles, histories and the fake")] = 0,
    concurrency: Annotated[int, typer.Option(min=1, help="calls in flight")] = 4,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="also write the curve as JSON here")
    ] = None,
) -> None:
    """Plant a fact at 0..100% of a long context and measure recall, naive vs priority stack."""
    try:
        options = PositionEvalOptions(
            context_tokens=context_tokens,
            positions_pct=_parse_positions(positions),
            trials=trials,
            seed=seed,
            concurrency=concurrency,
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    console = Console()
    with ExitStack() as stack:
        try:
            chosen = _build_reasoner(reasoner, base_url, seed, stack)
            report = asyncio.run(_run(chosen, options))
        except ReasonerError as err:
            console.print(f"[red]reasoner failed:[/red] {err}")
            raise typer.Exit(2) from None
    _render(report, console)
    if reasoner is ReasonerChoice.fake:
        console.print(
            "The fake server's attention model is synthetic (sees the first 30% and last 20% "
            "of the prompt, samples the middle); real figures need --reasoner local or anthropic."
        )
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_dict(), indent=2))


async def _run(reasoner: Reasoner, options: PositionEvalOptions) -> PositionEvalReport:
    try:
        return await run_position_eval(reasoner, options)
    finally:
        await reasoner.aclose()


@app.command("retry")
def retry(
    p: Annotated[
        float, typer.Option(min=0.0, max=0.99, help="failure probability of one call")
    ] = 0.02,
    steps: Annotated[int, typer.Option(min=1, help="steps per workflow (N)")] = 50,
    attempts: Annotated[
        str, typer.Option(help="attempts per step to compare (k), comma-separated")
    ] = "1,3",
    trials: Annotated[int, typer.Option(min=1, help="workflows per k")] = 200,
    seed: Annotated[int, typer.Option(help="seed of the failures")] = 0,
) -> None:
    """The p^k claim: N-step workflows through the real retry layer vs (1-p^k)^N."""
    from mesh.evals._retry import run_retry_eval

    try:
        ks = tuple(int(part) for part in attempts.split(",") if part.strip())
        results = asyncio.run(
            run_retry_eval(p=p, steps=steps, attempts=ks, trials=trials, seed=seed)
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    table = Table(
        title=f"{steps}-step workflows, each call fails with p={p} (HTTP 500 from the fake API)"
    )
    for column in (
        "attempts k",
        "trials",
        "succeeded",
        "measured",
        "95% CI",
        "(1-p^k)^N",
        "calls",
        "time",
    ):
        table.add_column(column, justify="right")
    for r in results:
        low, high = r.interval
        table.add_row(
            str(r.attempts),
            str(r.trials),
            str(r.successes),
            f"{r.rate:.2%}",
            f"{low:.2%}-{high:.2%}",
            f"{r.predicted:.2%}",
            str(r.calls),
            f"{r.elapsed_s:.1f} s",
        )
    Console().print(table)


@app.command("offload")
def offload(
    reasoner: Annotated[
        ReasonerChoice, typer.Option(help="local: llama-server of `mesh dev llm`; anthropic; fake")
    ] = ReasonerChoice.local,
    base_url: Annotated[str | None, typer.Option(help="API base URL")] = None,
    trials: Annotated[int, typer.Option(min=1, help="tasks per mode")] = 5,
    items: Annotated[int, typer.Option(min=1, help="records to file per task")] = 3,
    seed: Annotated[int, typer.Option(help="seed of ids and tokens")] = 0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="also write the results as JSON here")
    ] = None,
) -> None:
    """Cognitive offloading: one task with parameter injection + validation on, then off."""
    from mesh.evals._offload import OffloadEvalOptions, run_offload_eval

    options = OffloadEvalOptions(trials=trials, items=items, seed=seed)
    console = Console()
    with ExitStack() as stack:
        chosen = _build_reasoner(reasoner, base_url, seed, stack)

        async def run() -> list[Any]:
            try:
                return await run_offload_eval(chosen, options)
            finally:
                await chosen.aclose()

        try:
            results = asyncio.run(run())
        except ReasonerError as err:
            console.print(f"[red]reasoner failed:[/red] {err}")
            raise typer.Exit(2) from None
    table = Table(
        title=f"Cognitive offloading on {chosen.name}: {items} records per task, the same tasks both ways"
    )
    table.add_column("injection + validation")
    for r in results:
        table.add_column(r.mode, justify="right")
    rows: list[tuple[str, Any]] = [
        ("tasks succeeded", lambda r: f"{r.successes}/{r.trials} ({r.rate:.0%})"),
        ("95% CI", lambda r: "{:.0%}-{:.0%}".format(*r.interval)),
        ("decisions (model calls)", lambda r: str(r.decisions)),
        ("answers without a tool call", lambda r: str(r.no_tool_call)),
        ("schema-invalid decisions / decision", lambda r: f"{r.per_decision(r.invalid):.2f}"),
        (
            "hallucinated params / decision",
            lambda r: f"{r.per_decision(r.hallucinated_params):.2f}",
        ),
        ("API calls", lambda r: str(r.api_calls)),
        ("wrong params that reached the API", lambda r: str(r.wrong_params_at_api)),
        ("API calls rejected (token, workflow id)", lambda r: str(r.rejected)),
        ("wrong records written", lambda r: str(r.wrong_records)),
        ("params injected (filled or corrected)", lambda r: str(r.injected)),
        ("repairs asked", lambda r: str(r.repairs)),
        ("time", lambda r: f"{r.elapsed_s:.0f} s"),
    ]
    for label, show in rows:
        table.add_row(label, *(show(r) for r in results))
    console.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps([r.to_dict() for r in results], indent=2))
