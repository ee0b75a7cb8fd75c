"""Redis StateStore: one hash per key holds the fence epoch, the version counter and kept versions.

Everything about a key lives in one Redis hash, so one Lua script checks the fence and writes the
new version atomically (and the layout is cluster-safe: one key per script). Durability: Redis
writes its AOF before it replies, so an acknowledged checkpoint survives a crash of the Redis
process; with ``appendfsync everysec`` an OS crash can lose up to one second, with ``always`` none.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mesh.errors import CheckpointNotFound, StaleEpochError, StoreError, StoreUnavailable
from mesh.store.base import Checkpoint

__all__ = ["RedisStateStore"]

T = TypeVar("T")

# KEYS[1] = hash, KEYS[2] = workflow index set (or the hash again when none)
# ARGV = epoch, data, now_ms, keep, owner, has_index
_WRITE = """
local fence = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0')
local epoch = tonumber(ARGV[1])
if epoch < fence then
  return {-1, fence}
end
if epoch > fence then
  redis.call('HSET', KEYS[1], 'fence', epoch)
end
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'v:' .. v, ARGV[2], 'e:' .. v, epoch, 't:' .. v, ARGV[3], 'o:' .. v, ARGV[5])
local keep = tonumber(ARGV[4])
if v > keep then
  local old = v - keep
  redis.call('HDEL', KEYS[1], 'v:' .. old, 'e:' .. old, 't:' .. old, 'o:' .. old)
end
if ARGV[6] == '1' then
  redis.call('SADD', KEYS[2], KEYS[1])
end
return {v, epoch}
"""

# KEYS[1] = hash; ARGV[1] = version or '' for latest
_READ = """
local v = ARGV[1]
if v == '' then
  v = redis.call('HGET', KEYS[1], 'version')
  if not v then return false end
end
local r = redis.call('HMGET', KEYS[1], 'v:' .. v, 'e:' .. v, 't:' .. v, 'o:' .. v)
if not r[1] then return false end
return {tonumber(v), r[1], r[2], r[3], r[4]}
"""

# KEYS[1] = hash; ARGV[1] = owner
_CLAIM = """
local e = redis.call('HINCRBY', KEYS[1], 'fence', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
return e
"""


def _translate(exc: RedisError, what: str) -> StoreError:
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return StoreUnavailable(f"{what}: Redis unreachable or slow: {type(exc).__name__}: {exc}")
    return StoreError(f"{what}: {type(exc).__name__}: {exc}")


class RedisStateStore:
    """Fenced, versioned checkpoints in Redis."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        key_prefix: str = "mesh:",
        keep_versions: int = 50,
    ) -> None:
        """Wrap a ``redis.asyncio`` client (``decode_responses`` must be False)."""
        self._redis = client
        self.key_prefix = key_prefix
        self.keep_versions = keep_versions
        self._write = client.register_script(_WRITE)
        self._read = client.register_script(_READ)
        self._claim = client.register_script(_CLAIM)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = "mesh:",
        keep_versions: int = 50,
        socket_timeout_s: float = 5.0,
    ) -> RedisStateStore:
        """Connect lazily to a Redis URL."""
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            health_check_interval=10,
        )
        return cls(client, key_prefix=key_prefix, keep_versions=keep_versions)

    def _hash(self, key: str) -> str:
        return f"{self.key_prefix}ckpt:{{{key}}}"

    def _index(self, workflow_id: str) -> str:
        return f"{self.key_prefix}wfidx:{{{workflow_id}}}"

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            return await fn()
        except RedisError as exc:
            raise _translate(exc, what) from exc
        except OSError as exc:
            raise StoreUnavailable(f"{what}: Redis unreachable: {exc}") from exc

    async def ping(self) -> None:
        """Check the connection; ``StoreUnavailable`` if Redis does not answer."""
        await self._call("ping", self._redis.ping)

    async def claim(self, key: str, owner: str) -> int:
        """Take ownership of ``key`` with a new, higher epoch."""
        result = await self._call(f"claim {key}", lambda: self._claim(keys=[self._hash(key)], args=[owner]))
        return int(result)

    async def current_epoch(self, key: str) -> int:
        """The highest epoch claimed or written for ``key`` (0 if none)."""
        async def fence() -> Any:
            return await self._redis.hget(self._hash(key), "fence")  # type: ignore[misc]

        value = await self._call(f"epoch of {key}", fence)
        return int(value or 0)

    async def write(
        self,
        key: str,
        data: bytes,
        *,
        epoch: int,
        owner: str = "",
        workflow_id: str | None = None,
    ) -> Checkpoint:
        """Write a new version, refused if a newer epoch holds the key."""
        now_ms = int(time.time() * 1000)
        h = self._hash(key)
        index = self._index(workflow_id) if workflow_id else h
        result: Any = await self._call(
            f"write checkpoint {key}",
            lambda: self._write(
                keys=[h, index],
                args=[epoch, data, now_ms, self.keep_versions, owner, "1" if workflow_id else "0"],
            ),
        )
        version, current = int(result[0]), int(result[1])
        if version < 0:
            raise StaleEpochError(
                f"checkpoint write to {key!r} with epoch {epoch} refused: epoch {current} owns it now",
                attempted_epoch=epoch,
                current_epoch=current,
            )
        return Checkpoint(key=key, version=version, epoch=epoch, data=data, written_at_ms=now_ms, owner=owner)

    async def read(self, key: str, version: int | None = None) -> Checkpoint:
        """Latest (or a kept) version of ``key``."""
        result: Any = await self._call(
            f"read checkpoint {key}",
            lambda: self._read(keys=[self._hash(key)], args=["" if version is None else str(version)]),
        )
        if not result:
            which = "any version" if version is None else f"version {version}"
            raise CheckpointNotFound(f"no checkpoint {key!r} ({which})")
        v, data, epoch, ts, owner = result
        return Checkpoint(
            key=key,
            version=int(v),
            epoch=int(epoch),
            data=bytes(data),
            written_at_ms=int(ts),
            owner=(owner or b"").decode(),
        )

    async def expire_workflow(self, workflow_id: str, ttl_s: int) -> int:
        """Set a TTL on every checkpoint of a workflow (and on its index)."""
        index = self._index(workflow_id)
        async def list_keys() -> Any:
            return await self._redis.smembers(index)  # type: ignore[misc]

        members = await self._call("list workflow keys", list_keys)

        async def apply() -> None:
            pipe = self._redis.pipeline(transaction=False)
            for member in members:
                pipe.expire(member, ttl_s)
            pipe.expire(index, ttl_s)
            await pipe.execute()

        await self._call(f"expire workflow {workflow_id}", apply)
        return len(members)

    async def delete_prefix(self) -> int:
        """Delete every key under this store's prefix (tests and ``mesh dev`` resets)."""
        async def run() -> int:
            n = 0
            async for k in self._redis.scan_iter(match=f"{self.key_prefix}*", count=500):
                n += await self._redis.delete(k)
            return n

        return await self._call("delete prefix", run)

    async def aclose(self) -> None:
        """Close the connection pool."""
        try:
            await self._redis.aclose()
        except RedisError:
            pass
