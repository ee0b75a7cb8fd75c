"""The canonical encoding is injective: distinct values (by type and content) never encode alike."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.quorum import make_proposal
from protocols import (
    Ballot,
    CanonicalEncodingError,
    ballot_signing_bytes,
    canonical_bytes,
    canonical_hash,
)
from protocols.canonical import legacy_canonical_hash


def _values(ints: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | ints | st.floats() | st.text(max_size=8) | st.binary(max_size=8)
    keys = st.none() | st.booleans() | st.integers(-50, 50) | st.text(max_size=4) | st.binary(max_size=4)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=12,
    )


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.binary(max_size=8)
values = _values(st.integers(min_value=-(2**70), max_value=2**70))
wire_values = _values(st.integers(min_value=-(2**63), max_value=2**64 - 1))  # what msgpack carries


def _normal(value: Any) -> Any:
    """What makes two values "the same": type-exact content (1, 1.0 and True differ; list == tuple)."""
    if isinstance(value, dict):
        return ("map", frozenset((_normal(k), _normal(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return ("list", tuple(_normal(v) for v in value))
    if isinstance(value, float):
        return ("float", struct_bits(value))
    return (type(value).__name__, value)


def struct_bits(value: float) -> bytes:
    import struct

    return struct.pack(">d", math.nan if math.isnan(value) else value)


@settings(max_examples=200, deadline=None)
@given(values, values)
def test_distinct_values_never_share_an_encoding_or_hash(a: Any, b: Any) -> None:
    same = _normal(a) == _normal(b)
    assert (canonical_bytes(a) == canonical_bytes(b)) == same
    assert (canonical_hash(a) == canonical_hash(b)) == same


@settings(max_examples=100, deadline=None)
@given(values)
def test_a_map_never_encodes_like_its_pairs_or_its_items(value: Any) -> None:
    if isinstance(value, dict):
        pairs = [[k, v] for k, v in value.items()]
        assert canonical_hash(value) != canonical_hash(pairs)
        assert canonical_hash(value) != canonical_hash(sorted(pairs, key=repr))


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=4), scalars, max_size=6), st.randoms(use_true_random=False))
def test_key_order_does_not_matter(mapping: dict[str, Any], rnd: Any) -> None:
    items = list(mapping.items())
    rnd.shuffle(items)
    assert canonical_bytes(dict(items)) == canonical_bytes(mapping)


@settings(max_examples=200, deadline=None)
@given(wire_values)
def test_the_hash_survives_the_wire(value: Any) -> None:
    # A proposal value travels as msgpack; validators recompute the hash from the decoded value.
    decoded = msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False, strict_map_key=False)
    assert canonical_hash(decoded) == canonical_hash(value)


def test_type_tags_separate_lookalikes() -> None:
    lookalikes = [1, 1.0, True, "1", b"1", [1], {1: None}, None, 0, False, 0.0, "", b"", [], {}, [[]], [{}]]
    assert len({canonical_hash(v) for v in lookalikes}) == len(lookalikes)


def test_regression_dict_and_pairs_proposals_differ() -> None:
    """Issue #8 defect 2: a dict and its [key, value] pairs used to get the same proposal id and hash."""
    as_map = make_proposal("wf", "variable", "order", {"drug": "warfarin", "dose_mg": 5}, proposer="p")
    as_pairs = make_proposal("wf", "variable", "order", [["dose_mg", 5], ["drug", "warfarin"]], proposer="p")
    assert as_map.value_hash != as_pairs.value_hash
    assert as_map.id != as_pairs.id
    # The old hash had exactly this collision; it is kept only to check data persisted before v2.
    assert legacy_canonical_hash({"drug": "warfarin", "dose_mg": 5}) == legacy_canonical_hash(
        [["dose_mg", 5], ["drug", "warfarin"]]
    )


def test_deep_values_do_not_recurse() -> None:
    deep: Any = None
    for _ in range(5_000):
        deep = [deep]
    assert canonical_hash(deep) != canonical_hash([deep])


def test_cycles_and_unknown_types_are_clear_errors() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(CanonicalEncodingError, match="contains itself"):
        canonical_bytes(loop)
    with pytest.raises(CanonicalEncodingError, match="type object"):
        canonical_bytes({"x": object()})


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=6), st.text(max_size=6), st.sampled_from(["accept", "reject"]), st.integers(0, 9))
def test_ballot_signing_bytes_bind_every_field(pid: str, reason: str, verdict: str, epoch: int) -> None:
    ballot = Ballot(proposal_id=pid, voter="v", verdict=verdict, value_hash="h", reason=reason, epoch=epoch)  # type: ignore[arg-type]
    changed = [
        ballot.model_copy(update={"reason": reason + "x"}),
        ballot.model_copy(update={"epoch": epoch + 1}),
        ballot.model_copy(update={"expires_at_ms": 1}),
        ballot.model_copy(update={"proposal_id": pid + reason, "reason": ""}) if reason else None,
    ]
    for other in changed:
        if other is not None:
            assert ballot_signing_bytes(other) != ballot_signing_bytes(ballot)
