"""The vote ledger (``mesh.store.VoteLedger``) in Redis: one hash per validator and workflow."""

from __future__ import annotations

from typing import Any

from mesh.store.base import Endorsement
from mesh.store.redis._connection import RedisClient, redis_call
from mesh.store.redis._context_maps import glob_escape

__all__ = ["RedisVoteLedger", "read_ballots"]

_ENDORSE = """
local floor = tonumber(redis.call('HGET', KEYS[1], 'floor:' .. ARGV[1]) or '-1')
local epoch = tonumber(ARGV[2])
if epoch < floor then return {'stale', '', tostring(floor)} end
local field = 'vote:' .. ARGV[1] .. '@' .. ARGV[2]
local endorsed = redis.call('HGET', KEYS[1], field)
if not endorsed then
  redis.call('HSET', KEYS[1], field, ARGV[3])
  endorsed = ARGV[3]
end
if epoch > floor then
  redis.call('HSET', KEYS[1], 'floor:' .. ARGV[1], ARGV[2])
  floor = epoch
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
if endorsed == ARGV[3] then return {'ok', endorsed, tostring(floor)} end
return {'taken', endorsed, tostring(floor)}
"""

_RECORD = """
redis.call('HSETNX', KEYS[1], 'ballot:' .. ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return redis.call('HGET', KEYS[1], 'ballot:' .. ARGV[1])
"""


class RedisVoteLedger:
    """The ledger in Redis: one hash per validator and workflow, expiring with the workflow.

    Keys: ``{prefix}votes:{voter}:{{workflow_id}}`` (the workflow's hash tag: its Cluster slot); fields ``floor:<slot>``, ``vote:<slot>@<epoch>``
    and ``ballot:<proposal id>``. Each key expires ``ttl_s`` after its last vote, so finished
    workflows do not accumulate (set it above the longest a vote on one workflow may stay open).
    """

    def __init__(
        self, client: RedisClient, voter: str, *, prefix: str = "mesh:", ttl_s: int = 7 * 24 * 3600
    ) -> None:
        """Record ``voter``'s votes through ``client`` (shared: ``aclose`` leaves it open)."""
        self._client = client
        self.voter = voter
        self.prefix = prefix
        self.ttl_s = ttl_s

    def key(self, workflow_id: str) -> str:
        """The Redis hash holding this validator's votes on ``workflow_id``."""
        return f"{self.prefix}votes:{self.voter}:{{{workflow_id}}}"

    async def endorse(
        self, workflow_id: str, slot: str, epoch: int, value_hash: str
    ) -> Endorsement:
        """See ``VoteLedger.endorse``."""
        status, endorsed, floor = await self._call(
            self._client.eval(
                _ENDORSE, 1, self.key(workflow_id), slot, str(epoch), value_hash, str(self.ttl_s)
            )
        )
        return Endorsement(_text(status), _text(endorsed), int(_text(floor)))  # type: ignore[arg-type]

    async def record_ballot(
        self, workflow_id: str, proposal_id: str, verdict: str, reason: str
    ) -> tuple[str, str]:
        """See ``VoteLedger.record_ballot``."""
        stored = await self._call(
            self._client.eval(
                _RECORD,
                1,
                self.key(workflow_id),
                proposal_id,
                f"{verdict}\n{reason}",
                str(self.ttl_s),
            )
        )
        first, _, why = _text(stored).partition("\n")
        return first, why

    async def recorded_ballot(self, workflow_id: str, proposal_id: str) -> tuple[str, str] | None:
        """See ``VoteLedger.recorded_ballot``."""
        stored = await self._call(self._client.hget(self.key(workflow_id), f"ballot:{proposal_id}"))
        if stored is None:
            return None
        first, _, why = _text(stored).partition("\n")
        return first, why

    async def aclose(self) -> None:
        """The client belongs to the caller; nothing to close."""

    async def _call(self, awaitable: Any) -> Any:
        return await redis_call(f"vote ledger of {self.voter}", awaitable)

    def __repr__(self) -> str:
        return f"RedisVoteLedger(voter={self.voter!r}, prefix={self.prefix!r})"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def read_ballots(
    client: RedisClient, workflow_id: str, *, prefix: str = "mesh:"
) -> dict[str, dict[str, str]]:
    """Every validator's recorded verdicts on ``workflow_id``: ``{voter: {proposal id: verdict}}`` (a SCAN)."""
    head, tail = f"{prefix}votes:", f":{{{workflow_id}}}"  # the layout RedisVoteLedger.key writes

    async def scan() -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        async for key in client.scan_iter(
            match=glob_escape(head) + "*" + glob_escape(tail), count=200
        ):
            name = _text(key)
            voter = name[len(head) : -len(tail)]
            fields = await client.hgetall(key)  # type: ignore[misc]
            for f, v in fields.items():
                fname = _text(f)
                if fname.startswith("ballot:"):
                    out.setdefault(voter, {})[fname[len("ballot:") :]] = _text(v).partition("\n")[0]
        return out

    return await redis_call(f"read ballots of {workflow_id}", scan())
