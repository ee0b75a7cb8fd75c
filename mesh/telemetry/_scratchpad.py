"""Scratchpads: one human-readable markdown file per (workflow, step), appended every turn.

A person debugging a step reads what the agent thought, what it chose, and what happened, turn
by turn, including the turns of owners that died. The file is append-only: a new owner (or the
same one after a restart) appends a "resumed" note and goes on; nothing is ever rewritten. Each
block is written with one ``write`` on a file opened for appending, so blocks of concurrent
writers (a zombie and its successor) do not interleave within a block.

Writes are small and synchronous; call ``append_turn`` through ``asyncio.to_thread`` if the
directory may sit on slow storage.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mesh.security import private_dir
from mesh.telemetry._redact import SecretRegistry, redact_text, redact_value

__all__ = ["ScratchpadWriter", "TurnRecord", "sanitize_line"]

_MAX_OUTCOME_CHARS = 240
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def sanitize_line(
    text: str, registry: SecretRegistry | None = None, *, max_chars: int = _MAX_OUTCOME_CHARS
) -> str:
    """One redacted line: whitespace collapsed, cut to ``max_chars`` with an ellipsis."""
    line = " ".join(redact_text(str(text), registry).split())
    return line if len(line) <= max_chars else line[: max_chars - 1] + "…"


def _safe_component(name: str) -> str:
    """A path component that cannot escape its directory (``..``, ``/``, NUL, ...)."""
    cleaned = _SAFE_NAME.sub("_", name).strip(".") or "_"
    return cleaned[:120]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """What one turn did, as the scratchpad shows it."""

    turn: int
    """Turn number within the step (1-based)."""

    action: str
    """The action the reasoner chose."""

    params: Mapping[str, Any] = field(default_factory=dict)
    """Parameters of the action after injection (secrets are masked when written)."""

    reasoning: str = ""
    """Why the reasoner chose it, as it said."""

    outcome: str = ""
    """What happened, e.g. ``ok: 3 records`` or ``HTTPError: 503``; rendered as one line."""

    latency_ms: float | None = None
    """Wall time of the whole turn in milliseconds."""

    phase: str = ""
    """Turn phase (planning, execution, recovery)."""

    model: str = ""
    """Who decided (``rule`` or a model name)."""

    injected: tuple[str, ...] = ()
    """Names of parameters injected from state rather than chosen by the reasoner."""


class ScratchpadWriter:
    """Appends markdown to ``<root>/<workflow>/<step>.md``; safe to share between tasks and threads."""

    def __init__(
        self, root: Path | str, *, registry: SecretRegistry | None = None, fsync: bool = False
    ) -> None:
        self._root = Path(root)
        self._registry = registry
        self._fsync = fsync
        self._lock = threading.Lock()
        self._last_turn: dict[Path, int] = {}

    @classmethod
    def under_state_dir(cls, state_dir: Path | str, **options: Any) -> ScratchpadWriter:
        """A writer at the default place, ``<state_dir>/scratchpads``."""
        return cls(Path(state_dir) / "scratchpads", **options)

    @property
    def root(self) -> Path:
        """Directory holding one sub-directory per workflow."""
        return self._root

    def path(self, workflow_id: str, step_id: str) -> Path:
        """The scratchpad file of a step."""
        return self._root / _safe_component(workflow_id) / f"{_safe_component(step_id)}.md"

    def open_step(
        self,
        workflow_id: str,
        step_id: str,
        *,
        role: str,
        agent_id: str,
        epoch: int = 0,
        mission: str = "",
        resumed_from_turn: int = 0,
    ) -> Path:
        """Write the header on first start, or a "resumed" note when the file already exists."""
        path = self.path(workflow_id, step_id)
        if path.exists() and path.stat().st_size > 0:
            text = (
                f"\n---\n\n_Resumed by `{self._md(agent_id)}` (epoch {epoch}) at {_now_iso()}, "
                f"after turn {resumed_from_turn}._\n"
            )
        else:
            lines = [
                f"# Scratchpad: {self._md(workflow_id)} / {self._md(step_id)}",
                "",
                f"- role: `{self._md(role)}`",
                f"- owner: `{self._md(agent_id)}` (epoch {epoch})",
                f"- started: {_now_iso()}",
            ]
            if mission:
                lines += ["", "## Mission", "", self._quote(mission)]
            text = "\n".join(lines) + "\n"
        self._append(path, text)
        return path

    def append_turn(self, workflow_id: str, step_id: str, record: TurnRecord) -> Path:
        """Append one turn block; a turn already written (replayed after a crash) is marked so."""
        path = self.path(workflow_id, step_id)
        with self._lock:
            last = self._last_turn.get(path)
            if last is None:
                last = self._scan_last_turn(path)
            replayed = record.turn <= last
            self._last_turn[path] = max(last, record.turn)
        heading = f"## Turn {record.turn}" + (" (replayed)" if replayed else "")
        meta = [f"at {_now_iso()}"]
        if record.phase:
            meta.append(f"phase {self._md(record.phase)}")
        if record.model:
            meta.append(f"by `{self._md(record.model)}`")
        if record.latency_ms is not None:
            meta.append(f"{record.latency_ms:.0f} ms")
        params = redact_value(dict(record.params), self._registry)
        rendered = json.dumps(params, indent=2, sort_keys=True, ensure_ascii=False, default=str)
        lines = [
            "",
            heading,
            "",
            f"_{' · '.join(meta)}_",
            "",
            "**Reasoning**",
            "",
            self._quote(record.reasoning) if record.reasoning.strip() else "> (none given)",
            "",
            f"**Decision**: `{self._md(record.action)}`"
            + (
                f" (injected: {', '.join(self._md(n) for n in record.injected)})"
                if record.injected
                else ""
            ),
            "",
            "```json",
            rendered.replace("```", "'''"),
            "```",
            "",
            f"**Outcome**: {sanitize_line(record.outcome, self._registry) or '(none)'}",
        ]
        self._append(path, "\n".join(lines) + "\n")
        return path

    def read(self, workflow_id: str, step_id: str) -> str:
        """The whole scratchpad of a step ("" when there is none yet)."""
        path = self.path(workflow_id, step_id)
        return path.read_text(encoding="utf-8") if path.exists() else ""

    # -- internals -------------------------------------------------------------------------

    def _md(self, text: str) -> str:
        return sanitize_line(text, self._registry, max_chars=200).replace("`", "'")

    def _quote(self, text: str) -> str:
        # Quoted, so the model's own markdown ("## Turn 3") cannot break the file's structure.
        clean = redact_text(text, self._registry).strip()
        return "\n".join(f"> {line}".rstrip() for line in clean.splitlines())

    def _scan_last_turn(self, path: Path) -> int:
        if not path.exists():
            return 0
        last = 0
        for match in re.finditer(r"^## Turn (\d+)", path.read_text(encoding="utf-8"), re.MULTILINE):
            last = max(last, int(match.group(1)))
        return last

    def _append(self, path: Path, text: str) -> None:
        private_dir(path.parent)
        data = text.encode("utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
