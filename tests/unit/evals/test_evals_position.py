"""`mesh eval position` end to end against the fake server, and its building blocks."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mesh.cli import app
from mesh.evals import (
    PositionEvalOptions,
    build_history,
    make_needle,
    naive_prompt,
    run_position_eval,
    stack_prompt,
)
from mesh.llm import RuleReasoner


def test_cli_fake_curve_dips_in_the_middle_for_naive_only(tmp_path: Path) -> None:
    out = tmp_path / "curve.json"
    result = CliRunner().invoke(
        app,
        [
            "eval", "position", "--reasoner", "fake", "--trials", "6",
            "--context-tokens", "1500", "--positions", "0,25,50,75,100", "--json", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "naive recall" in result.output and "stack recall" in result.output
    report = json.loads(out.read_text())
    points = {p["position_pct"]: p for p in report["points"]}
    assert [p["position_pct"] for p in report["points"]] == [0, 25, 50, 75, 100]
    for point in points.values():
        assert point["stack_recall"] >= point["naive_recall"]
    naive = {pos: p["naive_recall"] for pos, p in points.items()}
    assert naive[50] < naive[0] and naive[50] < naive[100]  # lost in the middle
    assert report["mean"]["stack"] > report["mean"]["naive"]


def test_cli_rejects_bad_positions() -> None:
    result = CliRunner().invoke(app, ["eval", "position", "--positions", "0,150"])
    assert result.exit_code != 0


def test_cli_anthropic_without_key_fails_cleanly(monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("MESH_LLM_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["eval", "position", "--reasoner", "anthropic"])
    assert result.exit_code == 2 and "ANTHROPIC_API_KEY" in result.output


def test_layouts_place_needle_and_task_as_specified() -> None:
    rng = random.Random(5)
    needle = make_needle(rng)
    history = build_history(rng, needle, 600)
    naive = naive_prompt(history, needle, 50)
    assert naive.endswith(f"Question: {needle.question} Answer with the value only.")
    assert abs(naive.index(needle.sentence) / len(naive) - 0.5) < 0.1
    stack = stack_prompt(history, needle, 50)
    assert stack.index(needle.sentence) < len(stack) * 0.05  # promoted to the top
    assert stack.count(needle.sentence) == 2  # and still in the history
    assert stack.rstrip().endswith("Answer with the value only.")
    assert needle.sentence not in "\n".join(history)  # distractors are other vaults


async def test_rule_reasoner_sees_only_the_top() -> None:
    options = PositionEvalOptions(context_tokens=400, positions_pct=(0, 100), trials=2)
    report = await run_position_eval(RuleReasoner(), options)
    by_position = {p.position_pct: p for p in report.points}
    assert by_position[0].naive_recall == 1.0 and by_position[100].naive_recall == 0.0
    assert all(p.stack_recall == 1.0 for p in report.points)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError):
        PositionEvalOptions(positions_pct=(0, 0))
    with pytest.raises(ValueError):
        PositionEvalOptions(trials=0)
