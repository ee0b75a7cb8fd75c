"""Tally, validators, reputation and the quorum agent, one behaviour at a time."""

from __future__ import annotations

import pytest

from mesh.gossip import GossipAgent, MemoryGossipNetwork
from mesh.quorum import (
    BallotSigner,
    CheckerRegistry,
    QuorumAgent,
    QuorumBook,
    Reputation,
    ReputationOptions,
    Tally,
    Validator,
    make_proposal,
    max_faulty,
    quorum_size,
    verify_ballot,
)
from mesh.security import Keyring, generate_keypair
from protocols import Ballot

VOTERS = ("v0", "v1", "v2", "v3")
KEYS = {v: generate_keypair(v) for v in (*VOTERS, "outsider")}
KEYRING = Keyring({v: KEYS[v].public_key for v in VOTERS})
SIGNERS = {v: BallotSigner(v, KEYS[v].private_key) for v in KEYS}


def _proposal(value: object = "o-1", key: str = "order_id"):
    return make_proposal("wf", "variable", key, value, proposer="v0")


@pytest.mark.parametrize(("n", "f", "q"), [(1, 0, 1), (3, 0, 2), (4, 1, 3), (5, 1, 4), (7, 2, 5), (10, 3, 7)])
def test_quorum_size_is_2f_plus_1_for_3f_plus_1(n, f, q):
    assert (max_faulty(n), quorum_size(n)) == (f, q)
    # Any two quorums overlap in more than f validators.
    assert 2 * q - n > f


def test_accepted_on_2f_plus_1_matching_ballots_only():
    p = _proposal()
    tally = Tally(p, set(VOTERS), keyring=KEYRING)
    assert tally.add(SIGNERS["v0"].cast(p, "accept")) == "counted"
    assert tally.add(SIGNERS["v1"].cast(p, "accept", value_hash="other")) == "counted"  # not matching
    assert tally.add(SIGNERS["v2"].cast(p, "accept")) == "counted"
    assert tally.outcome == "pending"
    assert tally.add(SIGNERS["v3"].cast(p, "accept")) == "counted"
    assert tally.outcome == "accepted" and tally.accepts == 3
    assert [b.voter for b in tally.certificate()] == ["v0", "v2", "v3"]


def test_rejected_when_acceptance_becomes_impossible():
    p = _proposal()
    tally = Tally(p, set(VOTERS))
    tally.add(SIGNERS["v0"].cast(p, "reject"))
    assert tally.outcome == "pending"
    tally.add(SIGNERS["v1"].cast(p, "reject"))
    assert tally.outcome == "rejected" and not tally.decided_by_quorum


def test_only_validators_one_ballot_each_signed_and_equivocators_discarded():
    p = _proposal()
    tally = Tally(p, set(VOTERS), keyring=KEYRING)
    assert tally.add(SIGNERS["outsider"].cast(p, "accept").model_copy(update={"voter": "x"})) == "not_validator"
    forged = SIGNERS["outsider"].cast(p, "accept").model_copy(update={"voter": "v1"})
    assert tally.add(forged) == "forged"
    assert tally.add(Ballot(proposal_id=p.id, voter="v1", verdict="accept", value_hash=p.value_hash)) == "forged"
    accept = SIGNERS["v1"].cast(p, "accept")
    assert tally.add(accept) == "counted"
    assert tally.add(accept) == "duplicate"
    assert tally.add(SIGNERS["v1"].cast(p, "reject")) == "equivocation"
    assert tally.add(accept) == "faulty"
    assert tally.accepts == 0 and tally.faulty == {"v1"}
    other = _proposal("o-2")
    assert tally.add(SIGNERS["v2"].cast(other, "accept")) == "wrong_proposal"


