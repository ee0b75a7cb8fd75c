"""The peer: one agent's gossip, votes and trust, composed over one bus subscription.

``mesh.gossip`` (dissemination) and ``mesh.quorum`` (voting) are siblings that never import each
other; the agent's trust object (``mesh.runtime.trust.AgentTrust``) is the one place that builds
signers and verifiers and refreshes the keyring. A ``Peer`` wires the three together, and is
what an agent process builds:

* the gossip node reads the votes topic on its own subscription (one consumer group per node),
  so one guard (the trust's gossip verifier) checks every envelope before any handler;
* a quorum acceptance of a proposed variable flips the variable to ``accepted`` in the map;
* quarantined peers (the quorum's reputation verdict) are ignored by gossip;
* open votes are re-sent periodically, so a minority's proposals, tentative while it was cut
  off, are decided once the partition heals; the trust's keyring refresh runs while the peer does.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Set
from dataclasses import dataclass
from typing import Any, Protocol

from mesh.bus import Bus
from mesh.errors import StoreUnavailable, UsageError
from mesh.gossip import (
    ContextMap,
    ContextMapArchive,
    GossipNode,
    GossipNodeOptions,
    GossipOptions,
    HybridLogicalClock,
    VariableVersion,
)
from mesh.gossip.node import OnChange
from mesh.quorum import (
    BallotSigner,
    CheckerRegistry,
    QuorumAgent,
    QuorumBook,
    QuorumDecision,
    Validator,
    resend_forever,
)
from mesh.security import EnvelopeSigner, EnvelopeVerifier, Keyring, VerifierOptions
from mesh.store import VoteLedger
from protocols.envelope import Envelope
from protocols.topics import Topics
from protocols.votes import Proposal

__all__ = ["VARIABLE_FACT", "Peer", "PeerOptions", "PeerTrust", "default_checkers"]

log = logging.getLogger(__name__)

VARIABLE_FACT = "variable"
"""Fact kind of a proposed context variable; its acceptance flips the variable to ``accepted``."""


def default_checkers() -> CheckerRegistry:
    """Checkers a peer validates with when given none: a proposed variable is plausible as sent.

    The value hash is checked by the ``Validator`` itself; deployments register real checks
    (e.g. an identifier exists in the source system) for their own fact kinds.
    """
    registry = CheckerRegistry()
    registry.register(VARIABLE_FACT, lambda proposal: True)
    return registry


class PeerTrust(Protocol):
    """What a peer needs of the agent's trust object (``mesh.runtime.trust.AgentTrust`` is one).

    The trust object owns the keyring and its refresh policy, and is the only builder of signers
    and verifiers; the peer only asks for them.
    """

    @property
    def agent_id(self) -> str:
        """The agent this trust signs for."""
        ...

    @property
    def keyring(self) -> Keyring:
        """The one keyring every verifier of the agent reads."""
        ...

    @property
    def signer(self) -> EnvelopeSigner:
        """Signs what the agent publishes."""
        ...

    def envelope_verifier(self, options: VerifierOptions | None = None) -> EnvelopeVerifier:
        """A verifier over the keyring."""
        ...

    def ballot_signer(self) -> BallotSigner:
        """The signer of the agent's ballots."""
        ...

    async def register(self) -> None:
        """Publish the agent's key (once) and load the others' (no-op without a key store)."""
        ...

    async def keep_fresh(self) -> None:
        """Refresh the keyring periodically until cancelled (returns at once without a key store)."""
        ...


@dataclass(frozen=True, slots=True)
class PeerOptions:
    """Tuning of the peer's own work; the node's and the gossip protocol's knobs have their own options."""

    vote_resend_period_ms: int = 2000
    """How often open votes this peer proposed or voted on are re-sent."""


