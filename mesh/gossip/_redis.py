"""Persisting context maps in Redis (one key per workflow and agent)."""

from __future__ import annotations

from typing import Any

from mesh.errors import StoreUnavailable
from mesh.gossip._clock import HybridLogicalClock
from mesh.gossip._map import ContextMap

__all__ = ["RedisContextMapStore"]


class RedisContextMapStore:
    """Saves and loads ``ContextMap`` bytes with a ``redis.asyncio`` client.

    Thin on purpose: the map's ``to_bytes``/``from_bytes`` hold the format; this class adds the
    key layout (``{prefix}ctx:{workflow_id}:{replica_id}``) and translates redis errors into
    ``StoreUnavailable``.
    """

    def __init__(self, client: Any, *, prefix: str = "mesh:") -> None:
        """Use ``client`` (a ``redis.asyncio.Redis``) under ``prefix``."""
        self._client = client
        self.prefix = prefix

    def key(self, workflow_id: str, replica_id: str) -> str:
        """The Redis key of one replica."""
        return f"{self.prefix}ctx:{workflow_id}:{replica_id}"

    async def save(self, cmap: ContextMap) -> int:
        """Write the map; return its size in bytes."""
        data = cmap.to_bytes()
        await self._call(self._client.set(self.key(cmap.workflow_id, cmap.replica_id), data))
        return len(data)

    async def load(
        self, workflow_id: str, replica_id: str, *, clock: HybridLogicalClock | None = None
    ) -> ContextMap | None:
        """The saved map, or None if there is none."""
        data = await self._call(self._client.get(self.key(workflow_id, replica_id)))
        if data is None:
            return None
        return ContextMap.from_bytes(data, replica_id=replica_id, clock=clock)

    async def delete(self, workflow_id: str, replica_id: str) -> None:
        """Forget the saved map."""
        await self._call(self._client.delete(self.key(workflow_id, replica_id)))

    async def _call(self, awaitable: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await awaitable
        except RedisError as exc:
            raise StoreUnavailable(f"redis context map: {type(exc).__name__}: {exc}") from exc
