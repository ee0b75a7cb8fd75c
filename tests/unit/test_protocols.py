"""protocols/: envelope codec, decode errors, workflow spec validation."""

from __future__ import annotations

import json

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocols
from protocols import (
    Envelope,
    EnvelopeCodec,
    EnvelopeDecodeError,
    HlcTimestamp,
    StepCompleted,
    VariableRecord,
    WorkflowSpec,
    WorkflowSpecError,
    WorkflowSubmitted,
    deterministic_event_id,
    load_workflow_spec,
)

SPEC = {
    "name": "demo",
    "mission": "reconcile",
    "steps": [
        {"id": "a", "role": "identity"},
        {"id": "b", "role": "fetch", "depends_on": ["a"], "params": {"n": 3}},
        {"id": "c", "role": "report", "depends_on": ["b"]},
    ],
}


def _env(**kw: object) -> Envelope:
    payload = StepCompleted(outputs={"x": [1, 2]}, variables=(VariableRecord(name="v", value="1"),), turns=2)
    return Envelope.of(payload, sender="agent-1", workflow_id="wf-1", step_id="b", hlc=HlcTimestamp(5, 2), **kw)


def test_roundtrip_keeps_every_field() -> None:
    codec = EnvelopeCodec()
    env = _env(trace={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}, signature=b"sig")
    back = codec.decode(codec.encode(env))
    assert (back.id, back.kind, back.sender, back.workflow_id, back.step_id) == (
        env.id, "workflow.step_completed", "agent-1", "wf-1", "b",
    )
    assert back.hlc == HlcTimestamp(5, 2)
    assert back.trace == env.trace
    assert back.signature == b"sig"
    assert back.payload_model(StepCompleted) == env.payload_model(StepCompleted)
    assert back.signed_body == EnvelopeCodec.encode_body(env)


def test_encode_does_not_mutate_payload() -> None:
    payload = {"outputs": {"x": [1]}, "turns": 1}
    env = Envelope(kind="workflow.step_completed", sender="s", payload=payload)
    EnvelopeCodec().encode(env)
    assert payload == {"outputs": {"x": [1]}, "turns": 1}


@pytest.mark.parametrize(
    ("data", "reason", "fragment"),
    [
        (b"\xc1", "malformed", "malformed msgpack"),
        (msgpack.packb([1, b"x"]), "structure", "[schema_version, body, signature]"),
        (msgpack.packb([99, b"", b""]), "version", "schema_version 99"),
        (msgpack.packb([1, msgpack.packb({"id": "x"}), b""]), "structure", "missing field(s) k, s"),
    ],
)
def test_decode_errors_say_what(data: bytes, reason: str, fragment: str) -> None:
    with pytest.raises(EnvelopeDecodeError) as info:
        EnvelopeCodec().decode(data)
    assert info.value.reason == reason
    assert fragment in str(info.value)


def test_decode_oversize() -> None:
    codec = EnvelopeCodec(max_bytes=2048)
    with pytest.raises(EnvelopeDecodeError) as info:
        codec.decode(b"\x00" * 4096)
    assert info.value.reason == "oversize"
    assert "4096 bytes exceeds the limit of 2048" in str(info.value)


def test_decode_unknown_kind_and_schema_violation() -> None:
    codec = EnvelopeCodec()
    unknown = Envelope(kind="no.such.kind", sender="s", payload={})
    with pytest.raises(EnvelopeDecodeError) as info:
        codec.decode(codec.encode(unknown))
    assert info.value.reason == "unknown_kind"
    bad = Envelope(kind="workflow.step_completed", sender="s", payload={"turns": -1, "bogus": 1})
    with pytest.raises(EnvelopeDecodeError) as info:
        codec.decode(codec.encode(bad))
    assert info.value.reason == "schema"
    assert "field 'turns'" in str(info.value) and "field 'bogus'" in str(info.value)


def test_wrong_field_type_named() -> None:
    body = {"id": "x", "k": 5, "s": "s", "w": "", "st": "", "h": [0, 0], "tr": {}, "p": {}}
    data = msgpack.packb([1, msgpack.packb(body), b""])
    with pytest.raises(EnvelopeDecodeError, match="field 'kind' must be a string, got int"):
        EnvelopeCodec().decode(data)


@given(st.binary(max_size=300))
def test_decode_never_raises_anything_else(data: bytes) -> None:
    try:
        EnvelopeCodec().decode(data)
    except EnvelopeDecodeError as exc:
        assert exc.reason in {"malformed", "structure", "version", "unknown_kind", "schema", "oversize"}


