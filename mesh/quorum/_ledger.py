"""The vote ledger: what a validator voted, persisted before the ballot leaves the process.

Why a boundary here: a validator's safety rests on never endorsing two values for one slot and
epoch, and never voting twice differently on one proposal. Kept only in memory, both promises
die with the process: after a restart it would endorse a second value and be quarantined by its
peers as an equivocator. Two calls hold the promise, so the validator is the same over Redis
(``RedisVoteLedger``) and over the in-memory ledger used by unit tests (``MemoryVoteLedger``).
Both are first-writer-wins and atomic, so two incarnations of one validator racing (a zombie and
its successor) still record one answer. redis errors become ``StoreUnavailable``: a validator
that cannot persist its vote does not vote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from mesh.errors import StoreUnavailable

__all__ = ["Endorsement", "MemoryVoteLedger", "RedisVoteLedger", "VoteLedger"]


@dataclass(frozen=True, slots=True)
class Endorsement:
    """The ledger's answer to "may I endorse this value in this slot and epoch?"."""

    status: Literal["ok", "stale", "taken"]
    """``ok``: endorsed (now or before); ``stale``: a later epoch was voted; ``taken``: another value."""
    value_hash: str = ""
    """The value endorsed in that slot and epoch (the earlier one when ``taken``)."""
    floor: int = 0
    """The highest epoch this validator voted in for the slot."""


class VoteLedger(Protocol):
    """Where a validator records its votes; every method is atomic and first-writer-wins."""

    async def endorse(self, workflow_id: str, slot: str, epoch: int, value_hash: str) -> Endorsement:
        """Endorse ``value_hash`` in ``slot`` at ``epoch`` unless another value or a later epoch holds it."""
        ...

    async def record_ballot(self, workflow_id: str, proposal_id: str, verdict: str, reason: str) -> tuple[str, str]:
        """Record the verdict on ``proposal_id``; return the one recorded first ``(verdict, reason)``."""
        ...

    async def recorded_ballot(self, workflow_id: str, proposal_id: str) -> tuple[str, str] | None:
        """The verdict recorded on ``proposal_id`` ``(verdict, reason)``, or None."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class MemoryVoteLedger:
    """The ledger in one process's memory (lost on restart: only for tests and throwaway meshes)."""

    def __init__(self) -> None:
        """An empty ledger."""
        self._floors: dict[tuple[str, str], int] = {}
        self._votes: dict[tuple[str, str, int], str] = {}
        self._ballots: dict[tuple[str, str], tuple[str, str]] = {}

    async def endorse(self, workflow_id: str, slot: str, epoch: int, value_hash: str) -> Endorsement:
        """See ``VoteLedger.endorse``."""
        floor = self._floors.get((workflow_id, slot), -1)
        if epoch < floor:
            return Endorsement("stale", "", floor)
        endorsed = self._votes.setdefault((workflow_id, slot, epoch), value_hash)
        self._floors[(workflow_id, slot)] = max(floor, epoch)
        return Endorsement("ok" if endorsed == value_hash else "taken", endorsed, max(floor, epoch))

    async def record_ballot(self, workflow_id: str, proposal_id: str, verdict: str, reason: str) -> tuple[str, str]:
        """See ``VoteLedger.record_ballot``."""
        return self._ballots.setdefault((workflow_id, proposal_id), (verdict, reason))

    async def recorded_ballot(self, workflow_id: str, proposal_id: str) -> tuple[str, str] | None:
        """See ``VoteLedger.recorded_ballot``."""
        return self._ballots.get((workflow_id, proposal_id))

    async def aclose(self) -> None:
        """Nothing to release."""


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

    def __init__(self, client: Any, voter: str, *, prefix: str = "mesh:", ttl_s: int = 7 * 24 * 3600) -> None:
        """Record ``voter``'s votes through ``client`` (a ``redis.asyncio.Redis``)."""
        self._client = client
        self.voter = voter
        self.prefix = prefix
        self.ttl_s = ttl_s

    def key(self, workflow_id: str) -> str:
        """The Redis hash holding this validator's votes on ``workflow_id``."""
        return f"{self.prefix}votes:{self.voter}:{{{workflow_id}}}"

    async def endorse(self, workflow_id: str, slot: str, epoch: int, value_hash: str) -> Endorsement:
        """See ``VoteLedger.endorse``."""
        status, endorsed, floor = await self._call(
            self._client.eval(_ENDORSE, 1, self.key(workflow_id), slot, str(epoch), value_hash, str(self.ttl_s))
        )
        return Endorsement(_text(status), _text(endorsed), int(_text(floor)))  # type: ignore[arg-type]

    async def record_ballot(self, workflow_id: str, proposal_id: str, verdict: str, reason: str) -> tuple[str, str]:
        """See ``VoteLedger.record_ballot``."""
        stored = await self._call(
            self._client.eval(_RECORD, 1, self.key(workflow_id), proposal_id, f"{verdict}\n{reason}", str(self.ttl_s))
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
        from redis.exceptions import RedisError

        try:
            return await awaitable
        except RedisError as exc:
            raise StoreUnavailable(f"redis vote ledger of {self.voter}: {type(exc).__name__}: {exc}") from exc

    def __repr__(self) -> str:
        return f"RedisVoteLedger(voter={self.voter!r}, prefix={self.prefix!r})"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
