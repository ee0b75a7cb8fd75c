"""Validators: check a proposal independently and cast a signed ballot."""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable

from mesh.quorum._ballots import DEFAULT_BALLOT_TTL_MS, BallotSigner
from mesh.store import InMemoryVoteLedger, VoteLedger
from protocols.votes import Ballot, Proposal, canonical_hash

__all__ = ["Checker", "CheckerRegistry", "Judge", "Validator"]

Checker = Callable[[Proposal], bool | Awaitable[bool]]
"""A deterministic check of one kind of fact: True when the fact holds."""

Judge = Callable[[Proposal], Awaitable[bool]]
"""An optional second opinion (e.g. an LLM): True when it finds the fact plausible."""


class CheckerRegistry:
    """Deterministic checkers by fact kind."""

    def __init__(self) -> None:
        """An empty registry."""
        self._checkers: dict[str, Checker] = {}

    def register(self, fact_kind: str, checker: Checker) -> None:
        """Use ``checker`` for facts of ``fact_kind``."""
        if fact_kind in self._checkers:
            raise ValueError(f"a checker for {fact_kind!r} is already registered")
        self._checkers[fact_kind] = checker

    def checker(self, fact_kind: str) -> Callable[[Checker], Checker]:
        """Decorator form of ``register``."""

        def decorate(fn: Checker) -> Checker:
            self.register(fact_kind, fn)
            return fn

        return decorate

    def get(self, fact_kind: str) -> Checker | None:
        """The checker of ``fact_kind``, or None."""
        return self._checkers.get(fact_kind)

    def __contains__(self, fact_kind: object) -> bool:
        return fact_kind in self._checkers


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def slot_of(proposal: Proposal) -> str:
    """The ledger name of a proposal's slot (fact kind and key; the workflow is the ledger key)."""
    return canonical_hash([proposal.fact_kind, proposal.key])


class Validator:
    """Reviews proposals as one voter: value hash, deterministic check, optional judge, one value per slot.

    Fail-closed: a fact kind with no checker and no judge, or a checker that raises, is
    rejected. A slot is ``(workflow, fact kind, key)``; once this validator accepted a value in a
    slot and epoch it rejects every other value there, and it never votes on an epoch below the
    highest it voted in for that slot. That is what makes two conflicting facts of one epoch
    impossible to both reach quorum while at most f validators are faulty.

    Every vote is written to the ``ledger`` before the ballot is returned (so before it is
    sent): a restarted validator answers a proposal it already voted on the same way and keeps
    its slot locks. A ledger that cannot be written raises ``StoreUnavailable``: no ballot.
    """

    def __init__(
        self,
        signer: BallotSigner,
        *,
        checkers: CheckerRegistry,
        judge: Judge | None = None,
        lock_slots: bool = True,
        ledger: VoteLedger | None = None,
        ballot_ttl_ms: int = DEFAULT_BALLOT_TTL_MS,
        now_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        """Vote with ``signer``'s identity, checking with ``checkers`` and ``judge``, recording in ``ledger``."""
        self.signer = signer
        self.checkers = checkers
        self.judge = judge
        self.lock_slots = lock_slots
        self.ledger: VoteLedger = ledger if ledger is not None else InMemoryVoteLedger()
        self.ballot_ttl_ms = ballot_ttl_ms
        self._now_ms = now_ms
        self._endorsed: dict[tuple[str, str, int], str] = {}
        """What the ledger answered, so a taken slot skips the checker and judge (the ledger decides)."""

    @property
    def voter(self) -> str:
        """This validator's agent id."""
        return self.signer.voter

    async def review(self, proposal: Proposal) -> Ballot:
        """Check ``proposal``, record the verdict in the ledger, return this validator's signed ballot.

        A proposal already voted on (before a restart, too) gets the recorded verdict again.
        """
        prior = await self.ledger.recorded_ballot(proposal.workflow_id, proposal.id)
        reason = prior[1] if prior is not None else await self._problem(proposal)
        if prior is None and not reason and self.lock_slots:
            held = await self.ledger.endorse(proposal.workflow_id, slot_of(proposal), proposal.epoch, proposal.value_hash)
            if held.status != "stale":
                if len(self._endorsed) >= 10_000:
                    self._endorsed.clear()  # a cache only: the ledger stays authoritative
                self._endorsed[(proposal.workflow_id, slot_of(proposal), proposal.epoch)] = held.value_hash
            if held.status == "stale":
                reason = f"epoch {proposal.epoch} is older than epoch {held.floor} already voted for this key"
            elif held.status == "taken":
                reason = "another value was already endorsed for this key"
        verdict, reason = await self.ledger.record_ballot(
            proposal.workflow_id, proposal.id, "reject" if reason else "accept", reason
        )
        return self.signer.cast(
            proposal,
            "accept" if verdict == "accept" else "reject",
            reason=reason,
            expires_at_ms=self._now_ms() + self.ballot_ttl_ms,
        )

    async def _problem(self, proposal: Proposal) -> str:
        if canonical_hash(proposal.value) != proposal.value_hash:
            return "value does not match its hash"
        endorsed = self._endorsed.get((proposal.workflow_id, slot_of(proposal), proposal.epoch))
        if self.lock_slots and endorsed is not None and endorsed != proposal.value_hash:
            return "another value was already endorsed for this key"
        checker = self.checkers.get(proposal.fact_kind)
        if checker is None and self.judge is None:
            return f"no checker for fact kind {proposal.fact_kind!r}"
        if checker is not None:
            try:
                result = checker(proposal)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:  # a crashing checker must not accept; it rejects with why
                return f"checker raised {type(exc).__name__}"
            if not result:
                return "deterministic check failed"
        if self.judge is not None:
            try:
                verdict = await self.judge(proposal)
            except Exception as exc:
                return f"judge raised {type(exc).__name__}"
            if not verdict:
                return "judge rejected"
        return ""

    def __repr__(self) -> str:
        return f"Validator(voter={self.voter!r})"
