"""Vote payloads: proposals of facts, signed ballots, decisions, quarantine notices."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from protocols.canonical import canonical_bytes, canonical_hash
from protocols.registry import Payload, register_kind

__all__ = [
    "Ballot",
    "FactDecided",
    "Proposal",
    "QuarantineEvent",
    "ballot_signing_bytes",
    "canonical_hash",
]


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
    epoch: int = Field(default=0, ge=0)
    """Proposal epoch of the slot (workflow, fact kind, key): a later epoch supersedes an earlier one.

    Validators endorse one value per slot and epoch and never vote on an epoch below the highest
    they voted in, so once they moved on, certificates of older epochs are refused."""


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
    epoch: int = Field(default=0, ge=0)
    """The proposal's epoch (signed: a ballot cannot be moved to another epoch)."""
    expires_at_ms: int = Field(default=0, ge=0)
    """Unix ms after which the ballot no longer counts (signed); 0 = never (unsigned legacy form)."""
    signature: bytes = b""
    """Ed25519 signature of ``ballot_signing_bytes(...)`` by ``voter``."""


def ballot_signing_bytes(ballot: Ballot) -> bytes:
    """The bytes a ballot signature covers: every field but the signature, canonically encoded."""
    return canonical_bytes(
        [
            "mesh-ballot/2",
            ballot.proposal_id,
            ballot.voter,
            ballot.verdict,
            ballot.value_hash,
            ballot.reason,
            ballot.epoch,
            ballot.expires_at_ms,
        ]
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
