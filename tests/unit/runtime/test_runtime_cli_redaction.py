"""The CLI prints through the one redactor: a step's error or an error line never shows a secret."""

from __future__ import annotations

import io

from rich.console import Console

from mesh.runtime import WorkflowView
from mesh.runtime.cli import render
from protocols import Envelope, StepFailed, StepStarted, WorkflowSpec, WorkflowSubmitted

SPEC = WorkflowSpec.parse({"name": "w", "steps": [{"id": "a", "role": "r"}]})
TOKEN = "ghp_" + "Z" * 36


def test_status_table_masks_secrets_in_step_errors() -> None:
    view = WorkflowView("wf")
    view.apply(Envelope.of(WorkflowSubmitted(spec=SPEC), sender="cli", workflow_id="wf"))
    view.apply(Envelope.of(StepStarted(role="r", owner="agent-1", epoch=1), sender="agent-1", workflow_id="wf",
                           step_id="a"))
    view.apply(Envelope.of(StepFailed(error=f"401 with token {TOKEN}", owner="agent-1"), sender="agent-1",
                           workflow_id="wf", step_id="a"))
    out = io.StringIO()
    Console(file=out, width=200).print(render(view))
    assert "failed" in out.getvalue()
    assert TOKEN[:12] not in out.getvalue() and "[REDACTED]" in out.getvalue()