class Peer:
    """One agent's gossip (and, with ``validators``, its votes) over a bus, verified by its trust.

    Concurrency: as ``GossipNode`` (one receive task; local calls on the caller's task, same
    event loop). The bus and the trust are the caller's: ``aclose`` stops the peer's work only.
    """

    def __init__(
        self,
        trust: PeerTrust,
        bus: Bus,
        *,
        topics: Topics | None = None,
        store: ContextMapArchive | None = None,
        validators: Set[str] | None = None,
        checkers: CheckerRegistry | None = None,
        vote_ledger: VoteLedger | None = None,
        gossip_options: GossipOptions | None = None,
        node_options: GossipNodeOptions | None = None,
        options: PeerOptions | None = None,
        verifier_options: VerifierOptions | None = None,
        on_change: OnChange | None = None,
        clock: HybridLogicalClock | None = None,
    ) -> None:
        """Take part in gossip as ``trust.agent_id``; with ``validators``, in votes too (as one if listed)."""
        self.trust = trust
        self.agent_id = trust.agent_id
        self.options = options or PeerOptions()
        self.topics = topics or Topics()
        # Gossip refuses replays and stale envelopes (default options), unlike the replayable log.
        self.verifier = trust.envelope_verifier(verifier_options)
        self.node = GossipNode(
            trust.agent_id,
            bus,
            sign=trust.signer,
            verify=self.verifier.verify,
            topics=self.topics,
            store=store,
            gossip_options=gossip_options,
            options=node_options,
            on_change=on_change,
            clock=clock,
            is_quarantined=self._is_quarantined,
            peer_count=lambda: len(trust.keyring),
        )
        self.quorum: QuorumAgent | None = None
        if validators:
            book = QuorumBook(frozenset(validators), keyring=trust.keyring)
            validator = None
            if trust.agent_id in validators:
                # The ledger (Redis in a deployment) keeps this validator's votes across restarts.
                validator = Validator(
                    trust.ballot_signer(),
                    checkers=checkers or default_checkers(),
                    ledger=vote_ledger,
                )
            self.quorum = QuorumAgent(
                trust.agent_id,
                self._send_vote,
                book,
                validator=validator,
                on_decided=self._on_decided,
                sign=trust.signer,
                now=self.node.gossip.clock.now,
            )
        # Always read the votes topic: forged ballots are refused (and counted) even by a peer
        # that does not vote.
        self.node.route(
            self.topics.votes, self.quorum.handle if self.quorum is not None else _ignore
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Publish this agent's key, start the gossip node, then the vote re-sending and keyring refresh.

        Raises ``BusError`` when the bus cannot be reached; an unreachable key store only logs
        (the keys already trusted stay; the refresh tries again).
        """
        try:
            await self.trust.register()
        except StoreUnavailable as exc:
            log.warning("peer %s: keyring store unreachable: %s", self.agent_id, exc)
        await self.node.start()
        if self.quorum is not None:
            self.node.spawn(
                resend_forever(self.quorum, period_s=self.options.vote_resend_period_ms / 1000),
                "resend-votes",
            )
        self.node.spawn(self.trust.keep_fresh(), "keyring")

    async def aclose(self) -> None:
        """Stop the peer's work and the node (pending publishes flushed, dirty maps saved)."""
        await self.node.aclose()

    async def __aenter__(self) -> Peer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- gossip -----------------------------------------------------------------------------

    @property
    def keyring(self) -> Keyring:
        """The trust's keyring (shared with the workflow log's verifier)."""
        return self.trust.keyring

    @property
    def restored(self) -> dict[str, int]:
        """Entries restored from the store on start, by workflow id."""
        return self.node.restored

    @property
    def stats(self) -> Counter[str]:
        """The node's counts (published, dropped, rejected_<reason>, saves...) and decided_<outcome>."""
        return self.node.stats

    def get(self, workflow_id: str) -> ContextMap:
        """This peer's replica of ``workflow_id`` (created empty on first use)."""
        return self.node.get(workflow_id)

    async def set_variable(
        self,
        workflow_id: str,
        name: str,
        value: Any,
        *,
        secret: bool = False,
        priority: int = 1,
        expires_at_ms: int | None = None,
    ) -> VariableVersion:
        """Write a variable locally and broadcast it (never blocks on the bus)."""
        return await self.node.set_variable(
            workflow_id, name, value, secret=secret, priority=priority, expires_at_ms=expires_at_ms
        )

    async def delete_variable(self, workflow_id: str, name: str) -> None:
        """Delete a variable and broadcast the tombstone."""
        await self.node.delete_variable(workflow_id, name)

    async def retire(self, workflow_id: str, *, ttl_s: int = 0) -> None:
        """A workflow finished: stop gossiping it and let its saved map expire (``GossipNode.retire``)."""
        await self.node.retire(workflow_id, ttl_s=ttl_s)

    # -- votes ------------------------------------------------------------------------------

    async def propose(
        self,
        workflow_id: str,
        name: str,
        value: Any,
        *,
        secret: bool = False,
        priority: int = 1,
        expires_at_ms: int | None = None,
    ) -> Proposal:
        """Write a variable (tentative) and put it to the vote; it flips to accepted on 2f+1 ballots."""
        quorum = self._require_quorum()
        await self.set_variable(
            workflow_id, name, value, secret=secret, priority=priority, expires_at_ms=expires_at_ms
        )
        return await quorum.propose(workflow_id, VARIABLE_FACT, name, value)

    async def propose_fact(
        self, workflow_id: str, fact_kind: str, key: str, value: Any
    ) -> Proposal:
        """Put any fact to the vote (validators check it with their checker for ``fact_kind``)."""
        return await self._require_quorum().propose(workflow_id, fact_kind, key, value)

    def decision(self, proposal_id: str) -> QuorumDecision | None:
        """This peer's decision on a proposal, if it reached one."""
        return self._require_quorum().book.decision(proposal_id)

    def _require_quorum(self) -> QuorumAgent:
        if self.quorum is None:
            raise UsageError(
                f"peer {self.agent_id} has no validators configured: pass validators=..."
            )
        return self.quorum

    def _is_quarantined(self, peer: str) -> bool:
        return self.quorum is not None and self.quorum.is_quarantined(peer)

    async def _send_vote(self, envelope: Envelope) -> None:
        self.node.publish(self.topics.votes, envelope)

    async def _on_decided(self, decision: QuorumDecision) -> None:
        proposal = decision.proposal
        self.stats[f"decided_{decision.outcome}"] += 1
        if decision.outcome == "accepted" and proposal.fact_kind == VARIABLE_FACT:
            await self.node.mark_accepted(proposal.workflow_id, proposal.key, proposal.value_hash)

    # -- introspection ----------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Counters of the node, its gossip agent, the verifier and the quorum agent (for logs and tests)."""
        out = self.node.summary()
        out.update({f"verifier.rejected_{k}": v for k, v in self.verifier.rejections.items()})
        out["verifier.accepted"] = self.verifier.accepted
        if self.quorum is not None:
            out.update({f"quorum.{k}": v for k, v in self.quorum.stats.items()})
        out["time_ms"] = int(time.time() * 1000)
        return out

    def __repr__(self) -> str:
        return f"Peer(agent_id={self.agent_id!r}, voting={self.quorum is not None}, node={self.node!r})"


async def _ignore(envelope: Envelope) -> None:
    """Votes reach a peer without validators too; it has nothing to tally."""
