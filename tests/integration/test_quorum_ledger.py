"""A validator's votes survive a restart of its process (real Redis, real SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from mesh.quorum import (
    BallotSigner,
    CheckerRegistry,
    QuorumBook,
    Validator,
    make_proposal,
)
from mesh.security import Keyring, generate_keypair, private_key_to_hex
from mesh.store import RedisVoteLedger
from protocols import Ballot

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _vote_in_a_process(redis_url: str, prefix: str, key_hex: str, value: str, epoch: int, ledger: str) -> Ballot:
    """Start a validator process, read its ballot, SIGKILL it (it never shuts down cleanly)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.validator_proc", redis_url, prefix, key_hex, value, str(epoch), ledger],
        stdout=subprocess.PIPE, cwd=ROOT, env=env, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert line, "the validator process printed no ballot"
    fields = json.loads(line)
    fields["signature"] = bytes.fromhex(fields["signature"])
    return Ballot.model_validate(fields)


@pytest.mark.parametrize("ledger", ["redis", "memory"])
def test_a_restarted_validator_does_not_vote_a_second_value(redis_url: str, key_prefix: str, ledger: str) -> None:
    keys = generate_keypair("v0")
    key_hex = private_key_to_hex(keys.private_key)
    first = _vote_in_a_process(redis_url, key_prefix, key_hex, "5 mg", 0, ledger)
    # The process was SIGKILLed after it voted; a new incarnation gets a conflicting value.
    second = _vote_in_a_process(redis_url, key_prefix, key_hex, "50 mg", 0, ledger)
    book = QuorumBook({"v0", "v1", "v2", "v3"}, keyring=Keyring({"v0": keys.public_key}))
    for value, ballot in (("5 mg", first), ("50 mg", second)):
        book.add_proposal(make_proposal("wf-restart", "variable", "dose", value, proposer="p"))
        book.add_ballot(ballot)
    assert first.verdict == "accept"
    if ledger == "redis":
        assert second.verdict == "reject" and second.reason == "another value was already endorsed for this key"
        assert book.stats["slot_equivocation"] == 0 and not book.reputation.is_quarantined("v0")
    else:
        # Without a persisted ledger (the old behaviour) the honest validator is taken for a liar.
        assert second.verdict == "accept"
        assert book.stats["slot_equivocation"] == 1 and book.reputation.is_quarantined("v0")


async def test_the_ledger_keeps_verdicts_and_epochs(redis_client: aioredis.Redis, key_prefix: str) -> None:
    keys = generate_keypair("v0")
    verdicts = {"ok": True}
    checkers = CheckerRegistry()
    checkers.register("variable", lambda proposal: verdicts["ok"])

    def incarnation() -> Validator:
        ledger = RedisVoteLedger(redis_client, "v0", prefix=key_prefix, ttl_s=60)
        return Validator(BallotSigner("v0", keys.private_key), checkers=checkers, ledger=ledger)

    verdicts["ok"] = False
    rejected = make_proposal("wf-l", "variable", "x", 1, proposer="p")
    assert (await incarnation().review(rejected)).verdict == "reject"
    verdicts["ok"] = True
    # Same proposal after a restart: the same verdict (a different one would be equivocation).
    again = await incarnation().review(rejected)
    assert (again.verdict, again.reason) == ("reject", "deterministic check failed")
    # Epochs move forward only: a later epoch may carry another value, an older one is refused.
    assert (await incarnation().review(make_proposal("wf-l", "variable", "y", "a", proposer="p", epoch=1))).verdict == "accept"
    assert (await incarnation().review(make_proposal("wf-l", "variable", "y", "b", proposer="p", epoch=2))).verdict == "accept"
    stale = await incarnation().review(make_proposal("wf-l", "variable", "y", "c", proposer="p", epoch=1))
    assert stale.verdict == "reject" and "older than epoch 2" in stale.reason
    ttl = await redis_client.ttl(RedisVoteLedger(redis_client, "v0", prefix=key_prefix).key("wf-l"))
    assert 0 < ttl <= 60