def test_encode_refuses_oversize() -> None:
    env = Envelope(kind="workflow.step_failed", sender="s", payload={"error": "x" * 5000})
    with pytest.raises(ValueError, match="over the limit"):
        EnvelopeCodec(max_bytes=1024).encode(env)


def test_spec_ok_and_orders() -> None:
    spec = WorkflowSpec.parse(SPEC)
    assert spec.topological_order() == ["a", "b", "c"]
    assert spec.ancestors("c") == ["a", "b"]
    env = Envelope.of(WorkflowSubmitted(spec=spec), sender="cli", workflow_id="w")
    codec = EnvelopeCodec()
    assert codec.decode(codec.encode(env)).payload_model(WorkflowSubmitted).spec == spec


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda s: s["steps"].append({"id": "a", "role": "x"}), "duplicate step id 'a' (steps[0] and steps[3])"),
        (lambda s: s["steps"][1].update(depends_on=["zz"]), "step 'b' (steps[1]) depends on unknown step 'zz'"),
        (lambda s: s["steps"][0].update(depends_on=["c"]), "dependency cycle: a -> c -> b -> a"),
        (lambda s: s["steps"][0].update(depends_on=["a"]), "step 'a' (steps[0]) depends on itself"),
        (lambda s: s["steps"][0].update(role="bad role!"), "field 'steps.0.role'"),
        (lambda s: s.update(steps=[]), "at least one step"),
        (lambda s: s["steps"][0].update(limits={"max_turns": 0}), "field 'steps.0.limits.max_turns'"),
    ],
)
def test_spec_errors_name_the_problem(mutate, fragment: str) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(json.dumps(SPEC))
    mutate(data)
    with pytest.raises(WorkflowSpecError) as info:
        WorkflowSpec.parse(data, source="x.yaml")
    assert fragment in str(info.value)
    assert "x.yaml" in str(info.value)


def test_load_yaml_and_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    y = tmp_path / "w.yaml"
    y.write_text(yaml.safe_dump(SPEC))
    j = tmp_path / "w.json"
    j.write_text(json.dumps(SPEC))
    assert load_workflow_spec(y) == load_workflow_spec(j)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(WorkflowSpecError, match=r"bad.yaml:\d+:\d+: invalid YAML"):
        load_workflow_spec(bad)
    with pytest.raises(WorkflowSpecError, match="cannot read"):
        load_workflow_spec(tmp_path / "missing.yaml")


def test_deterministic_event_id() -> None:
    assert deterministic_event_id("wf", "step", "completed") == deterministic_event_id("wf", "step", "completed")
    assert deterministic_event_id("wf", "step", "completed") != deterministic_event_id("wf", "step2", "completed")


def test_public_surface_is_pinned() -> None:
    expected = {
        "DEFAULT_MAX_ENVELOPE_BYTES", "SCHEMA_VERSION", "Envelope", "EnvelopeCodec", "EnvelopeDecodeError",
        "HlcTimestamp", "format_validation_error", "new_envelope_id", "Payload", "kind_of", "payload_type",
        "register_kind", "registered_kinds", "DeadLetter", "StepCompleted", "StepEscalated", "StepFailed",
        "StepProgress", "StepResumeRequested", "StepStarted", "TraceEvent", "VariableRecord",
        "WorkflowCompleted", "WorkflowSubmitted", "deterministic_event_id", "StepLimits", "StepSpec",
        "WorkflowSpec", "WorkflowSpecError", "load_workflow_spec", "Topics",
    }
    # gossip and vote payloads are added by mesh/gossip's owners; the core set must stay.
    assert expected <= set(protocols.__all__)
    for name in protocols.__all__:
        assert hasattr(protocols, name), name


@settings(max_examples=40, deadline=None)
@given(n=st.integers(min_value=2, max_value=1000), unknown=st.booleans())
def test_spec_errors_stay_short_however_big_the_hostile_spec(n: int, unknown: bool) -> None:
    # A hostile spec chooses how many step ids an error could name (a cycle through every step,
    # a dependency on an unknown id among a thousand known ones): the message stays bounded.
    steps = [{"id": f"s{i}", "role": "r", "depends_on": [f"s{(i + 1) % n}"]} for i in range(n)]
    if unknown:
        steps = [{"id": f"s{i}", "role": "r"} for i in range(n)] + [{"id": "z", "role": "r", "depends_on": ["nope"]}]
    with pytest.raises(WorkflowSpecError) as info:
        WorkflowSpec.parse({"name": "w", "steps": steps})
    message = str(info.value)
    assert ("unknown step 'nope'" if unknown else "dependency cycle: s") in message
    assert len(message) < 600, message[:200]
