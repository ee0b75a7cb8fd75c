"""The quorum agent: proposes facts, validates others' proposals, tallies ballots over a transport."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from mesh.quorum._ballots import make_proposal
from mesh.quorum._book import Decision, QuorumBook
from mesh.quorum._validator import Validator
from protocols.envelope import Envelope
from protocols.hlc import HlcTimestamp
from protocols.registry import Payload
from protocols.votes import Ballot, FactDecided, Proposal

__all__ = ["QuorumAgent"]

Send = Callable[[Envelope], Awaitable[None]]
OnDecided = Callable[[Decision], Awaitable[None]]


class QuorumAgent:
    """Takes part in votes over a transport (the votes topic).

    ``handle`` must get every envelope of the votes topic, already verified by the consumer,
    one at a time. A proposal is tallied, and reviewed when this agent is a validator (its
    ballot is broadcast); ballots are tallied; when a tally decides, ``on_decided`` runs (for
    an acceptance, typically ``GossipAgent.mark_accepted`` so the variable's status flips) and
    ``vote.decided`` is broadcast. Quarantine events are broadcast as ``mesh.quarantine``.
    """

    def __init__(
        self,
        agent_id: str,
        send: Send,
        book: QuorumBook,
        *,
        validator: Validator | None = None,
        on_decided: OnDecided | None = None,
        sign: Callable[[Envelope], Envelope] | None = None,
        now: Callable[[], HlcTimestamp] | None = None,
    ) -> None:
        """Vote as ``agent_id`` (reviewing with ``validator`` if given), tallying in ``book``."""
        self.agent_id = agent_id
        self._send = send
        self.book = book
        self.validator = validator
        self._on_decided = on_decided
        self._sign = sign
        self._now = now or (lambda: HlcTimestamp(0, 0))
        self.decisions: dict[str, Decision] = {}
        self.stats: Counter[str] = Counter()

    def is_quarantined(self, peer: str) -> bool:
        """Whether ``peer`` is quarantined (pass this to ``GossipAgent(is_quarantined=...)``)."""
        return self.book.reputation.is_quarantined(peer)

    async def propose(self, workflow_id: str, fact_kind: str, key: str, value: Any) -> Proposal:
        """Put a fact to the vote; this agent reviews it too when it is a validator."""
        proposal = make_proposal(workflow_id, fact_kind, key, value, proposer=self.agent_id)
        await self._emit(workflow_id, proposal)
        await self._on_proposal(proposal)
        return proposal

    async def handle(self, envelope: Envelope) -> None:
        """Process one envelope of the votes topic."""
        if envelope.sender == self.agent_id:
            return
        if self.is_quarantined(envelope.sender):
            self.stats["ignored_quarantined"] += 1
            return
        if envelope.kind == Proposal.KIND:
            await self._on_proposal(envelope.payload_model(Proposal))
        elif envelope.kind == Ballot.KIND:
            ballot = envelope.payload_model(Ballot)
            if ballot.voter != envelope.sender:
                self.stats["ignored_relayed_ballot"] += 1  # a peer may only cast its own ballot
                return
            await self._on_ballot(ballot)
        elif envelope.kind == FactDecided.KIND:
            self.stats["recv_decided"] += 1
        else:
            self.stats["ignored_kind"] += 1

    async def _on_proposal(self, proposal: Proposal) -> None:
        result = self.book.add_proposal(proposal)
        if result.outcome == "duplicate":
            return
        await self._after(result.decision, result.quarantined)
        if self.validator is not None:
            ballot = await self.validator.review(proposal)
            await self._emit(proposal.workflow_id, ballot)
            await self._on_ballot(ballot)

    async def _on_ballot(self, ballot: Ballot) -> None:
        result = self.book.add_ballot(ballot)
        self.stats[f"ballot_{result.outcome}"] += 1
        await self._after(result.decision, result.quarantined)

    async def _after(self, decision: Decision | None, quarantined: tuple[Payload, ...]) -> None:
        for event in quarantined:
            await self._emit("", event)
        if decision is None:
            return
        self.decisions[decision.proposal.id] = decision
        if self._on_decided is not None:
            await self._on_decided(decision)
        await self._emit(decision.proposal.workflow_id, decision.to_event())

    async def _emit(self, workflow_id: str, payload: Payload) -> None:
        envelope = Envelope.of(payload, sender=self.agent_id, workflow_id=workflow_id, hlc=self._now())
        if self._sign is not None:
            envelope = self._sign(envelope)
        self.stats[f"sent_{payload.KIND}"] += 1
        await self._send(envelope)

    def __repr__(self) -> str:
        return f"QuorumAgent(agent_id={self.agent_id!r}, validator={self.validator is not None})"
