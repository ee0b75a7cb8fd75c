"""ContextVariable: one type from discovery to re-hydration, and its conversions (checkpoint, wire, gossip)."""

from __future__ import annotations

import string
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.gossip import ContextMap, encode_delta
from mesh.roles import NewVariable
from mesh.runtime import ActionOutcome, ContextVariable, StepState
from mesh.security import DataCipher, generate_data_key, is_sealed
from protocols import Envelope, EnvelopeCodec, StepCompleted, VariableRecord

KEY = DataCipher.from_text(generate_data_key())
CODEC = EnvelopeCodec()

# Names and plain text never contain "-": a secret ("secret-...") cannot hide inside them.
_TEXT = st.text(alphabet=string.ascii_letters + string.digits + " _.:/", max_size=20)
NAMES = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=16)
PLAIN = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=10,
)
SECRETS = st.text(alphabet=string.ascii_letters + string.digits, min_size=12, max_size=40).map(
    lambda s: "secret-" + s
)
EXPIRY = st.none() | st.integers(min_value=0, max_value=2**53)
PRIORITY = st.integers(min_value=0, max_value=3)


@st.composite
def variables(draw: st.DrawFn) -> ContextVariable:
    """A variable as an action reports it (the runtime's own fields left at their defaults)."""
    secret = draw(st.booleans())
    return ContextVariable(
        draw(NAMES),
        draw(SECRETS if secret else PLAIN),
        secret=secret,
        priority=draw(PRIORITY),
        expires_at_ms=draw(EXPIRY),
    )


def _result_bytes(records: tuple[VariableRecord, ...]) -> bytes:
    env = Envelope.of(
        StepCompleted(variables=records, turns=1), sender="agent-1", workflow_id="wf", step_id="a"
    )
    return CODEC.encode(env)


@settings(max_examples=300, deadline=None)
@given(st.lists(variables(), max_size=6, unique_by=lambda v: v.name))
def test_variables_round_trip_through_the_wire_and_secrets_stay_off_it(
    found: list[ContextVariable],
) -> None:
    refs = {v.name: f"secret:wf:{v.name}" for v in found if v.secret}
    data = _result_bytes(tuple(v.to_record(ref=refs.get(v.name, "")) for v in found))
    for v in found:
        if v.secret:
            assert v.value.encode() not in data, "a secret's value is in the encoded result"
    back = CODEC.decode(data).payload_model(StepCompleted).variables
    assert [r.name for r in back] == [v.name for v in found]
    for v, record in zip(found, back, strict=True):
        assert (record.secret, record.priority, record.expires_at_ms) == (
            v.secret,
            v.priority,
            v.expires_at_ms,
        )
        assert record.ref == refs.get(v.name, "")
        # Re-hydrated by a dependant: a secret's value comes from the store by its ref, not the record.
        stored = v.value if v.secret else None
        rehydrated = ContextVariable.from_record(record, origin="a", secret_value=stored)
        assert rehydrated == ContextVariable(
            v.name,
            v.value,
            secret=v.secret,
            priority=v.priority,
            expires_at_ms=v.expires_at_ms,
            origin="a",
        )
        if v.secret:
            assert record.value is None
            assert (
                ContextVariable.from_record(record, origin="a").value is None
            )  # not in the store: no value


def test_a_secret_record_carries_no_value_even_without_a_ref() -> None:
    record = ContextVariable("auth_token", "tok-0123456789", secret=True, priority=0).to_record()
    assert record == VariableRecord(name="auth_token", value=None, secret=True, priority=0)
    assert b"tok-0123456789" not in _result_bytes((record,))
    # A plain variable never carries a ref.
    assert ContextVariable("n", 3).to_record(ref="ignored").ref == ""


@settings(max_examples=100, deadline=None)
@given(st.lists(variables(), max_size=6, unique_by=lambda v: v.name))
def test_gossip_holds_a_secret_as_its_ref_and_rehydrates_only_plain_values(
    found: list[ContextVariable],
) -> None:
    cmap = ContextMap("wf", "agent-1")
    for v in found:
        cmap.set(**v.to_gossip(ref=f"secret:wf:{v.name}"))
    data = encode_delta(cmap.delta_since(0), compress_min_bytes=1 << 30).data
    for v in found:
        version = cmap.get(v.name)
        assert version is not None
        gossiped = ContextVariable.from_gossip(version)
        if v.secret:
            assert v.value.encode() not in data
            assert version.value == f"secret:wf:{v.name}"
            assert (
                gossiped is None
            )  # a dependant reads a secret from its ancestor's result, never from gossip
        else:
            assert gossiped == ContextVariable(
                v.name,
                v.value,
                priority=max(v.priority, 2),
                expires_at_ms=v.expires_at_ms,
                origin="gossip:agent-1 (tentative)",
            )


