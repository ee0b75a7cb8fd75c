"""Re-sending what an agent said about votes that are still open (after a partition heals)."""

from __future__ import annotations

import asyncio
import time

from mesh.quorum._agent import QuorumAgent

__all__ = ["resend_forever", "resend_pending"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def resend_pending(agent: QuorumAgent) -> int:
    """Re-broadcast ``agent``'s own open proposals and its ballots on open votes; return how many.

    Votes ride an at-most-once path in practice: a proposal or ballot sent while the sender was
    cut off is lost. Re-sending is safe because receivers fold duplicates (a proposal id is
    derived from its content; an identical second ballot is a ``duplicate``), so a minority
    whose proposals stayed tentative during a partition gets them decided once it heals.
    """
    sent = 0
    for tally in list(agent.book.tallies.values()):
        if tally.outcome != "pending":
            continue
        proposal = tally.proposal
        if proposal.proposer == agent.agent_id:
            await agent._emit(proposal.workflow_id, proposal)
            sent += 1
        ballot = tally.ballots.get(agent.agent_id)
        if ballot is not None and agent.validator is not None and ballot.expires_at_ms <= _now_ms() + 60_000:
            # About to expire: cast it again (the ledger gives the same verdict, with a new expiry).
            ballot = await agent.validator.review(proposal)
            tally.ballots[agent.agent_id] = ballot
        if ballot is not None:
            await agent._emit(proposal.workflow_id, ballot)
            sent += 1
    agent.stats["resent"] += sent
    return sent


async def resend_forever(agent: QuorumAgent, *, period_s: float) -> None:
    """``resend_pending`` every ``period_s`` seconds until cancelled (a peer runs it for its lifetime)."""
    while True:
        await asyncio.sleep(period_s)
        await resend_pending(agent)
