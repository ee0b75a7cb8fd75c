"""The campaign report: one row per scenario, as markdown (for a design review) and JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesh.chaos._checker import ANOMALY_KINDS, CheckResult

__all__ = ["CampaignReport", "ScenarioResult"]


@dataclass
class ScenarioResult:
    """One scenario's run: its checked history and how long it took."""

    name: str
    description: str
    result: CheckResult
    elapsed_s: float
    history_path: str = ""
    notes: list[str] = field(default_factory=list)
    """What the scenario could not do on this deployment (skipped faults), said plainly."""
    crashed: str = ""
    """Why the scenario itself broke off (then it proves nothing, and the campaign is not ok)."""

    def to_json(self) -> dict[str, Any]:
        """The row and its anomalies as JSON."""
        return {
            "name": self.name, "description": self.description, "elapsed_s": round(self.elapsed_s, 1),
            "history": self.history_path, "notes": self.notes, "crashed": self.crashed, "figures": self.result.figures.to_json(),
            "anomalies_by_kind": self.result.by_kind(),
            "anomalies": [a.to_json() for a in self.result.anomalies],
        }  # fmt: skip


@dataclass
class CampaignReport:
    """Every scenario of one campaign, with what it takes to run it again."""

    command: str
    seed: int
    started_at: str
    scenarios: list[ScenarioResult] = field(default_factory=list)
    environment: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No anomaly in any scenario, and none crashed."""
        return all(s.result.ok and not s.crashed for s in self.scenarios)

    def totals(self) -> dict[str, int]:
        """Workflows, completed, faults and anomalies summed over the scenarios."""
        out = {
            "workflows": 0,
            "completed": 0,
            "faults": 0,
            "anomalies": 0,
            "duplicated_effects": 0,
            "in_doubt": 0,
        }
        for s in self.scenarios:
            f = s.result.figures
            out["workflows"] += f.workflows
            out["completed"] += f.completed
            out["faults"] += f.faults
            out["anomalies"] += len(s.result.anomalies)
            out["duplicated_effects"] += f.duplicated_effects
            out["in_doubt"] += f.in_doubt
        return out

    def to_json(self) -> dict[str, Any]:
        """The whole report as JSON."""
        return {
            "command": self.command, "seed": self.seed, "started_at": self.started_at, "ok": self.ok,
            "environment": dict(self.environment), "totals": self.totals(),
            "scenarios": [s.to_json() for s in self.scenarios],
        }  # fmt: skip

    def markdown(self, *, max_evidence: int = 5) -> str:
        """The report as markdown: the table, then each anomaly with its evidence."""
        lines = [
            "# Fault campaign report",
            "",
            f"- command: `{self.command}`",
            f"- seed: {self.seed}",
            f"- started: {self.started_at}",
            *(f"- {k}: {v}" for k, v in self.environment.items()),
            f"- verdict: **{'no anomaly' if self.ok else 'ANOMALIES FOUND'}**",
            "",
            "| scenario | workflows | faults injected | completed | anomalies by kind | recover p50 / p95 (ms) "
            "| duplicated effects | in-doubt effects | auth calls / workflow |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in self.scenarios:
            f = s.result.figures
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(s.result.by_kind().items())) or "none"
            if s.crashed:
                kinds = f"**crashed**: {s.crashed}"
            p50, p95 = f.recover_percentile(0.5), f.recover_percentile(0.95)
            recover = "-" if p50 is None else f"{p50} / {p95}"
            doubt = (
                f"{f.in_doubt} ({f.in_doubt_reconciled} reconciled, {f.in_doubt_reported} reported)"
            )
            lines.append(
                f"| {s.name} | {f.workflows} | {f.faults} | {f.completed} | {kinds} | {recover} "
                f"| {f.duplicated_effects} | {doubt} | {f.auth_per_workflow:.2f} |"
            )
        t = self.totals()
        lines += [
            f"| **total** | {t['workflows']} | {t['faults']} | {t['completed']} | {t['anomalies']} "
            f"| | {t['duplicated_effects']} | {t['in_doubt']} | |",
            "",
            "## Scenarios",
            "",
        ]
        for s in self.scenarios:
            lines.append(f"- **{s.name}** ({s.elapsed_s:.0f} s): {s.description}")
            lines.extend(f"  - note: {n}" for n in s.notes)
        lines += ["", "## Anomalies", ""]
        if self.ok:
            lines.append("None.")
        for s in self.scenarios:
            for a in s.result.anomalies:
                lines.append(f"- [{s.name}] **{a.kind}**: {a.summary}")
                lines.extend(f"    - `{e.brief()}`" for e in a.evidence[:max_evidence])
        lines += ["", "## Anomaly kinds", ""]
        lines.extend(f"- `{k}`: {v}" for k, v in ANOMALY_KINDS.items())
        return "\n".join(lines) + "\n"

    def write(self, directory: Path) -> tuple[Path, Path]:
        """Write ``report.md`` and ``report.json`` into ``directory``; return both paths."""
        directory.mkdir(parents=True, exist_ok=True)
        md, js = directory / "report.md", directory / "report.json"
        md.write_text(self.markdown(), encoding="utf-8")
        js.write_text(json.dumps(self.to_json(), indent=2, default=str) + "\n", encoding="utf-8")
        return md, js
