"""Vote payloads: proposals of facts, signed ballots, decisions, quarantine notices."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal

import msgpack
from pydantic import Field

from protocols.registry import Payload, register_kind

__all__ = [
    "Ballot",
    "FactDecided",
    "Proposal",
    "QuarantineEvent",
    "ballot_signing_bytes",
    "canonical_hash",
]


def _canonical(value: Any) -> Any:
    # Maps are sorted by key so two peers hashing equal values get equal bytes.
    if isinstance(value, Mapping):
        return [[_canonical(k), _canonical(v)] for k, v in sorted(value.items(), key=lambda kv: repr(kv[0]))]
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_canonical(v) for v in value), key=repr)
    return value


def canonical_hash(value: Any) -> str:
    """A stable hex hash of a msgpack-able value (maps hashed independently of key order)."""
    packed = msgpack.packb(_canonical(value), use_bin_type=True)
    return hashlib.blake2b(packed, digest_size=16).hexdigest()


@register_kind("vote.proposal")
class Proposal(Payload):
    """A fact one agent wants the others to rely on, put to a vote."""

    id: str
    """Unique proposal id."""
    workflow_id: str
    fact_kind: str
    """Names the deterministic checker validators run, e.g. ``variable``, ``step_result``."""
    key: str
    """What the fact is about, e.g. a variable name."""
    value: Any = None
    value_hash: str
    """``canonical_hash(value)``; ballots name it so they cannot be moved to another value."""
    proposer: str


@register_kind("vote.ballot")
class Ballot(Payload):
    """One validator's verdict on one proposal, signed by the validator."""

    proposal_id: str
    voter: str
    verdict: Literal["accept", "reject"]
    value_hash: str
    """The hash of the value the voter checked."""
    reason: str = ""
    """Short why, for rejections."""
    signature: bytes = b""
    """Ed25519 signature of ``ballot_signing_bytes(...)`` by ``voter``."""


def ballot_signing_bytes(ballot: Ballot) -> bytes:
    """The bytes a ballot signature covers (every field but the signature)."""
    return msgpack.packb(
        ["ballot/1", ballot.proposal_id, ballot.voter, ballot.verdict, ballot.value_hash, ballot.reason],
        use_bin_type=True,
    )


@register_kind("vote.decided")
class FactDecided(Payload):
    """A proposal reached a decision; the ballots that carried it are the certificate."""

    proposal_id: str
    workflow_id: str
    key: str
    outcome: Literal["accepted", "rejected"]
    value_hash: str
    ballots: tuple[Ballot, ...] = ()


@register_kind("mesh.quarantine")
class QuarantineEvent(Payload):
    """A peer is quarantined: its gossip and ballots are ignored from now on."""

    peer: str
    reason: Literal["reputation", "equivocation"]
    reputation: float = Field(ge=0.0, le=1.0)
    threshold: float = Field(ge=0.0, le=1.0)
    observer: str = ""
    """Agent id that decided the quarantine."""
