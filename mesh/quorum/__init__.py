"""Votes on facts: proposals, signed ballots, tallies, peer reputation and quarantine.

With n = 3f + 1 validators a fact is accepted on 2f + 1 matching ballots (``quorum_size``),
counting one ballot per configured validator; a validator that sends two different ballots
for one proposal, or accepts two values for one slot, is faulty and its ballots are discarded.
Until accepted, a fact (and the context variable it is about) stays tentative.

Acceptance is CP: it needs 2f + 1 validators to answer, so the minority side of a partition
(fewer than 2f + 1 validators reachable) cannot accept anything; it waits, and its facts stay
tentative until the partition heals. Safety holds while at most f validators are faulty: any
two quorums then share at least one honest validator, which never endorses two conflicting
values. With f + 1 coordinated liars that guarantee is gone (two observers can accept
conflicting values); tests/unit/quorum demonstrates both sides of the bound.

Peers whose ballots keep disagreeing with quorum outcomes lose reputation (an EWMA); under the
threshold, or on the first equivocation, they are quarantined and a ``QuarantineEvent`` is
produced.
"""

from mesh.quorum._agent import QuorumAgent
from mesh.quorum._ballots import DEFAULT_BALLOT_TTL_MS, BallotSigner, make_proposal, verify_ballot
from mesh.quorum._book import BookLimits, BookResult, QuorumBook
from mesh.quorum._book import Decision as QuorumDecision
from mesh.quorum._reputation import Reputation, ReputationOptions
from mesh.quorum._resend import resend_forever, resend_pending
from mesh.quorum._tally import BallotOutcome, Tally, max_faulty, quorum_size
from mesh.quorum._tally import Outcome as VoteOutcome
from mesh.quorum._validator import Checker, CheckerRegistry, Judge, Validator

__all__ = [
    # proposals and ballots
    "DEFAULT_BALLOT_TTL_MS",
    "BallotSigner",
    "make_proposal",
    "verify_ballot",
    # counting
    "BallotOutcome",
    "VoteOutcome",
    "Tally",
    "max_faulty",
    "quorum_size",
    "BookLimits",
    "BookResult",
    "QuorumDecision",
    "QuorumBook",
    # the validator's persisted votes
    # validation
    "Checker",
    "CheckerRegistry",
    "Judge",
    "Validator",
    # reputation
    "Reputation",
    "ReputationOptions",
    # network
    "QuorumAgent",
    "resend_forever",
    "resend_pending",
]
