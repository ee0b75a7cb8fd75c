"""The context map: LWW registers, add-wins sets, metadata, deltas, digests, persistence."""

from __future__ import annotations

import pytest

from mesh.errors import DecodeError
from mesh.gossip import ContextMap, Delta, HybridLogicalClock, decode_delta, encode_delta
from protocols import canonical_hash


class Wall:
    def __init__(self, ms: int = 1_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def _map(replica: str, wall: Wall | None = None) -> ContextMap:
    return ContextMap("wf", replica, clock=HybridLogicalClock(wall_ms=wall or Wall()))


def _sync(a: ContextMap, b: ContextMap) -> None:
    a.merge(b.delta_since(0))
    b.merge(a.delta_since(0))


def test_last_writer_wins_and_ties_break_by_origin():
    a, b = _map("a"), _map("b")
    a.set("token", "from-a")
    b.set("token", "from-b")  # same wall ms and logical: origin "b" > "a" wins
    _sync(a, b)
    assert a.value("token") == b.value("token") == "from-b"
    assert a == b


def test_a_write_after_seeing_a_value_wins_even_with_a_slower_wall_clock():
    a, b = _map("a", Wall(10_000)), _map("b", Wall(1_000))
    a.set("x", 1)
    b.merge(a.delta_since(0))
    b.set("x", 2)  # b's wall clock is behind, but its HLC moved past a's write
    a.merge(b.delta_since(0))
    assert a.value("x") == b.value("x") == 2


def test_metadata_travels_and_expiry_hides_entries():
    a, b = _map("a"), _map("b")
    a.set("session", "s1", priority=0, expires_at_ms=5_000, secret=True)
    b.merge(a.delta_since(0))
    entry = b.get("session")
    assert entry is not None
    assert (entry.priority, entry.expires_at_ms, entry.secret, entry.status) == (0, 5_000, True, "tentative")
    assert b.get("session", now_ms=4_999) is not None
    assert b.get("session", now_ms=5_000) is None
    assert b.value("session", "gone", now_ms=6_000) == "gone"
    with pytest.raises(ValueError, match="priority"):
        a.set("bad", 1, priority=4)


def test_delete_replicates_as_a_tombstone():
    a, b = _map("a"), _map("b")
    a.set("x", 1)
    _sync(a, b)
    b.delete("x")
    _sync(a, b)
    assert a.get("x") is None and b.get("x") is None
    assert a.entry("x").deleted  # type: ignore[union-attr]
    assert [n for n, _ in a.items()] == []


def test_add_wins_over_a_concurrent_remove():
    a, b = _map("a"), _map("b")
    a.add("ids", "o-1", "o-2")
    _sync(a, b)
    b.discard("ids", "o-1")  # b removes the o-1 it has seen...
    a.add("ids", "o-1")  # ...while a adds o-1 again concurrently
    _sync(a, b)
    assert a.value("ids") == b.value("ids") == ["o-1", "o-2"]
    b.discard("ids", "o-1")  # a remove that has seen every add removes it
    _sync(a, b)
    assert a.value("ids") == b.value("ids") == ["o-2"]


def test_mark_accepted_flips_only_the_voted_version_and_replicates():
    a, b = _map("a"), _map("b")
    entry = a.set("order", {"id": 7})
    _sync(a, b)
    assert not b.mark_accepted("order", canonical_hash({"id": 8}))
    assert b.mark_accepted("order", entry.value_hash)
    assert not b.mark_accepted("order", entry.value_hash)  # already accepted
    _sync(a, b)
    assert a.get("order").status == "accepted"  # type: ignore[union-attr]
    a.set("order", {"id": 9})  # a newer write is tentative again
    assert a.get("order").status == "tentative"  # type: ignore[union-attr]
    b.add("ids", 1, 2)
    assert b.mark_accepted("ids", canonical_hash([1, 2]))
    assert b.set_of("ids").status == "accepted"  # type: ignore[union-attr]


def test_delta_since_returns_only_what_changed():
    a = _map("a")
    a.set("x", 1)
    a.add("s", "e")
    version = a.version
    assert len(a.delta_since(version)) == 0
    a.set("y", 2)
    delta = a.delta_since(version)
    assert [e.name for e in delta.registers] == ["y"] and delta.sets == ()


def test_digest_detects_difference_and_missing_for_repairs_it():
    a, b = _map("a"), _map("b")
    for i in range(20):
        a.set(f"k{i}", i)
    a.add("ids", "x")
    b.merge(a.delta_since(0))
    assert a.digest(8) == b.digest(8)
    a.set("k3", "new")
    b.set("only-b", 1)
    da, db = a.digest(8), b.digest(8)
    differing = {i for i in range(8) if da[i] != db[i]}
    assert differing
    regs, sets = b.stamps(differing, 8)
    assert a.is_behind(regs, sets)  # b has only-b
    push = a.missing_for(regs, sets, differing, 8)
    assert [e.name for e in push.registers] == ["k3"]
    b.merge(push)
    a.merge(b.missing_for(*a.stamps(differing, 8), differing, 8))
    assert a == b and a.digest(8) == b.digest(8)


def test_to_bytes_round_trip_and_bad_bytes():
    a = _map("a")
    a.set("x", {"nested": [1, 2, b"\x00"]}, priority=2, secret=True)
    a.add("ids", "o-1", 3)
    a.delete("gone")
    restored = ContextMap.from_bytes(a.to_bytes(), replica_id="a2")
    assert restored == a
    assert restored.replica_id == "a2"
    assert restored.clock.last >= a.get("x").hlc  # type: ignore[union-attr]
    for bad, reason in ((b"\xc1", "malformed"), (b"\x80", "version")):
        with pytest.raises(DecodeError) as info:
            ContextMap.from_bytes(bad, replica_id="r")
        assert info.value.reason == reason


def test_delta_wire_compression_round_trips_and_rejects_corruption():
    a = _map("a")
    for i in range(50):
        a.set(f"var{i}", "the same long-ish value " * 4)
    delta = a.delta_since(0)
    payload = encode_delta(delta)
    assert payload.encoding == "zlib"
    assert len(payload.data) < len(delta.to_msgpack()) / 3
    decoded = decode_delta(payload)
    b = _map("b")
    b.merge(decoded)
    assert b == a
    tiny = _map("c")
    tiny.set("x", 1)
    small = encode_delta(Delta(tiny.delta_since(0).registers))
    assert small.encoding == "none"
    with pytest.raises(DecodeError) as info:
        decode_delta(payload.model_copy(update={"data": b"not zlib"}))
    assert info.value.reason == "malformed"
    with pytest.raises(DecodeError) as info:
        decode_delta(payload.model_copy(update={"encoding": "none", "data": b"\x81\xa1x\x01"}))
    assert info.value.reason == "schema"
