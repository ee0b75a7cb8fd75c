"""Proposals and signed ballots."""

from __future__ import annotations

import time
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mesh.security import Keyring
from protocols.events import deterministic_event_id
from protocols.votes import Ballot, Proposal, ballot_signing_bytes, canonical_hash

__all__ = ["DEFAULT_BALLOT_TTL_MS", "BallotSigner", "make_proposal", "verify_ballot"]

DEFAULT_BALLOT_TTL_MS = 15 * 60 * 1000
"""How long a ballot counts after it was cast: a certificate older than this is refused."""


def make_proposal(
    workflow_id: str, fact_kind: str, key: str, value: Any, *, proposer: str, epoch: int = 0
) -> Proposal:
    """A proposal whose id is derived from its content, so a re-sent proposal folds to one."""
    value_hash = canonical_hash(value)
    return Proposal(
        id=deterministic_event_id("proposal", workflow_id, fact_kind, key, value_hash, proposer, epoch),
        workflow_id=workflow_id,
        fact_kind=fact_kind,
        key=key,
        value=value,
        value_hash=value_hash,
        proposer=proposer,
        epoch=epoch,
    )


class BallotSigner:
    """Casts ballots as one validator, signed with its Ed25519 key.

    Ballots carry their own signature (besides the envelope's) so a decision can ship its
    ballots as a certificate any peer can check.
    """

    def __init__(self, voter: str, private_key: Ed25519PrivateKey) -> None:
        """Vote as ``voter``."""
        self.voter = voter
        self._private_key = private_key

    def cast(
        self,
        proposal: Proposal,
        verdict: Literal["accept", "reject"],
        *,
        reason: str = "",
        value_hash: str | None = None,
        expires_at_ms: int | None = None,
    ) -> Ballot:
        """A signed ballot on ``proposal`` at its epoch (``value_hash`` defaults to the proposal's).

        ``expires_at_ms`` defaults to now plus ``DEFAULT_BALLOT_TTL_MS``.
        """
        if expires_at_ms is None:
            expires_at_ms = time.time_ns() // 1_000_000 + DEFAULT_BALLOT_TTL_MS
        unsigned = Ballot(
            proposal_id=proposal.id,
            voter=self.voter,
            verdict=verdict,
            value_hash=proposal.value_hash if value_hash is None else value_hash,
            reason=reason,
            epoch=proposal.epoch,
            expires_at_ms=expires_at_ms,
        )
        return self.sign(unsigned)

    def sign(self, ballot: Ballot) -> Ballot:
        """``ballot`` with its signature set (its voter must be this signer's)."""
        if ballot.voter != self.voter:
            raise ValueError(f"signer {self.voter!r} cannot sign a ballot of {ballot.voter!r}")
        return ballot.model_copy(update={"signature": self._private_key.sign(ballot_signing_bytes(ballot))})

    def __repr__(self) -> str:
        return f"BallotSigner(voter={self.voter!r})"


def verify_ballot(ballot: Ballot, keyring: Keyring) -> bool:
    """Whether ``ballot`` is signed by its voter's key in ``keyring`` (expiry is the tally's business)."""
    key = keyring.get(ballot.voter)
    if key is None or not ballot.signature:
        return False
    try:
        key.verify(ballot.signature, ballot_signing_bytes(ballot))
    except InvalidSignature:
        return False
    return True
