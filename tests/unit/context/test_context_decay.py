"""Temporal decay of idle variables to cold storage, and their restoration."""

import pytest

from mesh.context import Block, DecayManager, Kind, LedgerAction, Priority
from mesh.errors import CheckpointNotFound, UsageError
from mesh.store import InMemoryBlobStore


def variable(name: str, value: str, turn: int = 0, **kw: object) -> Block:
    return Block(name, f"{name} = {value}", kind=Kind.VARIABLE, turn=turn, **kw)  # type: ignore[arg-type]


async def test_decay_and_restore_cycle() -> None:
    store = InMemoryBlobStore()
    decay = DecayManager(store, idle_turns=3)
    base_url = variable("base_url", "https://ehr.local/api/v2/patients?include=" + "x," * 40)
    patient = variable("patient_id", "77")
    mission = Block("mission", "Mission.", kind=Kind.MISSION)
    blocks: tuple[Block, ...] = (mission, base_url, patient)

    for turn in (1, 2):
        result = await decay.apply(blocks, turn=turn, mentions=[f"fetch patient_id page {turn}"])
        assert result.decayed == ()
        blocks = result.blocks

    result = await decay.apply(blocks, turn=3, mentions=["fetch patient_id page 3"])
    assert result.decayed == ("base_url",)
    assert decay.is_cold("base_url") and not decay.is_cold("patient_id")
    digest = next(b for b in result.blocks if b.id == "base_url")
    assert "\n" not in digest.text and "cold storage" in digest.text
    (entry,) = result.ledger.entries
    assert entry.action is LedgerAction.DECAYED and entry.tokens_after < entry.tokens_before
    assert entry.restore_key in store
    assert result.ledger.is_balanced()
    blocks = result.blocks

    result = await decay.apply(blocks, turn=4, mentions=["nothing relevant"])
    assert result.restored == () and result.decayed == ()
    blocks = result.blocks

    result = await decay.apply(blocks, turn=5, mentions=["call GET {base_url}/77"])
    assert result.restored == ("base_url",)
    assert base_url in result.blocks  # the original, exactly
    assert not decay.is_cold("base_url")


async def test_touch_counts_as_a_reference_and_p0_never_decays() -> None:
    decay = DecayManager(InMemoryBlobStore(), idle_turns=2)
    token = variable("auth_token", "[secret; injected at call time]", priority=Priority.P0)
    page = variable("page", "3; " + " ".join(f"row {i} ok" for i in range(30)))
    blocks = (token, page)
    decay.touch("page", 9)
    result = await decay.apply(blocks, turn=10)
    assert result.decayed == ()
    result = await decay.apply(result.blocks, turn=12)
    small = await DecayManager(InMemoryBlobStore(), idle_turns=1).apply((variable("n", "3"),), turn=9)
    assert small.decayed == ()  # its digest would be longer than the value
    assert result.decayed == ("page",)
    assert token in result.blocks


async def test_setting_a_cold_variable_anew_makes_it_live() -> None:
    decay = DecayManager(InMemoryBlobStore(), idle_turns=1)
    result = await decay.apply((variable("cursor", " ".join(f"c{i}" for i in range(40))),), turn=5)
    assert result.decayed == ("cursor",)
    fresh = variable("cursor", "def", turn=6)
    result = await decay.apply((fresh,), turn=6)
    assert result.blocks == (fresh,) and not decay.is_cold("cursor")


async def test_in_memory_blob_store_as_cold_store() -> None:
    store = InMemoryBlobStore()
    await store.put("k", b"v")
    assert await store.get("k") == b"v"
    with pytest.raises(CheckpointNotFound):
        await store.get("missing")
    await store.aclose()
    with pytest.raises(UsageError):
        await store.get("k")
