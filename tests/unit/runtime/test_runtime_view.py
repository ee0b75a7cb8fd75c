"""The workflow fold: duplicates fold to nothing; step results count only from the step's owner."""

from __future__ import annotations

from mesh.runtime import WorkflowView
from protocols import (
    Envelope,
    StepCompleted,
    StepStarted,
    WorkflowSpec,
    WorkflowSubmitted,
    deterministic_event_id,
)

SPEC = WorkflowSpec.parse({"name": "w", "steps": [{"id": "a", "role": "r"}, {"id": "b", "role": "r", "depends_on": ["a"]}]})


def ev(payload, sender: str, step: str = "", id: str = "") -> Envelope:  # type: ignore[no-untyped-def]
    fields = {"id": id} if id else {}
    return Envelope.of(payload, sender=sender, workflow_id="wf", step_id=step, **fields)


def test_results_count_only_from_the_current_owner() -> None:
    view = WorkflowView("wf")
    assert view.apply(ev(WorkflowSubmitted(spec=SPEC), "cli"))
    done_id = deterministic_event_id("wf", "a", "completed")
    # Nobody owns "a" yet: a completion is not believed.
    assert not view.apply(ev(StepCompleted(turns=1), "mallory", "a", done_id))
    assert view.apply(ev(StepStarted(role="r", owner="agent-1", epoch=1), "agent-1", "a"))
    assert view.apply(ev(StepStarted(role="r", owner="agent-2", epoch=2, resumed_from_turn=3), "agent-2", "a"))
    # The zombie (agent-1) sends its late result: ignored, and it does not burn the event id.
    assert not view.apply(ev(StepCompleted(turns=3, owner="agent-1"), "agent-1", "a", done_id))
    assert view.status_of("a") == "running"
    assert view.apply(ev(StepCompleted(turns=5, owner="agent-2"), "agent-2", "a", done_id))
    assert view.completed["a"].turns == 5 and view.status_of("b") == "ready"
    # A duplicate folds to nothing.
    assert not view.apply(ev(StepCompleted(turns=5, owner="agent-2"), "agent-2", "a", done_id))
    assert len(view.ignored) == 2 and view.resumes() == 1


def test_gossiped_variables_are_marked_tentative_or_accepted_in_the_prompt() -> None:
    from mesh.runtime import ContextVariable, StackPromptBuilder, StepState

    state = StepState("wf", "a", "r", variables={
        "region": ContextVariable("region", "eu-west", priority=2, origin="gossip:agent-7 (tentative)"),
        "tenant": ContextVariable("tenant", "acme", priority=2, origin="gossip:agent-8 (accepted)"),
        "base_url": ContextVariable("base_url", "http://x", origin="identity"),
    })
    text = "\n".join(b.text for b in StackPromptBuilder().blocks(SPEC, SPEC.steps[0], state))
    assert "region: eu-west (tentative, from gossip)" in text
    assert "tenant: acme (accepted by quorum)" in text
    assert "base_url: http://x\n" in text + "\n"
