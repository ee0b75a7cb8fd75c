"""StepState serialization: round trip, and the fast packer equals packing ``asdict``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import msgpack
import pytest

from mesh.runtime import ContextVariable, StepState, TurnRecord
from mesh.security import DataCipher, SealedValueError, generate_data_key, is_sealed


def sample() -> StepState:
    return StepState(
        workflow_id="wf", step_id="s", role="r", turn=2,
        history=[TurnRecord(1, "a", {"x": [1, 2]}, "ok", "fine", ["token (filled)"]),
                 TurnRecord(2, "b", {}, "failed", "ActionError: boom", [], 1, 2, 3.5)],
        memory={"next_page": 3, "nested": {"k": [1, "2"]}},
        outputs={"records": {"P1": {"dob": None}}},
        variables={"auth_token": ContextVariable("auth_token", "t0k", secret=True, priority=0, expires_at_ms=5)},
        discovered=["auth_token"], recent=["abc"], resumes=1, owner="me", epoch=4,
    )


def test_round_trip() -> None:
    state = sample()
    back = StepState.from_bytes(state.to_bytes())
    assert back == state


def test_fast_packer_is_byte_identical_to_asdict() -> None:
    state = sample()
    state.variables["auth_token"].secret = False  # secrets are sealed: checked below
    expected = asdict(state)
    for entry in expected["variables"].values():
        del entry["name"]  # stored without its name, the entry's key (the layout of earlier releases)
    assert state.to_bytes() == msgpack.packb(expected, use_bin_type=True)


def test_a_checkpoint_loads_on_an_agent_of_the_previous_release() -> None:
    # During a rolling upgrade a step moves between pods of two releases: the previous one built
    # each variable as ``VariableEntry(**entry)``, with exactly these fields.
    @dataclass
    class PreviousVariableEntry:
        value: Any
        secret: bool = False
        priority: int = 1
        expires_at_ms: int | None = None
        origin: str = ""
        last_used_turn: int = 0

    raw = msgpack.unpackb(sample().to_bytes(KEY), raw=False)
    for entry in raw["variables"].values():
        PreviousVariableEntry(**entry)


KEY = DataCipher.from_text(generate_data_key())


def test_secret_values_are_sealed_in_the_bytes_and_open_again() -> None:
    state = sample()
    state.variables["auth_token"].value = "tok-plaintext-0123456789"
    data = state.to_bytes(KEY)
    assert b"tok-plaintext-0123456789" not in data
    raw = msgpack.unpackb(data, raw=False)
    assert is_sealed(raw["variables"]["auth_token"]["value"])
    assert StepState.from_bytes(data, KEY) == state
    assert state.variables["auth_token"].value == "tok-plaintext-0123456789"  # to_bytes left it alone


def test_a_sealed_secret_does_not_open_in_another_step_or_under_another_key() -> None:
    state = sample()
    data = state.to_bytes(KEY)
    # The same bytes presented as another step's checkpoint: the associated data differs.
    raw = msgpack.unpackb(data, raw=False)
    raw["step_id"] = "other-step"
    with pytest.raises(SealedValueError, match="copied from another workflow, step or variable"):
        StepState.from_bytes(msgpack.packb(raw, use_bin_type=True), KEY)
    with pytest.raises(SealedValueError, match="does not hold"):
        StepState.from_bytes(data, DataCipher.from_text(generate_data_key()))


def test_unserializable_value_says_what() -> None:
    state = sample()
    state.memory["bad"] = object()
    with pytest.raises(TypeError, match="cannot checkpoint a object"):
        state.to_bytes()


def test_a_checkpoint_of_a_newer_release_loads_without_its_new_fields(caplog: pytest.LogCaptureFixture) -> None:
    # The other direction of a rolling upgrade: fields this release does not know are dropped.
    state = sample()
    state.variables["auth_token"].secret = False
    raw = msgpack.unpackb(state.to_bytes(), raw=False)
    raw["from_the_future"] = 1
    raw["history"][0]["also_new"] = [1, 2]
    raw["archive"]["newer_digest"] = "x"
    raw["variables"]["auth_token"]["new_flag"] = True
    with caplog.at_level("WARNING", logger="mesh.runtime.state"):
        back = StepState.from_bytes(msgpack.packb(raw, use_bin_type=True))
        StepState.from_bytes(msgpack.packb(raw, use_bin_type=True))
    assert back == state
    named = [r.getMessage() for r in caplog.records]
    assert sum("StepState.from_the_future" in m for m in named) == 1  # named once, not per load
    assert any("TurnRecord.also_new" in m for m in named)
