"""Redis StateStore: one hash per key holds the fence epoch, the version counter and kept versions.

Everything about a key lives in one Redis hash, so one Lua script checks the fence and writes the
new version atomically. Keys of one workflow carry its hash tag (``{<workflow id>}``, see
``mesh.store.step_key``), so the write script, which also adds the key to the workflow's index,
touches one slot and runs unchanged on Redis Cluster. Layout (``P`` is the key prefix)::

    P ckpt:wf:{<workflow>}:step:<step>      hash  fence, version, owner, v:/e:/t:/o:<n> per kept version
    P ckpt:wf:{<workflow>}:secret:<name>    hash  (same; a sealed secret variable)
    P ckpt:{<other key>}                    hash  (keys without a tag, e.g. agent keys, are their own tag)
    P wfidx:{<workflow>}                    set   every checkpoint key of the workflow (for expiry)

Durability: Redis writes its AOF before it replies, so an acknowledged checkpoint survives a crash
of the Redis process; with ``appendfsync everysec`` an OS crash can lose up to one second, with
``always`` none. Replication to replicas is asynchronous, so a failover (Sentinel, Cluster) can
lose writes the old primary acknowledged but had not yet sent. With ``wait_replicas`` > 0 each
write and claim is followed by ``WAIT`` on the same connection and acknowledged only when that many
replicas have it (else ``ReplicationTimeout``): a promoted replica then holds every acknowledged
checkpoint and fence. Redis 7.0 has no ``WAITAOF``; ``WAIT`` confirms the replica received the
write, not that it fsync'd it, which is enough unless primary and replica crash together.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import AskError, MovedError, NoScriptError, TryAgainError

from mesh.errors import (
    CheckpointNotFound,
    ReplicationTimeout,
    StaleEpochError,
    StoreUnavailable,
    UsageError,
)
from mesh.store.base import Checkpoint, hash_tag, require_workflow_key, workflow_tag
from mesh.store.redis._connection import (
    REDIS_ERRORS,
    RedisClient,
    RedisConnection,
    redis_call,
    register_script,
)

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


class RedisStateStore:
    """Fenced, versioned checkpoints in Redis (standalone, Sentinel or Cluster)."""

    def __init__(
        self,
        client: RedisClient,
        *,
        key_prefix: str = "mesh:",
        keep_versions: int = 50,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        """Wrap a ``redis.asyncio`` client or cluster client (``decode_responses`` must be False).

        ``wait_replicas``: replicas that must confirm each write and claim (``WAIT``) before it is
        acknowledged, within ``wait_timeout_ms`` milliseconds; 0 acknowledges on the primary's reply.
        """
        if "{" in key_prefix or "}" in key_prefix:
            raise UsageError(
                f"key prefix {key_prefix!r} must not contain braces (they pick the cluster slot)"
            )
        if wait_replicas < 0 or wait_timeout_ms <= 0:
            raise UsageError("wait_replicas must be >= 0 and wait_timeout_ms > 0")
        self._redis = client
        self.key_prefix = key_prefix
        self.keep_versions = keep_versions
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._node_clients: dict[str, aioredis.Redis] = {}
        self._write = register_script(client, _WRITE)
        self._read = register_script(client, _READ)
        self._claim = register_script(client, _CLAIM)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = "mesh:",
        keep_versions: int = 50,
        socket_timeout_s: float = 5.0,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> RedisStateStore:
        """Connect lazily to one Redis server by URL (``connect`` takes every connection option)."""
        return cls.connect(
            RedisConnection(url=url),
            key_prefix=key_prefix,
            keep_versions=keep_versions,
            socket_timeout_s=socket_timeout_s,
            wait_replicas=wait_replicas,
            wait_timeout_ms=wait_timeout_ms,
        )

    @classmethod
    def connect(
        cls,
        connection: RedisConnection,
        *,
        key_prefix: str = "mesh:",
        keep_versions: int = 50,
        socket_timeout_s: float = 5.0,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> RedisStateStore:
        """Connect lazily through ``connection`` (standalone, Cluster or Sentinel; auth; TLS)."""
        return cls(
            connection.client(socket_timeout_s=socket_timeout_s),
            key_prefix=key_prefix,
            keep_versions=keep_versions,
            wait_replicas=wait_replicas,
            wait_timeout_ms=wait_timeout_ms,
        )

    def redis_key(self, key: str) -> str:
        """The Redis hash holding checkpoint ``key`` (its hash tag kept, or the whole key as the tag)."""
        tag = hash_tag(key)
        return f"{self.key_prefix}ckpt:{key}" if tag != key else f"{self.key_prefix}ckpt:{{{key}}}"

    def index_key(self, workflow_id: str) -> str:
        """The Redis set listing a workflow's checkpoint keys (same slot as they)."""
        return f"{self.key_prefix}wfidx:{workflow_tag(workflow_id)}"

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        return await redis_call(what, fn())

    async def _replicated(
        self, what: str, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """Run ``script``; with ``wait_replicas``, acknowledge only once that many replicas have it.

        ``WAIT`` counts the writes of the connection it is sent on, so the script and ``WAIT`` go
        in one pipeline (one connection, in order). On a cluster that pipeline goes to the primary
        of the keys' slot through a plain client of that node: a redirected script was not applied
        there, and a ``WAIT`` on the old node would vouch for nothing, so after ``MOVED`` (or a
        dead node) the slot map is reloaded and the pair is sent again.
        """
        if self.wait_replicas == 0:
            return await script(keys=keys, args=args)
        for _ in range(3):
            target = await self._primary_for(keys[0])
            pipe = target.pipeline(transaction=False)
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            try:
                result, acked = await pipe.execute(raise_on_error=False)
            except REDIS_ERRORS:
                await self._reload_slots()
                raise
            if isinstance(result, NoScriptError):
                await target.script_load(script.script)
                continue
            if isinstance(result, MovedError | AskError | TryAgainError):
                await self._reload_slots()
                continue
            if isinstance(result, Exception):
                raise result
            if isinstance(acked, Exception):
                raise ReplicationTimeout(
                    f"{what}: applied on the primary, replication unconfirmed: {acked}"
                )
            if int(acked) < self.wait_replicas:
                raise ReplicationTimeout(
                    f"{what}: applied on the primary but only {int(acked)} of {self.wait_replicas} replica(s) "
                    f"confirmed it within {self.wait_timeout_ms} ms; not acknowledged (a failover could lose it)"
                )
            return result
        raise StoreUnavailable(f"{what}: the cluster kept redirecting the write; not applied")

    async def _primary_for(self, key: str) -> aioredis.Redis:
        """The client that talks to ``key``'s primary on one connection per pipeline."""
        if not isinstance(self._redis, RedisCluster):
            return self._redis
        await self._redis.initialize()  # loads the slot map once
        node = self._redis.get_node_from_key(key)
        if node is None:
            raise StoreUnavailable(f"no primary serves the slot of {key!r} now (failover?)")
        client = self._node_clients.get(node.name)
        if client is None:
            # Same connection class (TLS) and credentials as the cluster client's own node pool.
            pool = aioredis.ConnectionPool(
                connection_class=node.connection_class, **node.connection_kwargs
            )
            client = self._node_clients[node.name] = aioredis.Redis.from_pool(pool)
        return client

    async def _reload_slots(self) -> None:
        if isinstance(self._redis, RedisCluster):
            with contextlib.suppress(*REDIS_ERRORS):
                await self._redis.nodes_manager.initialize()

    async def ping(self) -> None:
        """Check the connection; ``StoreUnavailable`` if Redis does not answer."""
        await self._call("ping", self._redis.ping)

    async def claim(self, key: str, owner: str) -> int:
        """Take ownership of ``key`` with a new, higher epoch."""
        result = await self._call(
            f"claim {key}",
            lambda: self._replicated(f"claim {key}", self._claim, [self.redis_key(key)], [owner]),
        )
        return int(result)

    async def current_epoch(self, key: str) -> int:
        """The highest epoch claimed or written for ``key`` (0 if none)."""

        async def fence() -> Any:
            return await self._redis.hget(self.redis_key(key), "fence")  # type: ignore[misc]

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
        h = self.redis_key(key)
        if workflow_id:
            require_workflow_key(key, workflow_id)
        index = self.index_key(workflow_id) if workflow_id else h
        what = f"write checkpoint {key}"
        result: Any = await self._call(
            what,
            lambda: self._replicated(
                what,
                self._write,
                [h, index],
                [epoch, data, now_ms, self.keep_versions, owner, "1" if workflow_id else "0"],
            ),
        )
        version, current = int(result[0]), int(result[1])
        if version < 0:
            raise StaleEpochError(
                f"checkpoint write to {key!r} with epoch {epoch} refused: epoch {current} owns it now",
                attempted_epoch=epoch,
                current_epoch=current,
            )
        return Checkpoint(
            key=key, version=version, epoch=epoch, data=data, written_at_ms=now_ms, owner=owner
        )

    async def read(self, key: str, version: int | None = None) -> Checkpoint:
        """Latest (or a kept) version of ``key``."""
        result: Any = await self._call(
            f"read checkpoint {key}",
            lambda: self._read(
                keys=[self.redis_key(key)], args=["" if version is None else str(version)]
            ),
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
        index = self.index_key(workflow_id)

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
        """Close the connection pools."""
        for client in (self._redis, *self._node_clients.values()):
            with contextlib.suppress(*REDIS_ERRORS):
                await client.aclose()
