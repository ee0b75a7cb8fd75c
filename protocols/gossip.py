"""Gossip payloads: context-variable deltas, compact digests and sync requests.

A delta's entries travel as one compressed msgpack blob (``DeltaBody``) inside ``GossipDelta``,
so the envelope codec validates the outer shape and ``mesh.gossip`` validates the inner one
after decompressing it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from protocols.hlc import HlcTimestamp
from protocols.registry import Payload, register_kind

__all__ = [
    "DeltaBody",
    "GossipDelta",
    "GossipDigest",
    "GossipSyncRequest",
    "RegisterStamp",
    "RegisterState",
    "SetMeta",
    "SetState",
    "SetTag",
]

EntryStatus = Literal["tentative", "accepted"]


class _Wire(BaseModel):
    """Nested wire models: immutable, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class RegisterState(_Wire):
    """One version of a last-writer-wins context variable."""

    name: str
    """Variable name."""
    value: Any = None
    """The value (or a summary when ``cold_ref`` is set; None for a deletion)."""
    hlc: HlcTimestamp
    """When the origin wrote it."""
    origin: str
    """Agent id of the writer; breaks HLC ties."""
    value_hash: str
    """Hash of the full value (the cold copy's hash when the value is kept cold)."""
    priority: int = Field(default=1, ge=0, le=3)
    """Context priority, 0 = never evicted."""
    expires_at_ms: int | None = None
    """Wall-clock expiry in Unix milliseconds."""
    secret: bool = False
    """Never rendered in logs, spans, events or scratchpads."""
    status: EntryStatus = "tentative"
    """``accepted`` once a quorum voted for this exact version."""
    cold_ref: str = ""
    """Cold-storage key of the full value, when it was over its token budget."""
    deleted: bool = False
    """A tombstone: the variable was removed at ``hlc``."""


class RegisterStamp(_Wire):
    """The per-key digest of a register: enough to order two versions without their values."""

    hlc: HlcTimestamp
    origin: str
    status: EntryStatus
    value_hash: str


class SetTag(_Wire):
    """The unique tag of one add to an add-wins set (who added it, when)."""

    hlc: HlcTimestamp
    origin: str


class SetMeta(_Wire):
    """Metadata of a set variable, itself a last-writer-wins register."""

    hlc: HlcTimestamp = HlcTimestamp(0, 0)
    origin: str = ""
    priority: int = Field(default=1, ge=0, le=3)
    expires_at_ms: int | None = None
    secret: bool = False
    status: EntryStatus = "tentative"


class SetState(_Wire):
    """The full state of one add-wins set: tagged adds and removed tags."""

    name: str
    adds: tuple[tuple[SetTag, Any], ...] = ()
    """``(tag, element)`` pairs; an element is present while one of its tags is not removed."""
    removed: tuple[SetTag, ...] = ()
    """Tags observed by a remove (tombstones)."""
    meta: SetMeta = SetMeta()


class DeltaBody(_Wire):
    """What a delta blob decompresses to."""

    registers: tuple[RegisterState, ...] = ()
    sets: tuple[SetState, ...] = ()


@register_kind("gossip.delta")
class GossipDelta(Payload):
    """Changed context variables of one workflow (the envelope's ``workflow_id``)."""

    to: str = ""
    """Agent id it answers, or empty for everyone."""
    encoding: Literal["none", "zlib"] = "none"
    """How ``data`` is compressed."""
    data: bytes
    """A msgpack-encoded ``DeltaBody``, compressed as ``encoding`` says."""
    entries: int = Field(default=0, ge=0)
    """Number of registers plus sets, for metrics without decoding."""


@register_kind("gossip.digest")
class GossipDigest(Payload):
    """A compact summary of a replica: one short hash per key bucket."""

    buckets: tuple[bytes, ...]
    """Hash of the per-key stamps in each bucket (buckets by hash of the key)."""
    entries: int = Field(default=0, ge=0)
    """Number of keys summarised."""


@register_kind("gossip.sync")
class GossipSyncRequest(Payload):
    """Per-key stamps of the buckets that differed; the target pushes what the sender misses."""

    to: str
    """Agent id that should answer."""
    bucket_count: int = Field(ge=1)
    """How many buckets the digest had (so both sides bucket keys the same way)."""
    buckets: tuple[int, ...]
    """Which buckets the stamps cover."""
    registers: dict[str, RegisterStamp] = Field(default_factory=dict)
    sets: dict[str, bytes] = Field(default_factory=dict)
    """Hash of each set's full state."""
    reply: bool = False
    """True when this request answers another; the target then pushes but does not ask back."""
