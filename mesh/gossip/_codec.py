"""Byte compression of deltas: msgpack, then zlib when it pays."""

from __future__ import annotations

import zlib
from typing import Literal

from mesh.errors import DecodeError
from mesh.gossip._map import Delta
from protocols.gossip import GossipDelta

__all__ = ["DEFAULT_COMPRESS_MIN_BYTES", "decode_delta", "encode_delta"]

DEFAULT_COMPRESS_MIN_BYTES = 256
"""Deltas smaller than this are sent raw: zlib's header and dictionary cost more than they save."""

_MAX_INFLATED_BYTES = 16 * 1_048_576
"""A delta may not inflate past this (a zip bomb would otherwise exhaust memory)."""


def encode_delta(
    delta: Delta, *, to: str = "", compress_min_bytes: int = DEFAULT_COMPRESS_MIN_BYTES, level: int = 6
) -> GossipDelta:
    """The payload carrying ``delta``, zlib-compressed when at least ``compress_min_bytes`` long."""
    raw = delta.to_msgpack()
    encoding: Literal["none", "zlib"] = "none"
    data = raw
    if len(raw) >= compress_min_bytes:
        packed = zlib.compress(raw, level)
        if len(packed) < len(raw):
            encoding, data = "zlib", packed
    return GossipDelta(to=to, encoding=encoding, data=data, entries=len(delta))


def decode_delta(payload: GossipDelta) -> Delta:
    """The delta a payload carries; raise ``DecodeError`` for corrupt or oversized data."""
    data = payload.data
    if payload.encoding == "zlib":
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(data, _MAX_INFLATED_BYTES)
        except zlib.error as exc:
            raise DecodeError(f"gossip delta is not valid zlib data: {exc}", reason="malformed") from None
        if inflater.unconsumed_tail:
            raise DecodeError(
                f"gossip delta inflates past {_MAX_INFLATED_BYTES} bytes", reason="oversize"
            )
    return Delta.from_msgpack(data)
