"""The quorum book: every open vote an observer follows, with reputation and quarantine."""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from mesh.quorum._ballots import verify_ballot
from mesh.quorum._reputation import Reputation
from mesh.quorum._tally import BallotOutcome, Outcome, Tally
from mesh.security import Keyring
from protocols.votes import Ballot, FactDecided, Proposal, QuarantineEvent

__all__ = ["BookLimits", "BookResult", "Decision", "QuorumBook"]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class BookLimits:
    """Caps on what a book keeps from peers; whatever goes over is dropped and counted in ``stats``.

    A flood (junk ballots for proposals that never come, proposals nobody decides) costs at
    most these many entries, whoever sends it: the global caps bound memory, the per-sender caps
    stop one peer from crowding out the others.
    """

    max_buffered: int = 10_000
    """Ballots held for proposals not seen yet, in total (``dropped_buffer_full``)."""
    max_buffered_per_sender: int = 512
    """Of those, from one voter (``dropped_sender_cap``)."""
    max_buffered_per_proposal: int = 256
    """Of those, for one proposal id (``dropped_proposal_cap``)."""
    max_tallies: int = 20_000
    """Proposals followed; the oldest decided ones are forgotten first (``evicted_tallies``), and a
    new proposal is dropped when every one is still open (``dropped_tally_cap``)."""
    max_open_per_proposer: int = 2_000
    """Open (pending) proposals of one proposer (``dropped_proposer_cap``)."""
    max_slot_votes: int = 200_000
    """Remembered (voter, slot, epoch) endorsements for slot-equivocation checks; oldest first out."""
    now_ms: Callable[[], int] = field(default=_wall_ms)
    """Wall clock in Unix ms, for ballot expiry (injectable for tests)."""


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
        limits: BookLimits | None = None,
    ) -> None:
        """Follow votes among ``validators``; check ballot signatures with ``keyring``."""
        self.validators = frozenset(validators)
        self.keyring = keyring
        self.reputation = reputation or Reputation()
        self.limits = limits or BookLimits()
        self.tallies: dict[str, Tally] = {}
        self.stats: Counter[str] = Counter()
        """Ballots by what happened to them; ``dropped_*``: what a cap refused."""
        self._buffered: dict[str, list[Ballot]] = {}
        self._buffered_total = 0
        self._buffered_by_sender: Counter[str] = Counter()
        self._open_by_proposer: Counter[str] = Counter()
        self._slot_votes: OrderedDict[tuple[tuple[str, str, str], int, str], str] = OrderedDict()
        self._slot_floor: dict[tuple[str, str, str], int] = {}
        self._scored: dict[str, set[str]] = {}

    @property
    def buffered(self) -> int:
        """Ballots held for proposals not seen yet."""
        return self._buffered_total

    def decision(self, proposal_id: str) -> Decision | None:
        """The decision on ``proposal_id``, if decided."""
        tally = self.tallies.get(proposal_id)
        if tally is None or tally.outcome == "pending":
            return None
        return Decision(tally.proposal, tally.outcome, tally.certificate())

    def add_proposal(self, proposal: Proposal) -> BookResult:
        """Open a tally for ``proposal`` (idempotent) and count ballots that came before it.

        Refused (``stale_epoch``) when a later epoch of its slot was already accepted here, and
        dropped when over the caps of ``limits``.
        """
        if proposal.id in self.tallies:
            return BookResult("duplicate")
        slot = (proposal.workflow_id, proposal.fact_kind, proposal.key)
        if proposal.epoch < self._slot_floor.get(slot, 0):
            self._drop_buffered(proposal.id)
            self.stats["stale_epoch"] += 1
            return BookResult("stale_epoch")
        if self._open_by_proposer[proposal.proposer] >= self.limits.max_open_per_proposer:
            self.stats["dropped_proposer_cap"] += 1
            return BookResult("dropped")
        if len(self.tallies) >= self.limits.max_tallies and not self._evict_decided():
            self.stats["dropped_tally_cap"] += 1
            return BookResult("dropped")
        self.tallies[proposal.id] = Tally(proposal, self.validators, keyring=self.keyring)
        self._open_by_proposer[proposal.proposer] += 1
        decision: Decision | None = None
        events: list[QuarantineEvent] = []
        for ballot in self._drop_buffered(proposal.id):
            result = self.add_ballot(ballot)
            decision = decision or result.decision
            events.extend(result.quarantined)
        return BookResult("proposal", decision, tuple(events))

    def add_ballot(self, ballot: Ballot) -> BookResult:
        """Count one ballot; return what happened, a decision if it made one, and any quarantine."""
        if self.reputation.is_quarantined(ballot.voter):
            self.stats["quarantined"] += 1
            return BookResult("quarantined")
        if ballot.voter not in self.validators:
            # It could never count: not worth a byte of buffer.
            self.stats["not_validator"] += 1
            return BookResult("not_validator")
        if ballot.expires_at_ms <= self.limits.now_ms():
            self.stats["expired"] += 1
            return BookResult("expired")
        tally = self.tallies.get(ballot.proposal_id)
        if tally is None:
            return self._buffer(ballot)
        if ballot.epoch != tally.proposal.epoch:
            self.stats["wrong_epoch"] += 1
            return BookResult("wrong_epoch")
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
            self._closed(tally)
        if tally.decided_by_quorum:
            events.extend(self._score(tally))
        return BookResult(outcome, decision, tuple(events))

    def add_certificate(self, proposal: Proposal, decided: FactDecided) -> BookResult:
        """Check a ``vote.decided`` certificate as a fresh observer would: count its ballots here.

        Each ballot goes through ``add_ballot`` (signature, validator set, expiry, epoch), so an
        old certificate whose ballots expired, or one of an epoch superseded here, decides nothing.
        """
        if decided.proposal_id != proposal.id or decided.value_hash != proposal.value_hash:
            self.stats["certificate_mismatch"] += 1
            return BookResult("certificate_mismatch")
        opened = self.add_proposal(proposal)
        decision, events = opened.decision, list(opened.quarantined)
        for ballot in decided.ballots:
            if ballot.proposal_id != proposal.id:
                continue
            result = self.add_ballot(ballot)
            decision = decision or result.decision
            events.extend(result.quarantined)
        return BookResult("certificate" if decision else "certificate_insufficient", decision, tuple(events))

    # -- caps ----------------------------------------------------------------------------

    def _buffer(self, ballot: Ballot) -> BookResult:
        limits = self.limits
        buffered = self._buffered.get(ballot.proposal_id)
        if self._buffered_total >= limits.max_buffered:
            reason = "dropped_buffer_full"
        elif self._buffered_by_sender[ballot.voter] >= limits.max_buffered_per_sender:
            reason = "dropped_sender_cap"
        elif buffered is not None and len(buffered) >= limits.max_buffered_per_proposal:
            reason = "dropped_proposal_cap"
        else:
            self._buffered.setdefault(ballot.proposal_id, []).append(ballot)
            self._buffered_total += 1
            self._buffered_by_sender[ballot.voter] += 1
            self.stats["buffered"] += 1
            return BookResult("buffered")
        self.stats[reason] += 1
        return BookResult("dropped")

    def _drop_buffered(self, proposal_id: str) -> list[Ballot]:
        ballots = self._buffered.pop(proposal_id, [])
        self._buffered_total -= len(ballots)
        for ballot in ballots:
            self._buffered_by_sender[ballot.voter] -= 1
            if self._buffered_by_sender[ballot.voter] <= 0:
                del self._buffered_by_sender[ballot.voter]
        return ballots

    def _closed(self, tally: Tally) -> None:
        proposer = tally.proposal.proposer
        self._open_by_proposer[proposer] -= 1
        if self._open_by_proposer[proposer] <= 0:
            del self._open_by_proposer[proposer]
        p = tally.proposal
        if tally.outcome == "accepted":
            slot = (p.workflow_id, p.fact_kind, p.key)
            self._slot_floor[slot] = max(self._slot_floor.get(slot, 0), p.epoch)

    def _evict_decided(self) -> bool:
        """Forget the oldest decided tallies (a tenth of the cap at a time); False if all are open."""
        batch = max(1, self.limits.max_tallies // 10)
        victims = [pid for pid, t in self.tallies.items() if t.outcome != "pending"][:batch]
        for pid in victims:
            del self.tallies[pid]
            self._scored.pop(pid, None)
        self.stats["evicted_tallies"] += len(victims)
        return bool(victims)

    # -- slots and scores ----------------------------------------------------------------

    def _check_slot(self, tally: Tally, ballot: Ballot) -> BallotOutcome:
        p = tally.proposal
        slot = (p.workflow_id, p.fact_kind, p.key)
        key = (slot, p.epoch, ballot.voter)
        endorsed = self._slot_votes.setdefault(key, p.value_hash)
        self._slot_votes.move_to_end(key)
        while len(self._slot_votes) > self.limits.max_slot_votes:
            self._slot_votes.popitem(last=False)
        if endorsed == p.value_hash:
            return "counted"
        # Accepting two values for one slot and epoch: discard the voter on every open tally there.
        for other in self.tallies.values():
            q = other.proposal
            same = (q.workflow_id, q.fact_kind, q.key) == slot and q.epoch == p.epoch
            if same and (other.outcome == "pending" or other is tally):
                other.ballots.pop(ballot.voter, None)
                other.faulty.add(ballot.voter)
        self.stats["slot_equivocation"] += 1
        return "equivocation"

    def _score(self, tally: Tally) -> list[QuarantineEvent]:
        events = []
        accepted = tally.outcome == "accepted"
        scored = self._scored.setdefault(tally.proposal.id, set())
        for voter, ballot in sorted(tally.ballots.items()):
            if voter in scored:
                continue
            scored.add(voter)
            event = self.reputation.record(voter, agreed=tally.matches(ballot) == accepted)
            if event is not None:
                events.append(event)
        return events

    def __repr__(self) -> str:
        return f"QuorumBook(validators={len(self.validators)}, tallies={len(self.tallies)})"
