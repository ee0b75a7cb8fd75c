"""Where a gossip node keeps its maps between runs: the seam, Redis with an index, in memory."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from mesh.errors import StoreUnavailable
from mesh.gossip._clock import HybridLogicalClock
from mesh.gossip._map import ContextMap
from mesh.gossip._redis import RedisContextMapStore

__all__ = ["ContextMapStore", "IndexedContextMapStore", "MemoryContextMapStore"]


@runtime_checkable
class ContextMapStore(Protocol):
    """Saves each replica's maps and lists them again after a crash.

    Why a seam: ``GossipNode`` restores every map of its agent on start, so besides save and load
    it needs the list of workflows the agent held; a Redis store and an in-memory one for unit
    tests give the same three calls. Errors are ``StoreUnavailable`` (the node retries later).
    """

    async def save(self, cmap: ContextMap) -> int:
        """Write the map; return its size in bytes."""
        ...

    async def load(
        self, workflow_id: str, replica_id: str, *, clock: HybridLogicalClock | None = None
    ) -> ContextMap | None:
        """The saved map, or None."""
        ...

    async def workflows(self, replica_id: str) -> list[str]:
        """Workflow ids of every map saved for ``replica_id``, sorted."""
        ...


class IndexedContextMapStore(RedisContextMapStore):
    """``RedisContextMapStore`` plus one set per replica naming its workflows (``{prefix}ctxidx:{replica}``).

    The index entry is written before the map, so a crash never leaves a map the restart cannot
    find (an entry whose map was never written loads as None). Not one MULTI/EXEC: the index is
    per replica and the map carries its workflow's hash tag, so on Redis Cluster they live in
    different slots and a transaction over both would fail with CROSSSLOT.
    """

    def index_key(self, replica_id: str) -> str:
        """The Redis key of a replica's workflow index."""
        return f"{self.prefix}ctxidx:{replica_id}"

    async def save(self, cmap: ContextMap) -> int:
        """Write the map (secret values sealed) and index it; return its size in bytes."""
        data = self.encode(cmap)
        await self._call(self._client.sadd(self.index_key(cmap.replica_id), cmap.workflow_id))
        await self._call(self._client.set(self.key(cmap.workflow_id, cmap.replica_id), data))
        return len(data)

    async def retire(self, workflow_id: str, replica_id: str, ttl_s: int) -> None:
        """A finished workflow's map: out of the index (not restored), expiring after ``ttl_s``."""
        # Two calls, not one MULTI: the replica's index and the workflow's map live in different
        # hash slots on Redis Cluster (CROSSSLOT). The TTL goes first: a crash between the two
        # leaves an index entry whose map expires (it then loads as None), never a map that lives on.
        if ttl_s > 0:
            await self._call(self._client.expire(self.key(workflow_id, replica_id), ttl_s))
        await self._call(self._client.srem(self.index_key(replica_id), workflow_id))

    async def workflows(self, replica_id: str) -> list[str]:
        """Workflow ids of every map saved for ``replica_id``, sorted."""
        members = await self._call(self._client.smembers(self.index_key(replica_id)))
        return sorted(m.decode() if isinstance(m, bytes) else m for m in members)


class MemoryContextMapStore:
    """Maps as bytes in a dict; ``available = False`` makes every call raise ``StoreUnavailable``."""

    def __init__(self) -> None:
        """An empty, reachable store."""
        self.saved: dict[tuple[str, str], bytes] = {}
        self.available = True
        self.saves = 0
        """Successful saves, for tests of debouncing."""

    async def save(self, cmap: ContextMap) -> int:
        """Keep the map's bytes."""
        self._check()
        data = cmap.to_bytes()
        self.saved[(cmap.workflow_id, cmap.replica_id)] = data
        self.saves += 1
        return len(data)

    async def load(
        self, workflow_id: str, replica_id: str, *, clock: HybridLogicalClock | None = None
    ) -> ContextMap | None:
        """The saved map, or None."""
        self._check()
        data = self.saved.get((workflow_id, replica_id))
        return None if data is None else ContextMap.from_bytes(data, replica_id=replica_id, clock=clock)

    async def retire(self, workflow_id: str, replica_id: str, ttl_s: int) -> None:
        """A finished workflow's map: dropped (no TTL in memory)."""
        self._check()
        self.saved.pop((workflow_id, replica_id), None)

    async def workflows(self, replica_id: str) -> list[str]:
        """Workflow ids saved for ``replica_id``."""
        self._check()
        return sorted(wf for wf, replica in self.saved if replica == replica_id)

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailable("memory context map store is switched off")
