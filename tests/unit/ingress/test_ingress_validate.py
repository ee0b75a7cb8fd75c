"""Task-event validation: the schema mesh prints, every generated bad event refused with its reason."""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.specs import RECONCILIATION
from mesh.ingress import TaskEventRejected, WorkflowCatalog, parse_task_event
from protocols import TASK_EVENT_SCHEMA, load_workflow_spec
from tests.task_events import bad_events, good_event, line

CATALOG = WorkflowCatalog.from_dir(RECONCILIATION.parent)


def test_schema_is_a_valid_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(TASK_EVENT_SCHEMA)


def test_good_event_resolves_to_the_named_spec_with_variables_and_a_stable_workflow_id() -> None:
    event = good_event(source="urn:a", event_id="e-1", variables={"ehr_base_url": "http://x"})
    first = parse_task_event(line(event).encode(), CATALOG)
    again = parse_task_event(line(event).encode(), CATALOG)
    assert first.spec == load_workflow_spec(RECONCILIATION)
    assert first.variables == {"ehr_base_url": "http://x"}
    assert first.workflow_id == again.workflow_id  # a replayed event maps to the same workflow
    other = parse_task_event(line(good_event(source="urn:b", event_id="e-1")).encode(), CATALOG)
    assert other.workflow_id != first.workflow_id and other.dedupe_id != first.dedupe_id


def test_explicit_workflow_id_and_inline_spec_are_used() -> None:
    spec = json.loads(json.dumps(load_workflow_spec(RECONCILIATION).model_dump(mode="json")))
    event = good_event(workflow_id="my-wf.1")
    del event["data"]["workflow"]
    event["data"]["spec"] = spec
    request = parse_task_event(line(event).encode(), WorkflowCatalog())
    assert request.workflow_id == "my-wf.1"
    assert request.spec.name == spec["name"]


@pytest.mark.parametrize(("label", "text", "reason"), list(bad_events()), ids=[b[0] for b in bad_events()])
def test_generated_bad_events_are_refused_with_their_reason(label: str, text: str, reason: str) -> None:
    with pytest.raises(TaskEventRejected) as err:
        parse_task_event(text.encode(), CATALOG)
    assert err.value.reason == reason, f"{label}: {err.value}"
    assert str(err.value)


def test_oversize_non_utf8_and_tombstones_are_refused() -> None:
    big = line(good_event(variables={"pad": "x" * 5000})).encode()
    with pytest.raises(TaskEventRejected) as err:
        parse_task_event(big, CATALOG, max_bytes=4096)
    assert err.value.reason == "oversize"
    for raw in (b"\xff\xfe{}", None):
        with pytest.raises(TaskEventRejected) as err:
            parse_task_event(raw, CATALOG)
        assert err.value.reason == "malformed"


def test_errors_never_echo_the_offending_value() -> None:
    secret = "tok-9f2c71d0-SECRET-value"
    for path, value in ((("id",), 12345), (("data", "workflow_id"), f"bad {secret}"), (("source",), [secret])):
        event = good_event()
        target = event
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
        with pytest.raises(TaskEventRejected) as err:
            parse_task_event(line(event).encode(), CATALOG)
        assert secret not in str(err.value) and "12345" not in str(err.value)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_any_bytes_are_accepted_or_refused_with_a_reason(raw: bytes) -> None:
    try:
        parse_task_event(raw, CATALOG)
    except TaskEventRejected as exc:
        assert exc.reason in {"malformed", "schema", "oversize", "unknown_workflow", "invalid_spec"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["specversion", "type", "source", "id", "data", "time", "ext"]), json_values)
def test_any_json_in_any_attribute_is_accepted_or_refused_with_a_reason(attr: str, value: object) -> None:
    event = good_event()
    event[attr] = value
    try:
        parse_task_event(line(event).encode(), CATALOG)
    except TaskEventRejected as exc:
        assert exc.reason in {"schema", "unknown_workflow", "invalid_spec"}