async def test_validator_checks_hash_checker_judge_and_slot_lock():
    registry = CheckerRegistry()

    @registry.checker("variable")
    def known_order(proposal):
        return str(proposal.value).startswith("o-")

    judged = []

    async def judge(proposal):
        judged.append(proposal.key)
        return proposal.key != "suspicious"

    validator = Validator(SIGNERS["v0"], checkers=registry, judge=judge)
    good = await validator.review(_proposal("o-1"))
    assert good.verdict == "accept" and verify_ballot(good, KEYRING)
    assert (await validator.review(_proposal("x-1", key="k2"))).reason == "deterministic check failed"
    assert (await validator.review(_proposal("o-1", key="suspicious"))).reason == "judge rejected"
    assert (await validator.review(_proposal("o-2"))).reason == "another value was already endorsed for this key"
    tampered = _proposal("o-9", key="k3").model_copy(update={"value": "o-10"})
    assert (await validator.review(tampered)).reason == "value does not match its hash"
    unknown = make_proposal("wf", "unknown_kind", "k", 1, proposer="v0")
    assert (await Validator(SIGNERS["v1"], checkers=registry).review(unknown)).verdict == "reject"
    assert judged == ["order_id", "suspicious"]

    def boom(proposal):
        raise RuntimeError("bug")

    crashing = CheckerRegistry()
    crashing.register("variable", boom)
    assert (await Validator(SIGNERS["v2"], checkers=crashing).review(_proposal())).reason == "checker raised RuntimeError"
    with pytest.raises(ValueError, match="already registered"):
        crashing.register("variable", boom)


def test_reputation_ewma_quarantines_below_threshold_once():
    rep = Reputation(observer="me", options=ReputationOptions(alpha=0.5, threshold=0.3))
    assert rep.record("p", agreed=False) is None  # 0.5
    event = rep.record("p", agreed=False)  # 0.25
    assert event is not None and event.peer == "p" and event.reason == "reputation" and event.observer == "me"
    assert rep.record("p", agreed=False) is None  # already quarantined
    assert rep.is_quarantined("p") and rep.quarantined == {"p"}
    assert rep.record_equivocation("q").reason == "equivocation"  # type: ignore[union-attr]
    rep.release("p")
    assert not rep.is_quarantined("p") and rep.score("p") == 1.0


def test_book_buffers_ballots_that_arrive_before_their_proposal():
    book = QuorumBook(set(VOTERS), keyring=KEYRING)
    p = _proposal()
    for v in VOTERS[:3]:
        assert book.add_ballot(SIGNERS[v].cast(p, "accept")).outcome == "buffered"
    result = book.add_proposal(p)
    assert result.decision is not None and result.decision.outcome == "accepted"
    assert book.add_proposal(p).outcome == "duplicate"
    assert book.decision(p.id).outcome == "accepted"  # type: ignore[union-attr]


async def test_quorum_agents_accept_a_fact_and_flip_the_variable_to_accepted():
    network = MemoryGossipNetwork()
    registry = CheckerRegistry()
    registry.register("variable", lambda p: p.value == "o-1")
    gossip, quorum = {}, {}
    for v in VOTERS:
        g = GossipAgent(v, network.transport(v))

        async def flip(decision, g=g):
            if decision.outcome == "accepted":
                p = decision.proposal
                await g.mark_accepted(p.workflow_id, p.key, p.value_hash)

        q = QuorumAgent(
            v,
            network.transport(v),
            QuorumBook(set(VOTERS), keyring=KEYRING),
            validator=Validator(SIGNERS[v], checkers=registry),
            on_decided=flip,
        )

        async def handle(env, g=g, q=q):
            if env.kind.startswith("gossip."):
                await g.handle(env)
            else:
                await q.handle(env)

        network.register(v, handle)
        gossip[v], quorum[v] = g, q
    await gossip["v0"].set("wf", "order_id", "o-1")
    await network.pump()
    assert gossip["v3"].maps["wf"].get("order_id").status == "tentative"  # type: ignore[union-attr]
    proposal = await quorum["v0"].propose("wf", "variable", "order_id", "o-1")
    await network.pump()
    for v in VOTERS:
        assert quorum[v].decisions[proposal.id].outcome == "accepted"
        assert gossip[v].maps["wf"].get("order_id").status == "accepted"  # type: ignore[union-attr]
    false = await quorum["v1"].propose("wf", "variable", "order_id", "o-666")
    await network.pump()
    assert all(quorum[v].decisions[false.id].outcome == "rejected" for v in VOTERS)
