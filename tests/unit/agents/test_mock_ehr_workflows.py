"""The example workflow specs in agents/workflows load and have the expected DAG."""

from __future__ import annotations

from pathlib import Path

import agents
from protocols import WorkflowSpec, load_workflow_spec

WORKFLOWS = Path(agents.__file__).parent / "workflows"


def test_reconciliation_workflow_loads_with_the_expected_dag() -> None:
    spec = load_workflow_spec(WORKFLOWS / "reconciliation.yaml")
    assert isinstance(spec, WorkflowSpec)
    assert spec.name == "patient-reconciliation"
    assert spec.mission
    assert spec.rules
    assert spec.topological_order() == ["identity", "fetch", "validate", "report"]
    assert {s.id: s.role for s in spec.steps} == {
        "identity": "identity",
        "fetch": "fetch",
        "validate": "validate",
        "report": "report",
    }
    assert {s.id: s.depends_on for s in spec.steps} == {
        "identity": (),
        "fetch": ("identity",),
        "validate": ("fetch",),
        "report": ("validate",),
    }
    assert spec.ancestors("report") == ["identity", "fetch", "validate"]
    fetch = spec.step("fetch")
    assert (fetch.params["patients"], fetch.params["page_size"]) == (20, 5)
    assert all(s.task for s in spec.steps)


def test_reconciliation_workflow_holds_no_secret() -> None:
    text = (WORKFLOWS / "reconciliation.yaml").read_text(encoding="utf-8")
    spec = load_workflow_spec(WORKFLOWS / "reconciliation.yaml")
    # The secret is named by the environment variable that holds it, never written out.
    assert spec.step("identity").params["client_secret_env"] == "MOCK_EHR_CLIENT_SECRET"
    assert "client_secret:" not in text
    assert "mock-ehr-dev-secret" not in text


def test_every_shipped_workflow_loads() -> None:
    files = sorted(WORKFLOWS.glob("*.yaml"))
    assert files, "agents/workflows holds no workflow"
    for path in files:
        assert load_workflow_spec(path).steps
