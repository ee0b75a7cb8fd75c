"""Injective, type-tagged canonical encoding for everything the mesh hashes or signs.

Two values encode alike only if they are the same value of the same type: every item starts
with a one-byte type tag, strings, bytes and integers carry their length, containers their item
count, and maps are sorted by the encoding of their keys. So a map and a list of ``[key, value]``
pairs, a string and its bytes, ``1``, ``1.0`` and ``True`` all encode (and hash) differently.

Lists and tuples share a tag on purpose: the wire (msgpack) turns a tuple into a list, and a
value must hash the same before and after it travelled. Sets are sorted like map keys.

The encoder is iterative (no recursion limit on deep values) and refuses cycles and types it
does not know with ``CanonicalEncodingError``.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Mapping
from typing import Any

import msgpack

__all__ = [
    "CANONICAL_HASH_PERSON",
    "CanonicalEncodingError",
    "canonical_bytes",
    "canonical_hash",
    "legacy_canonical_hash",
]

CANONICAL_HASH_PERSON = b"mesh-canon/v2"
"""BLAKE2b personalisation of ``canonical_hash`` (v1 was the ambiguous msgpack-of-pairs form)."""

_NONE, _TRUE, _FALSE = b"N", b"T", b"F"
_INT, _FLOAT, _STR, _BYTES = b"i", b"f", b"s", b"b"
_LIST, _MAP, _SET = b"l", b"m", b"e"
_NAN = struct.pack(">d", math.nan)


class CanonicalEncodingError(ValueError):
    """A value cannot be encoded canonically (an unknown type or a cycle)."""


def _length(n: int) -> bytes:
    return n.to_bytes(8, "big")


def _scalar(value: Any) -> bytes | None:
    # bool before int: True is an int in Python but must never encode like 1.
    if value is None:
        return _NONE
    if value is True:
        return _TRUE
    if value is False:
        return _FALSE
    if isinstance(value, int):
        digits = str(int(value)).encode("ascii")
        return _INT + _length(len(digits)) + digits
    if isinstance(value, float):
        # Every NaN is one value; -0.0 keeps its sign (msgpack keeps it too).
        return _FLOAT + (_NAN if math.isnan(value) else struct.pack(">d", value))
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
        return _STR + _length(len(raw)) + raw
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return _BYTES + _length(len(raw)) + raw
    return None


def canonical_bytes(value: Any) -> bytes:
    """The canonical encoding of ``value`` (None, bool, int, float, str, bytes, list, tuple, map, set)."""
    results: list[bytes] = []
    # Work items: ("visit", value) or ("build", tag, count, container id).
    work: list[tuple[Any, ...]] = [("visit", value)]
    active: set[int] = set()
    while work:
        item = work.pop()
        if item[0] == "build":
            _, tag, count, ident = item
            active.discard(ident)
            parts = results[len(results) - count:] if count else []
            del results[len(results) - count:]
            if tag == _MAP:
                pairs = sorted(zip(parts[0::2], parts[1::2], strict=True))
                body = b"".join(k + v for k, v in pairs)
                results.append(_MAP + _length(len(pairs)) + body)
            elif tag == _SET:
                unique = sorted(set(parts))
                results.append(_SET + _length(len(unique)) + b"".join(unique))
            else:
                results.append(_LIST + _length(count) + b"".join(parts))
            continue
        current = item[1]
        scalar = _scalar(current)
        if scalar is not None:
            results.append(scalar)
            continue
        if isinstance(current, Mapping):
            tag, children = _MAP, [part for kv in current.items() for part in kv]
        elif isinstance(current, list | tuple):
            tag, children = _LIST, list(current)
        elif isinstance(current, set | frozenset):
            tag, children = _SET, list(current)
        else:
            raise CanonicalEncodingError(f"cannot encode a value of type {type(current).__name__} canonically")
        ident = id(current)
        if ident in active:
            raise CanonicalEncodingError("cannot encode a value that contains itself")
        active.add(ident)
        work.append(("build", tag, len(children), ident))
        work.extend(("visit", child) for child in reversed(children))
    return results[0]


def canonical_hash(value: Any) -> str:
    """A stable hex hash of ``value`` over its canonical encoding (distinct values, distinct hashes)."""
    return hashlib.blake2b(canonical_bytes(value), digest_size=16, person=CANONICAL_HASH_PERSON).hexdigest()


def _legacy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return [[_legacy(k), _legacy(v)] for k, v in sorted(value.items(), key=lambda kv: repr(kv[0]))]
    if isinstance(value, list | tuple):
        return [_legacy(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_legacy(v) for v in value), key=repr)
    return value


def legacy_canonical_hash(value: Any) -> str:
    """The v1 hash (ambiguous: a map and its pairs collide). Only for checking data persisted before v2.

    Never use it for anything voted on or signed.
    """
    packed = msgpack.packb(_legacy(value), use_bin_type=True)
    return hashlib.blake2b(packed, digest_size=16).hexdigest()
