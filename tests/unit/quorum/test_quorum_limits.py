"""Bounded memory under floods, ballot expiry and proposal epochs (issue #8 defects 5 and 6)."""

from __future__ import annotations

import random
import tracemalloc

import pytest

from mesh.quorum import (
    BallotSigner,
    BookLimits,
    CheckerRegistry,
    QuorumBook,
    Validator,
    make_proposal,
)
from mesh.security import Keyring, generate_keypair
from protocols import Ballot

VOTERS = ("v0", "v1", "v2", "v3")
KEYS = {v: generate_keypair(v) for v in VOTERS}
KEYRING = Keyring({v: KEYS[v].public_key for v in VOTERS})
SIGNERS = {v: BallotSigner(v, KEYS[v].private_key) for v in VOTERS}
FAR_FUTURE = 2**62


def _junk_ballot(rnd: random.Random, voters: list[str]) -> Ballot:
    """A well-formed ballot with random content (not signed by anyone)."""
    return Ballot.model_construct(
        proposal_id=rnd.randbytes(16).hex(),
        voter=rnd.choice(voters),
        verdict=rnd.choice(["accept", "reject"]),
        value_hash=rnd.randbytes(16).hex(),
        reason="x" * rnd.randrange(0, 200),
        epoch=rnd.randrange(0, 5),
        expires_at_ms=FAR_FUTURE,
        signature=rnd.randbytes(64),
    )


@pytest.mark.slow
def test_200k_junk_ballots_cost_bounded_memory_and_are_counted() -> None:
    rnd = random.Random(8)
    validators = [f"val-{i}" for i in range(100)]
    outsiders = [f"out-{i}" for i in range(50)]
    limits = BookLimits()
    book = QuorumBook(set(validators), limits=limits)
    senders = validators + outsiders
    reasons = ["x" * rnd.randrange(0, 200) for _ in range(64)]
    signatures = [rnd.randbytes(64) for _ in range(64)]
    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        # 200,000 distinct junk ballots, each for a proposal nobody will ever make.
        for i in range(200_000):
            book.add_ballot(
                Ballot(
                    proposal_id=f"{i:032x}",
                    voter=senders[(i * 7919) % len(senders)],
                    verdict="accept" if i % 2 else "reject",
                    value_hash=f"{i * 31:032x}",
                    reason=reasons[i % 64],
                    epoch=i % 5,
                    expires_at_ms=FAR_FUTURE,
                    signature=signatures[i % 64],
                )
            )
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    held = book.buffered
    dropped = sum(n for k, n in book.stats.items() if k.startswith("dropped_")) + book.stats["not_validator"]
    assert held == limits.max_buffered
    assert held + dropped == 200_000
    assert book.stats["dropped_buffer_full"] > 0 and book.stats["not_validator"] > 0
    # 10,000 held ballots of at most ~1 KiB each; the unbounded book held all 200,000 (149 MiB).
    assert current - baseline < 16 * 2**20, f"{(current - baseline) / 2**20:.1f} MiB retained"
    assert peak - baseline < 20 * 2**20


def test_one_sender_cannot_crowd_out_the_others() -> None:
    rnd = random.Random(1)
    book = QuorumBook(set(VOTERS), limits=BookLimits(max_buffered_per_sender=100))
    for _ in range(5_000):
        book.add_ballot(_junk_ballot(rnd, ["v3"]))
    assert book.stats["dropped_sender_cap"] == 4_900
    # The honest validators' early ballots still get buffered and counted once the proposal arrives.
    proposal = make_proposal("wf", "variable", "k", 1, proposer="p")
    for voter in ("v0", "v1", "v2"):
        assert book.add_ballot(SIGNERS[voter].cast(proposal, "accept")).outcome == "buffered"
    result = book.add_proposal(proposal)
    assert result.decision is not None and result.decision.outcome == "accepted"


