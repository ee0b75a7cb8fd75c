"""Counting ballots of one proposal against a fixed validator set."""

from __future__ import annotations

from typing import Literal

from mesh.quorum._ballots import verify_ballot
from mesh.security import Keyring
from protocols.votes import Ballot, Proposal

__all__ = ["BallotOutcome", "Outcome", "Tally", "max_faulty", "quorum_size"]

Outcome = Literal["pending", "accepted", "rejected"]

BallotOutcome = Literal[
    "counted", "duplicate", "equivocation", "faulty", "forged", "not_validator", "wrong_proposal"
]
"""What ``Tally.add`` did with a ballot."""


def max_faulty(n: int) -> int:
    """The most faulty validators ``n`` validators tolerate: f with n >= 3f + 1."""
    return max(0, (n - 1) // 3)


def quorum_size(n: int) -> int:
    """Matching ballots needed to decide: 2f + 1 when n = 3f + 1.

    In general the smallest q with 2q - n > f: any two quorums share more than f validators, so
    at least one honest one, and an honest validator never endorses two conflicting values.
    """
    return (n + max_faulty(n)) // 2 + 1


class Tally:
    """Ballots on one proposal: one per validator, equivocators discarded, decided at quorum.

    Only ballots from ``validators`` count, and only if signed by the voter's key when a
    keyring is given. A voter sending two different ballots is faulty: both are discarded and
    it is never counted again on this proposal. ``accepted`` needs ``quorum_size(n)`` accept
    ballots naming the proposal's value hash; ``rejected`` follows a quorum of other ballots
    or when acceptance became impossible. A decision is final.
    """

    def __init__(self, proposal: Proposal, validators: frozenset[str] | set[str], *, keyring: Keyring | None = None) -> None:
        """Tally ``proposal`` over ``validators``; verify ballot signatures against ``keyring``."""
        if not validators:
            raise ValueError("a tally needs at least one validator")
        self.proposal = proposal
        self.validators = frozenset(validators)
        self.keyring = keyring
        self.quorum = quorum_size(len(self.validators))
        self.ballots: dict[str, Ballot] = {}
        """Counted ballots by voter."""
        self.faulty: set[str] = set()
        """Voters caught equivocating on this proposal."""
        self.outcome: Outcome = "pending"
        self.decided_by_quorum = False
        """True when the decision had a quorum behind it (not merely acceptance becoming impossible)."""

    def matches(self, ballot: Ballot) -> bool:
        """Whether a ballot endorses exactly this proposal's value."""
        return ballot.verdict == "accept" and ballot.value_hash == self.proposal.value_hash

    @property
    def accepts(self) -> int:
        """Counted ballots endorsing the proposal's value."""
        return sum(1 for b in self.ballots.values() if self.matches(b))

    @property
    def rejects(self) -> int:
        """Counted ballots not endorsing it (rejections, or accepts of another value)."""
        return len(self.ballots) - self.accepts

    def add(self, ballot: Ballot, *, verified: bool = False) -> BallotOutcome:
        """Count one ballot (``verified``: its signature was already checked); say what happened."""
        if ballot.proposal_id != self.proposal.id:
            return "wrong_proposal"
        voter = ballot.voter
        if voter not in self.validators:
            return "not_validator"
        if voter in self.faulty:
            return "faulty"
        if self.keyring is not None and not verified and not verify_ballot(ballot, self.keyring):
            return "forged"
        previous = self.ballots.get(voter)
        if previous is not None:
            if (previous.verdict, previous.value_hash) == (ballot.verdict, ballot.value_hash):
                return "duplicate"
            del self.ballots[voter]
            self.faulty.add(voter)
            return "equivocation"
        self.ballots[voter] = ballot
        self._decide()
        return "counted"

    def certificate(self) -> tuple[Ballot, ...]:
        """The ballots that carry the decision (matching ones when accepted)."""
        if self.outcome == "accepted":
            return tuple(b for _, b in sorted(self.ballots.items()) if self.matches(b))
        return tuple(b for _, b in sorted(self.ballots.items()) if not self.matches(b))

    def _decide(self) -> None:
        if self.outcome != "pending":
            return
        accepts = self.accepts
        if accepts >= self.quorum:
            self.outcome, self.decided_by_quorum = "accepted", True
        elif self.rejects >= self.quorum:
            self.outcome, self.decided_by_quorum = "rejected", True
        elif accepts + len(self.validators - self.ballots.keys() - self.faulty) < self.quorum:
            self.outcome = "rejected"

    def __repr__(self) -> str:
        return (
            f"Tally(proposal={self.proposal.id}, outcome={self.outcome}, accepts={self.accepts}, "
            f"rejects={self.rejects}, quorum={self.quorum}/{len(self.validators)}, faulty={sorted(self.faulty)})"
        )
