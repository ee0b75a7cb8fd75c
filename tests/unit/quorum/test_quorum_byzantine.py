"""Byzantine validators: no false fact is accepted while at most f of 3f+1 lie (invariant 4).

Thousands of randomized trials, each with its own liars, strategy and delivery order. One
observer's ``QuorumBook`` counts everything it receives: honest ballots (from validators that
check the fact deterministically) and whatever the liars send: random lies, coordinated lies,
equivocation, forged and replayed ballots. Then the bound itself: with f + 1 coordinated liars
two observers accept conflicting values for one key.
"""

from __future__ import annotations

import random

import pytest

from mesh.quorum import (
    BallotSigner,
    CheckerRegistry,
    QuorumBook,
    Reputation,
    ReputationOptions,
    Validator,
    make_proposal,
    quorum_size,
)
from mesh.security import Keyring, generate_keypair
from protocols import Ballot, Proposal

MAX_F = 3
NAMES = [f"v{i}" for i in range(3 * MAX_F + 1)] + ["outsider"]
KEYS = {name: generate_keypair(name) for name in NAMES}
SIGNERS = {name: BallotSigner(name, KEYS[name].private_key) for name in NAMES}
STRATEGIES = ("random", "coordinated", "equivocate", "forge", "replay", "mixed")


def _keyring(validators: list[str]) -> Keyring:
    return Keyring({v: KEYS[v].public_key for v in validators})


def _registry(truth: dict[str, object]) -> CheckerRegistry:
    registry = CheckerRegistry()
    registry.register("variable", lambda p: truth.get(p.key) == p.value)
    return registry


def _lies(strategy: str, liar: str, proposal: Proposal, *, honest: list[str], rng: random.Random) -> list[Ballot]:
    """What one liar sends about ``proposal`` (the proposal is false: honest validators reject it)."""
    signer = SIGNERS[liar]
    if strategy == "mixed":
        strategy = rng.choice(STRATEGIES[:-1])
    if strategy == "random":
        verdict = rng.choice(["accept", "reject"])
        value_hash = rng.choice([proposal.value_hash, "bogus"])
        return [signer.cast(proposal, verdict, value_hash=value_hash)]  # type: ignore[arg-type]
    if strategy == "coordinated":
        return [signer.cast(proposal, "accept")]
    if strategy == "equivocate":
        return [signer.cast(proposal, "accept"), signer.cast(proposal, "reject")]
    if strategy == "forge":
        victim = rng.choice(honest)
        # Ballots in an honest validator's name signed with the liar's key, an unsigned one,
        # and one from outside the validator set.
        forged = signer.cast(proposal, "accept").model_copy(update={"voter": victim})
        unsigned = Ballot(proposal_id=proposal.id, voter=victim, verdict="accept", value_hash=proposal.value_hash)
        outsider = SIGNERS["outsider"].cast(proposal, "accept")
        return [forged, unsigned, outsider, signer.cast(proposal, "accept")]
    if strategy == "replay":
        # An honest accept of an earlier, true proposal, replayed against this one: retargeted
        # (signature no longer matches) and verbatim (wrong proposal).
        victim = rng.choice(honest)
        earlier = make_proposal(proposal.workflow_id, "variable", "other", "true-value", proposer=victim)
        honest_accept = SIGNERS[victim].cast(earlier, "accept")
        retargeted = honest_accept.model_copy(update={"proposal_id": proposal.id, "value_hash": proposal.value_hash})
        return [honest_accept, retargeted, retargeted, signer.cast(proposal, "accept")]
    raise AssertionError(strategy)