def test_open_proposals_are_capped_per_proposer_and_in_total() -> None:
    book = QuorumBook(set(VOTERS), limits=BookLimits(max_tallies=300, max_open_per_proposer=100))
    for i in range(1_000):
        book.add_proposal(make_proposal("wf", "variable", f"k{i}", i, proposer=f"p{i % 5}"))
    assert len(book.tallies) == 300
    assert book.stats["dropped_proposer_cap"] == 0 and book.stats["dropped_tally_cap"] == 700
    flood = QuorumBook(set(VOTERS), limits=BookLimits(max_open_per_proposer=100))
    for i in range(1_000):
        flood.add_proposal(make_proposal("wf", "variable", f"k{i}", i, proposer="spammer"))
    assert len(flood.tallies) == 100 and flood.stats["dropped_proposer_cap"] == 900
    # Decided tallies make room: the oldest decided ones are forgotten first.
    decided = QuorumBook(set(VOTERS), keyring=KEYRING, limits=BookLimits(max_tallies=50))
    for i in range(200):
        p = make_proposal("wf", "variable", f"d{i}", i, proposer="p")
        decided.add_proposal(p)
        for voter in ("v0", "v1", "v2"):
            decided.add_ballot(SIGNERS[voter].cast(p, "accept"))
    assert len(decided.tallies) <= 50 and decided.stats["evicted_tallies"] >= 150


async def _certificate(value: str, epoch: int, *, now_ms: int, ttl_ms: int):
    checkers = CheckerRegistry()
    checkers.register("variable", lambda proposal: True)
    proposal = make_proposal("wf", "variable", "dose", value, proposer="p", epoch=epoch)
    ballots = []
    for voter in ("v0", "v1", "v2"):
        validator = Validator(SIGNERS[voter], checkers=checkers, ballot_ttl_ms=ttl_ms, now_ms=lambda: now_ms)
        ballots.append(await validator.review(proposal))
    book = QuorumBook(set(VOTERS), keyring=KEYRING, limits=BookLimits(now_ms=lambda: now_ms))
    book.add_proposal(proposal)
    decision = None
    for ballot in ballots:
        decision = book.add_ballot(ballot).decision or decision
    assert decision is not None and decision.outcome == "accepted"
    return proposal, decision.to_event()


async def test_a_fresh_observer_refuses_an_expired_certificate() -> None:
    t0 = 1_700_000_000_000
    proposal, certificate = await _certificate("5 mg", 0, now_ms=t0, ttl_ms=60_000)
    within = QuorumBook(set(VOTERS), keyring=KEYRING, limits=BookLimits(now_ms=lambda: t0 + 59_000))
    assert within.add_certificate(proposal, certificate).decision is not None
    later = QuorumBook(set(VOTERS), keyring=KEYRING, limits=BookLimits(now_ms=lambda: t0 + 61_000))
    result = later.add_certificate(proposal, certificate)
    assert result.decision is None and result.outcome == "certificate_insufficient"
    assert later.stats["expired"] == 3
    # The expiry is signed: moving it forward breaks the ballots' signatures.
    forged = certificate.model_copy(
        update={"ballots": tuple(b.model_copy(update={"expires_at_ms": t0 + 10**9}) for b in certificate.ballots)}
    )
    again = QuorumBook(set(VOTERS), keyring=KEYRING, limits=BookLimits(now_ms=lambda: t0 + 61_000))
    assert again.add_certificate(proposal, forged).decision is None and again.stats["forged"] == 3


async def test_an_observer_refuses_a_certificate_of_a_superseded_epoch() -> None:
    t0 = 1_700_000_000_000
    old_p, old_cert = await _certificate("5 mg", 1, now_ms=t0, ttl_ms=600_000)
    new_p, new_cert = await _certificate("2 mg", 2, now_ms=t0 + 1_000, ttl_ms=600_000)
    observer = QuorumBook(set(VOTERS), keyring=KEYRING, limits=BookLimits(now_ms=lambda: t0 + 2_000))
    assert observer.add_certificate(new_p, new_cert).decision is not None
    result = observer.add_certificate(old_p, old_cert)
    assert result.decision is None and observer.stats["stale_epoch"] == 1
    # A ballot cannot be moved to another epoch: it names its epoch and the tally checks it.
    moved = new_cert.ballots[0].model_copy(update={"proposal_id": old_p.id})
    fresh = QuorumBook(set(VOTERS), keyring=KEYRING, limits=BookLimits(now_ms=lambda: t0 + 2_000))
    fresh.add_proposal(old_p)
    assert fresh.add_ballot(moved).outcome == "wrong_epoch"


def test_the_flood_benchmark_compares_capped_and_uncapped_books() -> None:
    from bench.quorum import UNCAPPED, flood

    ours, baseline = flood(BookLimits(max_buffered=500), 2_000), flood(UNCAPPED, 2_000)
    assert (ours[2], ours[3]) == (500, 1_500) and (baseline[2], baseline[3]) == (2_000, 0)
    assert ours[0] < baseline[0]
