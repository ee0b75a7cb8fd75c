"""Semantic compression: a value over its token budget is kept whole in cold storage.

The map (and so gossip) then carries a short preview, the hash of the full value and a pointer
(``cold_ref``); any peer can fetch and check the full value with ``ColdValues.resolve``. Cold
values live in a ``mesh.store.BlobStore`` (files, S3, memory), the mesh's one blob-by-key seam.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from mesh.errors import CheckpointNotFound, PermanentError
from mesh.gossip._entries import VariableEntry
from mesh.store.base import BlobStore
from protocols.canonical import legacy_canonical_hash
from protocols.votes import canonical_hash

__all__ = [
    "ColdValueError",
    "ColdValues",
    "CompactedValue",
    "CompactionOptions",
    "approx_tokens",
]


def approx_tokens(text: str) -> int:
    """A cheap token estimate: one token per four characters."""
    return len(text) // 4


class ColdValueError(PermanentError):
    """A cold value is missing or does not match the hash gossiped for it."""


@dataclass(frozen=True, slots=True)
class CompactionOptions:
    """When a value goes cold and what stays in the map."""

    token_budget: int = 512
    """Values counted above this many tokens are moved to cold storage."""
    preview_chars: int = 200
    """Characters of the value's text kept in the map as a preview (none for secrets)."""
    count_tokens: Callable[[str], int] = field(default=approx_tokens)
    """Token counter (e.g. a tiktoken encoder's ``len(encode(text))``)."""
    key_prefix: str = "cold/"
    """Prefix of cold-store keys."""


@dataclass(frozen=True, slots=True)
class CompactedValue:
    """What to write into the map for a value."""

    value: Any
    """The value itself, or its preview when cold."""
    value_hash: str
    """Hash of the full value."""
    cold_ref: str = ""
    """Cold-store key when cold, else empty."""
    tokens: int = 0
    """Token count of the full value."""


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=repr, sort_keys=True)
    except (TypeError, ValueError):
        return repr(value)


class ColdValues:
    """Moves oversized values to a ``BlobStore`` and brings them back, checking their hash."""

    def __init__(self, store: BlobStore, *, options: CompactionOptions | None = None) -> None:
        """Keep cold values in ``store``."""
        self.store = store
        self.options = options or CompactionOptions()

    async def compact(self, workflow_id: str, name: str, value: Any, *, secret: bool = False) -> CompactedValue:
        """Keep ``value`` inline if within budget, else store it cold and return a preview."""
        text = _as_text(value)
        tokens = self.options.count_tokens(text)
        value_hash = canonical_hash(value)
        if tokens <= self.options.token_budget:
            return CompactedValue(value, value_hash, "", tokens)
        key = f"{self.options.key_prefix}{workflow_id}/{name}/{value_hash}"
        await self.store.put(key, msgpack.packb(value, use_bin_type=True))
        preview = None if secret else text[: self.options.preview_chars] + "..."
        return CompactedValue(preview, value_hash, key, tokens)

    async def resolve(self, entry: VariableEntry) -> Any:
        """The full value of ``entry``, fetched from cold storage when it is cold."""
        if not entry.cold_ref:
            return entry.value
        try:
            data = await self.store.get(entry.cold_ref)
        except CheckpointNotFound:
            raise ColdValueError(f"cold value of {entry.name!r} is missing at {entry.cold_ref}") from None
        value = msgpack.unpackb(data, raw=False)
        # Values stored before the v2 (injective) hash still carry a v1 hash: check those too.
        if entry.value_hash not in (canonical_hash(value), legacy_canonical_hash(value)):
            raise ColdValueError(f"cold value of {entry.name!r} at {entry.cold_ref} does not match its hash")
        return value