async def _trial(rng: random.Random, trial: int) -> tuple[str, str, set[str], QuorumBook, list[str]]:
    f = rng.randint(1, MAX_F)
    validators = NAMES[: 3 * f + 1]
    liars = rng.sample(validators, f)
    honest = [v for v in validators if v not in liars]
    strategy = rng.choice(STRATEGIES)
    is_true = rng.random() < 0.3
    truth = {"order_id": f"o-{trial}"}
    value = truth["order_id"] if is_true else f"forged-{trial}"
    proposal = make_proposal("wf", "variable", "order_id", value, proposer=rng.choice(validators))
    registry = _registry(truth)
    ballots: list[Ballot] = []
    for v in honest:
        ballots.append(await Validator(SIGNERS[v], checkers=registry).review(proposal))
    for liar in liars:
        if is_true:  # liars try to block a true fact instead
            ballots.append(SIGNERS[liar].cast(proposal, "reject"))
        else:
            ballots.extend(_lies(strategy, liar, proposal, honest=honest, rng=rng))
    # Duplicates and any delivery order; the proposal itself may arrive late.
    ballots += rng.sample(ballots, k=rng.randint(0, len(ballots)))
    rng.shuffle(ballots)
    book = QuorumBook(set(validators), keyring=_keyring(validators))
    split = rng.randint(0, len(ballots))
    for ballot in ballots[:split]:
        book.add_ballot(ballot)
    book.add_proposal(proposal)
    for ballot in ballots[split:]:
        book.add_ballot(ballot)
    decision = book.decision(proposal.id)
    outcome = decision.outcome if decision else "pending"
    return outcome, "true" if is_true else "false", set(liars), book, [strategy]


async def test_no_false_fact_is_accepted_with_at_most_f_liars_over_thousands_of_trials():
    rng = random.Random(20260101)
    seen_strategies: set[str] = set()
    accepted_true = 0
    trials = 2000
    for trial in range(trials):
        outcome, fact, _, book, strategy = await _trial(rng, trial)
        seen_strategies.update(strategy)
        if fact == "false":
            assert outcome != "accepted", f"trial {trial}: false fact accepted ({strategy}, {book.stats})"
        else:
            # Liveness: 2f + 1 honest accepts are enough even if every liar rejects.
            assert outcome == "accepted", f"trial {trial}: true fact not accepted ({book.stats})"
            accepted_true += 1
    assert seen_strategies == set(STRATEGIES)
    assert accepted_true > trials // 5


async def test_coordinated_liars_lose_reputation_and_end_up_quarantined():
    f = 2
    validators = NAMES[: 3 * f + 1]
    liars = set(validators[-f:])
    book = QuorumBook(
        set(validators),
        keyring=_keyring(validators),
        reputation=Reputation(observer="observer", options=ReputationOptions(alpha=0.25, threshold=0.5)),
    )
    events = []
    for round_ in range(8):
        truth = {f"k{round_}": "real"}
        registry = _registry(truth)
        for value in ("real", "fake"):
            proposal = make_proposal("wf", "variable", f"k{round_}", value, proposer="v0")
            events += book.add_proposal(proposal).quarantined
            for v in validators:
                if v in liars:
                    ballot = SIGNERS[v].cast(proposal, "accept" if value == "fake" else "reject")
                else:
                    ballot = await Validator(SIGNERS[v], checkers=registry).review(proposal)
                result = book.add_ballot(ballot)
                events += result.quarantined
    assert {e.peer for e in events} == liars
    assert all(e.reason == "reputation" and e.reputation < 0.5 for e in events)
    assert book.reputation.quarantined == liars
    assert all(book.reputation.score(v) == 1.0 for v in validators if v not in liars)
    # Once quarantined, their ballots are not even looked at.
    p = make_proposal("wf", "variable", "later", "x", proposer="v0")
    book.add_proposal(p)
    assert book.add_ballot(SIGNERS[sorted(liars)[0]].cast(p, "accept")).outcome == "quarantined"


async def test_an_equivocating_liar_is_quarantined_at_once():
    validators = NAMES[:4]
    book = QuorumBook(set(validators), keyring=_keyring(validators))
    p = make_proposal("wf", "variable", "k", "v", proposer="v0")
    book.add_proposal(p)
    book.add_ballot(SIGNERS["v3"].cast(p, "accept"))
    result = book.add_ballot(SIGNERS["v3"].cast(p, "reject"))
    assert result.outcome == "equivocation"
    assert [e.reason for e in result.quarantined] == ["equivocation"]
    assert book.reputation.is_quarantined("v3")


