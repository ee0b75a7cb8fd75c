"""A validator process for restart tests: reviews one proposal, prints its ballot, then waits.

Usage: python -m tests.integration.validator_proc REDIS_URL PREFIX PRIVATE_KEY_HEX VALUE EPOCH [memory]
The ballot is printed as one JSON line; the process then sleeps until it is killed.
"""

from __future__ import annotations

import asyncio
import json
import sys

import redis.asyncio as aioredis

from mesh.quorum import (
    BallotSigner,
    CheckerRegistry,
    Validator,
    make_proposal,
)
from mesh.security import private_key_from_hex
from mesh.store import InMemoryVoteLedger, RedisVoteLedger


async def main(url: str, prefix: str, key_hex: str, value: str, epoch: str, ledger_kind: str = "redis") -> None:
    client = aioredis.Redis.from_url(url)
    checkers = CheckerRegistry()
    checkers.register("variable", lambda proposal: True)
    ledger = InMemoryVoteLedger() if ledger_kind == "memory" else RedisVoteLedger(client, "v0", prefix=prefix)
    validator = Validator(BallotSigner("v0", private_key_from_hex(key_hex)), checkers=checkers, ledger=ledger)
    proposal = make_proposal("wf-restart", "variable", "dose", value, proposer="p", epoch=int(epoch))
    ballot = await validator.review(proposal)
    fields = ballot.model_dump()
    fields["signature"] = ballot.signature.hex()
    print(json.dumps(fields), flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
