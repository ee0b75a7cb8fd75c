"""Variable decay per step (mesh.runtime.decay) on the in-memory blob store: the clock, a value set
anew while cold, a decision naming the variable, and redaction before anything goes cold."""

from __future__ import annotations

from mesh.context import Block, Kind
from mesh.runtime.decay import VariableDecay
from mesh.store import InMemoryBlobStore

LONG = "value-" + "x" * 300


def _blocks(value: str = LONG) -> list[Block]:
    return [
        Block("task", "TASK: work", kind=Kind.TASK, seq=1 << 40),
        Block("var:big", f"big: {value}", kind=Kind.VARIABLE, seq=10),
        Block("var:tiny", "tiny: 1", kind=Kind.VARIABLE, seq=11),
    ]


def _text(blocks: list[Block], block_id: str) -> str:
    return next(b.text for b in blocks if b.id == block_id)


def _same(b: Block) -> Block:
    return b


async def test_idle_variable_goes_cold_and_comes_back_after_a_use() -> None:
    blobs = InMemoryBlobStore()
    decay = VariableDecay(blobs, "wf", "s", idle_turns=2)
    used = {"var:big": 0, "var:tiny": 0}
    out, lines = await decay.apply(_blocks(), turn=2, last_used=used, redact=_same)
    assert LONG in _text(out, "var:big") and not lines
    out, lines = await decay.apply(_blocks(), turn=3, last_used=used, redact=_same)
    assert LONG not in _text(out, "var:big") and "in cold storage" in _text(out, "var:big")
    assert [line.split(" (")[0] for line in lines] == ["- decayed var:big"]
    assert _text(out, "var:tiny") == "tiny: 1"  # a digest would be longer: not worth it
    assert await blobs.list("cold/wf/s/") == ["cold/wf/s/ctx/block/var:big"]
    out, lines = await decay.apply(_blocks(), turn=4, last_used=used, redact=_same)
    assert LONG not in _text(out, "var:big") and not lines  # still cold, nothing moved
    used["var:big"] = 4  # injected in turn 4
    out, lines = await decay.apply(_blocks(), turn=5, last_used=used, redact=_same)
    assert _text(out, "var:big") == f"big: {LONG}"
    assert [line.split(" (")[0] for line in lines] == ["- restored var:big"]


async def test_a_value_set_while_cold_is_live_and_a_mention_restores() -> None:
    decay = VariableDecay(InMemoryBlobStore(), "wf", "s", idle_turns=1)
    used = {"var:big": 0}
    out, _ = await decay.apply(_blocks(), turn=2, last_used=used, redact=_same)
    assert LONG not in _text(out, "var:big")
    changed = LONG.replace("x", "y")
    out, lines = await decay.apply(_blocks(changed), turn=3, last_used=used, redact=_same)
    assert _text(out, "var:big") == f"big: {changed}" and not lines
    out, _ = await decay.apply(_blocks(changed), turn=5, last_used=used, redact=_same)
    assert changed not in _text(out, "var:big")
    out, lines = await decay.apply(
        _blocks(changed), turn=6, last_used=used, redact=_same, mentions=["use var:big now"]
    )
    assert _text(out, "var:big") == f"big: {changed}" and lines[0].startswith("- restored var:big")


async def test_only_redacted_text_goes_cold() -> None:
    blobs = InMemoryBlobStore()
    secret = "tok-unit-decay-secret"
    decay = VariableDecay(blobs, "wf", "s", idle_turns=1)

    def redact(b: Block) -> Block:
        return b.replace(text=b.text.replace(secret, "[REDACTED]"))

    out, _ = await decay.apply(
        _blocks(f"{LONG} {secret}"), turn=3, last_used={"var:big": 0}, redact=redact
    )
    assert secret not in _text(out, "var:big")
    raw = await blobs.get("cold/wf/s/ctx/block/var:big")
    assert b"[REDACTED]" in raw and secret.encode() not in raw
