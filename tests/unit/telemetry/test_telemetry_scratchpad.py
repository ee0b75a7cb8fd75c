"""Scratchpads: header, turn blocks, masking, resume across writer instances, path safety."""

from __future__ import annotations

from pathlib import Path

from mesh.telemetry import REDACTED, ScratchpadTurn, ScratchpadWriter, sanitize_line


def test_telemetry_scratchpad_header_and_turns(tmp_path: Path, secret: str) -> None:
    pad = ScratchpadWriter.under_state_dir(tmp_path)
    path = pad.open_step(
        "wf-1", "fetch", role="fetch", agent_id="agent-1", epoch=2, mission="Fetch the records."
    )
    assert path == tmp_path / "scratchpads" / "wf-1" / "fetch.md"
    pad.append_turn(
        "wf-1",
        "fetch",
        ScratchpadTurn(
            turn=1,
            action="http_get",
            params={"url": "https://api/records", "auth_token": secret, "page": 1},
            reasoning="Need the first page.\n## Turn 99 (the model wrote a heading)",
            outcome="HTTPError: 503\n  Traceback (most recent call last): ...",
            latency_ms=812.4,
            phase="execution",
            model="rule",
            injected=("auth_token",),
        ),
    )
    text = pad.read("wf-1", "fetch")
    assert text.startswith("# Scratchpad: wf-1 / fetch\n")
    assert "- owner: `agent-1` (epoch 2)" in text
    assert "> Fetch the records." in text
    assert "## Turn 1\n" in text
    assert "> ## Turn 99 (the model wrote a heading)" in text  # quoted, cannot break structure
    assert "**Decision**: `http_get` (injected: auth_token)" in text
    assert f'"auth_token": "{REDACTED}"' in text
    assert '"page": 1' in text
    assert "**Outcome**: HTTPError: 503 Traceback (most recent call last): ...\n" in text
    assert "812 ms" in text and "phase execution" in text
    assert secret not in text


def test_telemetry_scratchpad_resume_appends_and_marks_replays(tmp_path: Path) -> None:
    first = ScratchpadWriter(tmp_path)
    first.open_step("wf", "s", role="r", agent_id="a1")
    first.append_turn("wf", "s", ScratchpadTurn(turn=1, action="a"))
    first.append_turn("wf", "s", ScratchpadTurn(turn=2, action="b"))
    before = first.read("wf", "s")

    # A new process: a fresh writer over the same directory.
    second = ScratchpadWriter(tmp_path)
    second.open_step("wf", "s", role="r", agent_id="a2", epoch=1, resumed_from_turn=1)
    second.append_turn("wf", "s", ScratchpadTurn(turn=2, action="b"))
    second.append_turn("wf", "s", ScratchpadTurn(turn=3, action="c"))
    after = second.read("wf", "s")

    assert after.startswith(before)  # append-only
    assert after.count("# Scratchpad:") == 1
    assert "_Resumed by `a2` (epoch 1)" in after and "after turn 1._" in after
    assert "## Turn 2 (replayed)" in after
    assert "## Turn 3\n" in after


def test_telemetry_scratchpad_paths_cannot_escape_the_root(tmp_path: Path) -> None:
    pad = ScratchpadWriter(tmp_path / "pads")
    path = pad.path("../../etc", "../passwd")
    assert path.resolve().is_relative_to((tmp_path / "pads").resolve())
    pad.open_step("../../etc", "../passwd", role="r", agent_id="a")
    assert path.exists()
    assert pad.read("nope", "nothing") == ""


def test_telemetry_sanitize_line_is_one_short_masked_line(secret: str) -> None:
    line = sanitize_line(f"error:\n\n  {secret} " + "x" * 500, max_chars=60)
    assert "\n" not in line
    assert len(line) == 60 and line.endswith("…")
    assert secret not in line and REDACTED in line
