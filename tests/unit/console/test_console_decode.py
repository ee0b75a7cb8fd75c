"""The console reads checkpoints and gossip maps without the data key: secrets stay masked, never opened."""

from __future__ import annotations

import msgpack

from mesh.console import decode_checkpoint, decode_context_map
from mesh.gossip import ContextMap
from mesh.gossip._persist import seal_secrets
from mesh.runtime.state import StepState, TurnRecord
from mesh.runtime.variables import ContextVariable
from mesh.security import REDACTED, DataCipher, generate_data_key

TOKEN = "at-" + "9f8e7d6c5b4a39281706f5e4"


def test_a_checkpoint_is_decoded_with_its_secret_masked_and_turns_kept() -> None:
    cipher = DataCipher.from_text(generate_data_key())
    state = StepState(workflow_id="wf-1", step_id="fetch", role="fetch", turn=2)
    state.variables["auth_token"] = ContextVariable("auth_token", TOKEN, secret=True, origin="identity")
    state.variables["base_url"] = ContextVariable("base_url", "http://ehr.example", origin="identity")
    state.history.append(
        TurnRecord(
            1,
            "fetch_page",
            {"page": 1},
            "ok",
            "2 records",
            ["token (corrected)"],
            prompt_tokens=812,
            prompt_budget=4096,
            evicted=1,
            ledger=["- dropped h1"],
        )
    )
    data = state.to_bytes(cipher)
    assert TOKEN.encode() not in data
    decoded = decode_checkpoint(data)
    assert decoded["variables"]["auth_token"]["value"] == REDACTED
    assert decoded["variables"]["base_url"]["value"] == "http://ehr.example"
    turn = decoded["history"][0]
    assert (turn["prompt_tokens"], turn["prompt_budget"], turn["evicted"], turn["injected"]) == (
        812,
        4096,
        1,
        ["token (corrected)"],
    )


def test_a_gossip_map_is_decoded_with_status_and_secrets_masked() -> None:
    cmap = ContextMap("wf-1", "fetch-1")
    cmap.set("auth_token", TOKEN, secret=True)
    cmap.set("patients", 12)
    sealed = seal_secrets(cmap.to_bytes(), DataCipher.from_text(generate_data_key()))
    assert TOKEN.encode() not in sealed
    entries = decode_context_map(sealed)
    assert entries["auth_token"]["value"] == REDACTED and entries["auth_token"]["secret"] is True
    assert entries["patients"]["value"] == 12 and entries["patients"]["status"] == "tentative"
    # an unsealed secret (a map saved before sealing existed) is masked all the same
    assert decode_context_map(cmap.to_bytes())["auth_token"]["value"] == REDACTED
    assert msgpack.unpackb(cmap.to_bytes(), raw=False)["workflow_id"] == "wf-1"
