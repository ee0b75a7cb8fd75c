"""StepState serialization: round trip, and the fast packer equals packing ``asdict``."""

from __future__ import annotations

from dataclasses import asdict

import msgpack
import pytest

from mesh.runtime import StepState, TurnRecord, VariableEntry


def sample() -> StepState:
    return StepState(
        workflow_id="wf", step_id="s", role="r", turn=2,
        history=[TurnRecord(1, "a", {"x": [1, 2]}, "ok", "fine", ["token (filled)"]),
                 TurnRecord(2, "b", {}, "failed", "ActionError: boom", [], 1, 2, 3.5)],
        memory={"next_page": 3, "nested": {"k": [1, "2"]}},
        outputs={"records": {"P1": {"dob": None}}},
        variables={"auth_token": VariableEntry("t0k", secret=True, priority=0, expires_at_ms=5)},
        discovered=["auth_token"], recent=["abc"], resumes=1, owner="me", epoch=4,
    )


def test_round_trip() -> None:
    state = sample()
    back = StepState.from_bytes(state.to_bytes())
    assert back == state


def test_fast_packer_is_byte_identical_to_asdict() -> None:
    state = sample()
    assert state.to_bytes() == msgpack.packb(asdict(state), use_bin_type=True)


def test_unserializable_value_says_what() -> None:
    state = sample()
    state.memory["bad"] = object()
    with pytest.raises(TypeError, match="cannot checkpoint a object"):
        state.to_bytes()