def test_a_deleted_gossip_version_is_not_rehydrated() -> None:
    cmap = ContextMap("wf", "agent-1")
    cmap.set(**ContextVariable("region", "eu").to_gossip())
    assert ContextVariable.from_gossip(cmap.delete("region")) is None


def test_a_gossiped_set_rehydrates_with_its_elements() -> None:
    cmap = ContextMap("wf", "agent-2")
    cmap.add("tenants", "acme")
    [(_, version)] = list(cmap.items())
    assert ContextVariable.from_gossip(version) == ContextVariable(
        "tenants", ["acme"], priority=2, origin="gossip:? (tentative)"
    )


# -- checkpoints --------------------------------------------------------------------------------


def _todays_checkpoint(sealed: bytes) -> dict[str, Any]:
    """A checkpoint as written before ContextVariable (variables keyed by name, no name field)."""
    return {
        "workflow_id": "wf",
        "step_id": "fetch",
        "role": "fetch",
        "status": "running",
        "turn": 3,
        "history": [],
        "memory": {"next_page": 2},
        "outputs": {},
        "variables": {
            "auth_token": {
                "value": sealed,
                "secret": True,
                "priority": 0,
                "expires_at_ms": 1_900_000_000_000,
                "origin": "identity",
                "last_used_turn": 3,
            },
            "ehr_base_url": {
                "value": "http://ehr",
                "secret": False,
                "priority": 1,
                "expires_at_ms": None,
                "origin": "workflow",
                "last_used_turn": 0,
            },
        },
        "discovered": [],
        "owner": "fetch-1",
        "epoch": 2,
    }


def test_a_checkpoint_written_in_the_old_layout_loads() -> None:
    sealed = KEY.seal("tok-old-layout-0001", context=("checkpoint", "wf", "fetch", "auth_token"))
    state = StepState.from_bytes(msgpack.packb(_todays_checkpoint(sealed), use_bin_type=True), KEY)
    assert state.variables == {
        "auth_token": ContextVariable(
            "auth_token",
            "tok-old-layout-0001",
            secret=True,
            priority=0,
            expires_at_ms=1_900_000_000_000,
            origin="identity",
            last_used_turn=3,
        ),
        "ehr_base_url": ContextVariable("ehr_base_url", "http://ehr", origin="workflow"),
    }
    assert (state.turn, state.memory, state.epoch) == (3, {"next_page": 2}, 2)
    # Written again, it loads again, and the secret is still sealed in the bytes.
    data = state.to_bytes(KEY)
    assert b"tok-old-layout-0001" not in data
    assert is_sealed(msgpack.unpackb(data, raw=False)["variables"]["auth_token"]["value"])
    assert StepState.from_bytes(data, KEY) == state


def test_a_checkpoint_entry_takes_its_name_from_the_key_and_ignores_unknown_fields() -> None:
    raw = {"name": "other", "value": 1, "priority": 2, "added_by_a_newer_writer": True}
    assert ContextVariable.from_checkpoint("count", raw) == ContextVariable("count", 1, priority=2)
    # Before priorities were checked an action could report 5: the step still loads.
    assert ContextVariable.from_checkpoint("n", {"value": 1, "priority": 5}).priority == 3


# -- in the step --------------------------------------------------------------------------------


def test_adopting_a_discovery_leaves_the_actions_object_alone() -> None:
    found = ContextVariable("total", 10)
    outcome = ActionOutcome(summary="done", variables=(found,))
    held = outcome.variables[0].adopted(origin="tally", turn=4)
    held.last_used_turn = 9
    assert (held.origin, held.last_used_turn) == ("tally", 9)
    assert found == ContextVariable("total", 10)


def test_new_variable_is_the_same_type_for_roles_written_before() -> None:
    assert NewVariable is ContextVariable
    assert NewVariable("x", 1, priority=0) == ContextVariable("x", 1, priority=0)


def test_the_repr_masks_a_secret() -> None:
    text = repr(ContextVariable("auth_token", "tok-visible-no-more", secret=True))
    assert "tok-visible-no-more" not in text and "[REDACTED]" in text
    assert "http://ehr" in str(ContextVariable("base_url", "http://ehr"))


def test_a_priority_out_of_range_is_refused_when_the_action_reports_it() -> None:
    with pytest.raises(ValueError, match="priority of variable 'x' must be 0-3"):
        ContextVariable("x", 1, priority=4)