def _split_brain(f: int, liars_count: int, rng: random.Random) -> tuple[bool, bool, QuorumBook]:
    """Two plausible values A and B for one key; liars endorse both, each to a different observer.

    Honest validators endorse the first value they see (their check cannot tell A from B); half
    see A first, half B. Observer X hears the liars' A ballots, observer Y their B ballots.
    """
    validators = NAMES[: 3 * f + 1]
    liars = validators[:liars_count]
    honest = validators[liars_count:]
    rng.shuffle(honest)
    a = make_proposal("wf", "order", "order_id", "o-A", proposer="p")
    b = make_proposal("wf", "order", "order_id", "o-B", proposer="q")
    cut = rng.randint(0, len(honest))
    honest_ballots = []
    for i, v in enumerate(honest):
        first, second = (a, b) if i < cut else (b, a)
        honest_ballots += [SIGNERS[v].cast(first, "accept"), SIGNERS[v].cast(second, "reject")]
    keyring = _keyring(validators)
    x = QuorumBook(set(validators), keyring=keyring)
    y = QuorumBook(set(validators), keyring=keyring)
    for book, target in ((x, a), (y, b)):
        book.add_proposal(a)
        book.add_proposal(b)
        for ballot in honest_ballots + [SIGNERS[liar].cast(target, "accept") for liar in liars]:
            book.add_ballot(ballot)
    x_a = x.decision(a.id)
    y_b = y.decision(b.id)
    return bool(x_a and x_a.outcome == "accepted"), bool(y_b and y_b.outcome == "accepted"), x


@pytest.mark.parametrize("f", [1, 2, 3])
def test_with_f_liars_two_conflicting_values_are_never_both_accepted(f):
    rng = random.Random(f)
    for _ in range(100):
        x_accepts_a, y_accepts_b, _ = _split_brain(f, f, rng)
        assert not (x_accepts_a and y_accepts_b)


@pytest.mark.parametrize("f", [1, 2, 3])
def test_with_f_plus_1_liars_the_bound_breaks_two_observers_accept_conflicting_values(f):
    """Documents the limit: f + 1 coordinated liars can make a false fact accepted.

    With 2f honest validators split f / f, each value gets f honest + (f + 1) lying = 2f + 1
    ballots: observer X accepts o-A while observer Y accepts o-B. Quorum intersection no longer
    contains an honest validator. (Were one observer to hear both sets of lies, it would catch
    the liars accepting two values for one key.)
    """
    rng = random.Random(100 + f)
    broken = 0
    for _ in range(50):
        x_accepts_a, y_accepts_b, _ = _split_brain(f, f + 1, rng)
        broken += x_accepts_a and y_accepts_b
    assert broken > 0
    # The exact split that breaks it, every time.
    validators = NAMES[: 3 * f + 1]
    assert quorum_size(len(validators)) == f + (f + 1)


def test_an_observer_hearing_both_lies_catches_slot_equivocation():
    f = 1
    validators = NAMES[: 3 * f + 1]
    liars = validators[: f + 1]
    book = QuorumBook(set(validators), keyring=_keyring(validators))
    a = make_proposal("wf", "order", "order_id", "o-A", proposer="p")
    b = make_proposal("wf", "order", "order_id", "o-B", proposer="q")
    book.add_proposal(a)
    book.add_proposal(b)
    for liar in liars:
        book.add_ballot(SIGNERS[liar].cast(a, "accept"))
    results = [book.add_ballot(SIGNERS[liar].cast(b, "accept")) for liar in liars]
    assert [r.outcome for r in results] == ["equivocation", "equivocation"]
    assert book.reputation.quarantined == set(liars)
    assert book.decision(b.id) is None or book.decision(b.id).outcome != "accepted"  # type: ignore[union-attr]
