"""The quorum book: every open vote an observer follows, with reputation and quarantine."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from mesh.quorum._ballots import verify_ballot
from mesh.quorum._reputation import Reputation
from mesh.quorum._tally import BallotOutcome, Outcome, Tally
from mesh.security import Keyring
from protocols.votes import Ballot, FactDecided, Proposal, QuarantineEvent

__all__ = ["BookResult", "Decision", "QuorumBook"]

_MAX_BUFFERED_PER_PROPOSAL = 256
"""Ballots kept for a proposal not seen yet; more are dropped (a flood cannot grow memory)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """A proposal's final outcome with the ballots that carry it."""

    proposal: Proposal
    outcome: Outcome
    certificate: tuple[Ballot, ...]

    def to_event(self) -> FactDecided:
        """The ``vote.decided`` payload announcing it."""
        return FactDecided(
            proposal_id=self.proposal.id,
            workflow_id=self.proposal.workflow_id,
            key=self.proposal.key,
            outcome=self.outcome,  # type: ignore[arg-type]
            value_hash=self.proposal.value_hash,
            ballots=self.certificate,
        )


@dataclass(frozen=True, slots=True)
class BookResult:
    """What adding a proposal or a ballot did."""

    outcome: BallotOutcome | str
    """The tally's answer, or ``buffered`` / ``quarantined`` / ``proposal``."""
    decision: Decision | None = None
    """Set when this call decided the proposal."""
    quarantined: tuple[QuarantineEvent, ...] = field(default=())
    """Peers this call put in quarantine."""


class QuorumBook:
    """Tallies of every proposal an observer follows, over one validator set.

    Besides per-proposal equivocation (two ballots on one proposal), a voter that accepts two
    different values for the same slot (workflow, fact kind, key) is equivocating: honest
    validators endorse one value per slot. Equivocators and peers whose reputation falls under
    the threshold are quarantined; their ballots are ignored from then on. Not thread-safe.
    """

    def __init__(
        self,
        validators: frozenset[str] | set[str],
        *,
        keyring: Keyring | None = None,
        reputation: Reputation | None = None,
    ) -> None:
        """Follow votes among ``validators``; check ballot signatures with ``keyring``."""
        self.validators = frozenset(validators)
        self.keyring = keyring
        self.reputation = reputation or Reputation()
        self.tallies: dict[str, Tally] = {}
        self.stats: Counter[str] = Counter()
        """Ballots by what happened to them."""
        self._buffered: dict[str, list[Ballot]] = {}
        self._slot_votes: dict[tuple[tuple[str, str, str], str], str] = {}
        self._scored: set[tuple[str, str]] = set()

    def decision(self, proposal_id: str) -> Decision | None:
        """The decision on ``proposal_id``, if decided."""
        tally = self.tallies.get(proposal_id)
        if tally is None or tally.outcome == "pending":
            return None
        return Decision(tally.proposal, tally.outcome, tally.certificate())

    def add_proposal(self, proposal: Proposal) -> BookResult:
        """Open a tally for ``proposal`` (idempotent) and count ballots that came before it."""
        if proposal.id in self.tallies:
            return BookResult("duplicate")
        self.tallies[proposal.id] = Tally(proposal, self.validators, keyring=self.keyring)
        decision: Decision | None = None
        events: list[QuarantineEvent] = []
        for ballot in self._buffered.pop(proposal.id, []):
            result = self.add_ballot(ballot)
            decision = decision or result.decision
            events.extend(result.quarantined)
        return BookResult("proposal", decision, tuple(events))

    def add_ballot(self, ballot: Ballot) -> BookResult:
        """Count one ballot; return what happened, a decision if it made one, and any quarantine."""
        if self.reputation.is_quarantined(ballot.voter):
            self.stats["quarantined"] += 1
            return BookResult("quarantined")
        tally = self.tallies.get(ballot.proposal_id)
        if tally is None:
            buffered = self._buffered.setdefault(ballot.proposal_id, [])
            if len(buffered) < _MAX_BUFFERED_PER_PROPOSAL:
                buffered.append(ballot)
            self.stats["buffered"] += 1
            return BookResult("buffered")
        was_pending = tally.outcome == "pending"
        events: list[QuarantineEvent] = []
        verified = False
        outcome: BallotOutcome
        if ballot.voter in self.validators and tally.matches(ballot) and ballot.voter not in tally.faulty:
            # Check the slot before counting, so a slot equivocator never helps reach a quorum;
            # and only for authentic ballots, so a forgery cannot frame an honest voter.
            verified = self.keyring is None or verify_ballot(ballot, self.keyring)
            outcome = self._check_slot(tally, ballot) if verified else "forged"
        else:
            outcome = "counted"
        if outcome == "counted":
            outcome = tally.add(ballot, verified=verified)
        self.stats[outcome] += 1
        if outcome == "equivocation":
            event = self.reputation.record_equivocation(ballot.voter)
            if event is not None:
                events.append(event)
        decision = None
        if was_pending and tally.outcome != "pending":
            decision = Decision(tally.proposal, tally.outcome, tally.certificate())
        if tally.decided_by_quorum:
            events.extend(self._score(tally))
        return BookResult(outcome, decision, tuple(events))

    def _check_slot(self, tally: Tally, ballot: Ballot) -> BallotOutcome:
        p = tally.proposal
        key = ((p.workflow_id, p.fact_kind, p.key), ballot.voter)
        endorsed = self._slot_votes.setdefault(key, p.value_hash)
        if endorsed == p.value_hash:
            return "counted"
        # Accepting two values for one slot: discard the voter on every open tally of that slot.
        for other in self.tallies.values():
            q = other.proposal
            if (q.workflow_id, q.fact_kind, q.key) == key[0] and (other.outcome == "pending" or other is tally):
                other.ballots.pop(ballot.voter, None)
                other.faulty.add(ballot.voter)
        self.stats["slot_equivocation"] += 1
        return "equivocation"

    def _score(self, tally: Tally) -> list[QuarantineEvent]:
        events = []
        accepted = tally.outcome == "accepted"
        for voter, ballot in sorted(tally.ballots.items()):
            mark = (tally.proposal.id, voter)
            if mark in self._scored:
                continue
            self._scored.add(mark)
            event = self.reputation.record(voter, agreed=tally.matches(ballot) == accepted)
            if event is not None:
                events.append(event)
        return events

    def __repr__(self) -> str:
        return f"QuorumBook(validators={len(self.validators)}, tallies={len(self.tallies)})"
