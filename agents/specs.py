"""The example workflow specs shipped in ``agents/workflows``, loadable and resizable."""

from __future__ import annotations

from pathlib import Path

from protocols import WorkflowSpec, load_workflow_spec

__all__ = ["RECONCILIATION", "reconciliation_spec"]

RECONCILIATION = Path(__file__).with_name("workflows") / "reconciliation.yaml"
"""Path of the patient-reconciliation spec (identity -> fetch -> validate -> report)."""


def reconciliation_spec(*, patients: int | None = None, page_size: int | None = None) -> WorkflowSpec:
    """The reconciliation spec, with the fetch step sized (patients, patients per turn) if given."""
    spec = load_workflow_spec(RECONCILIATION)
    sizing = {k: v for k, v in (("patients", patients), ("page_size", page_size)) if v is not None}
    if not sizing:
        return spec
    steps = tuple(
        s.model_copy(update={"params": {**s.params, **sizing}}) if s.id == "fetch" else s for s in spec.steps
    )
    return spec.model_copy(update={"steps": steps})
