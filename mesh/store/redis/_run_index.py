"""The run index in Redis (the schema is in ``mesh.store.run_index``'s docstring)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from mesh.store.base import workflow_tag
from mesh.store.redis._connection import (
    REDIS_ERRORS,
    RedisClient,
    RedisConnection,
    redis_call,
    register_script,
)
from mesh.store.run_index import RunSummary, matches

__all__ = ["RedisRunIndex"]

T = TypeVar("T")

# KEYS[1] = run hash; ARGV = events, doc, updated_ms, status
_RECORD = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'events') or '-1')
if tonumber(ARGV[1]) <= cur then
  return 0
end
redis.call('HSET', KEYS[1], 'events', ARGV[1], 'doc', ARGV[2], 'updated_ms', ARGV[3], 'status', ARGV[4])
return 1
"""


class RedisRunIndex:
    """The run index in Redis (schema in the module docstring)."""

    def __init__(self, client: RedisClient, *, key_prefix: str = "mesh:") -> None:
        """Wrap a ``redis.asyncio`` client (``decode_responses`` False)."""
        self._redis = client
        self.key_prefix = key_prefix
        self._record = register_script(client, _RECORD)

    @classmethod
    def from_url(
        cls, url: str, *, key_prefix: str = "mesh:", socket_timeout_s: float = 5.0
    ) -> RedisRunIndex:
        """Connect lazily to one Redis server by URL (``connect`` takes every connection option)."""
        return cls.connect(
            RedisConnection(url=url), key_prefix=key_prefix, socket_timeout_s=socket_timeout_s
        )

    @classmethod
    def connect(
        cls,
        connection: RedisConnection,
        *,
        key_prefix: str = "mesh:",
        socket_timeout_s: float = 5.0,
    ) -> RedisRunIndex:
        """Connect lazily through ``connection`` (standalone, Cluster or Sentinel; auth; TLS)."""
        return cls(connection.client(socket_timeout_s=socket_timeout_s), key_prefix=key_prefix)

    def run_key(self, workflow_id: str) -> str:
        """Key of one run's hash."""
        return f"{self.key_prefix}run:{workflow_tag(workflow_id)}"

    @property
    def recent_key(self) -> str:
        """Key of the sorted set of runs by update time."""
        return f"{self.key_prefix}runs"

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        return await redis_call(what, fn())

    async def record(self, run: RunSummary) -> bool:
        """Conditional write of the hash, then the sorted set."""

        async def go() -> bool:
            stored = await self._record(
                keys=[self.run_key(run.workflow_id)],
                args=[run.events, run.to_json(), run.updated_ms, run.status],
            )
            if int(stored):
                await self._redis.zadd(self.recent_key, {run.workflow_id: run.updated_ms})
            return bool(int(stored))

        return await self._call(f"record run {run.workflow_id}", go)

    async def get(self, workflow_id: str) -> RunSummary | None:
        """One HGET."""

        async def go() -> Any:
            return await self._redis.hget(self.run_key(workflow_id), "doc")  # type: ignore[misc]

        raw = await self._call(f"read run {workflow_id}", go)
        return None if raw is None else RunSummary.from_json(raw)

    async def list(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        updated_since_ms: int = 0,
        limit: int = 50,
    ) -> Sequence[RunSummary]:
        """Walk the sorted set newest first, in batches, dropping members whose hash expired."""
        found: list[RunSummary] = []
        batch = max(min(limit, 500), 50)

        async def go() -> None:
            start = 0
            while len(found) < limit:
                members = await self._redis.zrevrangebyscore(
                    self.recent_key,
                    "+inf",
                    updated_since_ms,
                    start=start,
                    num=batch,
                )
                if not members:
                    return
                pipe = self._redis.pipeline(transaction=False)
                for member in members:
                    pipe.hget(self.run_key(member.decode()), "doc")
                docs = await pipe.execute()
                gone = [m for m, d in zip(members, docs, strict=True) if d is None]
                for doc in docs:
                    if doc is None:
                        continue
                    run = RunSummary.from_json(doc)
                    if matches(run, status, name, updated_since_ms) and len(found) < limit:
                        found.append(run)
                if gone:
                    await self._redis.zrem(self.recent_key, *gone)
                start += len(members) - len(gone)
                if len(members) < batch:
                    return

        if limit > 0:
            await self._call("list runs", go)
        return found

    async def expire(self, workflow_id: str, ttl_s: int) -> None:
        """EXPIRE on the run's hash (the sorted-set member goes at the next listing after it expired)."""

        async def go() -> None:
            await self._redis.expire(self.run_key(workflow_id), ttl_s)

        await self._call(f"expire run {workflow_id}", go)

    async def aclose(self) -> None:
        """Close the connection pool."""
        with contextlib.suppress(*REDIS_ERRORS):
            await self._redis.aclose()
