"""Validators: check a proposal independently and cast a signed ballot."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from mesh.quorum._ballots import BallotSigner
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


class Validator:
    """Reviews proposals as one voter: value hash, deterministic check, optional judge, one value per slot.

    Fail-closed: a fact kind with no checker and no judge, or a checker that raises, is
    rejected. A slot is ``(workflow, fact kind, key)``; once this validator accepted a value in a
    slot it rejects every other value there, which is what makes two conflicting facts
    impossible to both reach quorum while at most f validators are faulty.
    """

    def __init__(
        self,
        signer: BallotSigner,
        *,
        checkers: CheckerRegistry,
        judge: Judge | None = None,
        lock_slots: bool = True,
    ) -> None:
        """Vote with ``signer``'s identity, checking with ``checkers`` and ``judge``."""
        self.signer = signer
        self.checkers = checkers
        self.judge = judge
        self.lock_slots = lock_slots
        self._endorsed: dict[tuple[str, str, str], str] = {}

    @property
    def voter(self) -> str:
        """This validator's agent id."""
        return self.signer.voter

    async def review(self, proposal: Proposal) -> Ballot:
        """Check ``proposal`` and return this validator's signed ballot."""
        reason = await self._problem(proposal)
        if reason:
            return self.signer.cast(proposal, "reject", reason=reason)
        if self.lock_slots:
            self._endorsed[(proposal.workflow_id, proposal.fact_kind, proposal.key)] = proposal.value_hash
        return self.signer.cast(proposal, "accept")

    async def _problem(self, proposal: Proposal) -> str:
        if canonical_hash(proposal.value) != proposal.value_hash:
            return "value does not match its hash"
        slot = (proposal.workflow_id, proposal.fact_kind, proposal.key)
        endorsed = self._endorsed.get(slot)
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
