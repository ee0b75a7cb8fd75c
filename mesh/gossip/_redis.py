"""Persisting context maps in Redis (one key per workflow and agent)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from mesh.errors import StoreUnavailable
from mesh.gossip._clock import HybridLogicalClock
from mesh.gossip._map import ContextMap
from mesh.security import DataCipher, data_cipher, is_sealed

__all__ = ["RedisContextMapStore", "open_secrets", "seal_secrets"]


def _secret_values(raw: dict[str, Any]) -> list[tuple[dict[str, Any] | list[Any], Any, tuple[str, ...]]]:
    """(container, index, context) of every value of a secret register or set element in a saved map."""
    wf = str(raw.get("workflow_id", ""))
    state = raw.get("state") or {}
    found: list[tuple[dict[str, Any] | list[Any], Any, tuple[str, ...]]] = []
    for reg in state.get("registers") or ():
        if isinstance(reg, dict) and reg.get("secret") and reg.get("value") is not None:
            found.append((reg, "value", ("gossip", wf, str(reg.get("name")))))
    for s in state.get("sets") or ():
        if isinstance(s, dict) and isinstance(s.get("meta"), dict) and s["meta"].get("secret"):
            for add in s.get("adds") or ():
                if isinstance(add, list) and len(add) == 2:
                    found.append((add, 1, ("gossip", wf, str(s.get("name")))))
    return found


def seal_secrets(data: bytes, cipher: DataCipher | Callable[[], DataCipher]) -> bytes:
    """``ContextMap.to_bytes`` output with every secret value sealed (bound to its workflow and name)."""
    raw = msgpack.unpackb(data, raw=False)
    found = _secret_values(raw)
    if not found:
        return data
    c = cipher if isinstance(cipher, DataCipher) else cipher()
    for container, index, context in found:
        container[index] = c.seal(container[index], context=context)  # type: ignore[index]
    return msgpack.packb(raw, use_bin_type=True)


def open_secrets(data: bytes, cipher: DataCipher | Callable[[], DataCipher]) -> bytes:
    """The inverse of ``seal_secrets``: bytes ``ContextMap.from_bytes`` reads."""
    try:
        raw = msgpack.unpackb(data, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return data  # from_bytes reports it
    if not isinstance(raw, dict):
        return data
    found = [(c, i, ctx) for c, i, ctx in _secret_values(raw) if is_sealed(c[i])]  # type: ignore[index]
    if not found:
        return data
    cip = cipher if isinstance(cipher, DataCipher) else cipher()
    for container, index, context in found:
        container[index] = cip.open(container[index], context=context)  # type: ignore[index]
    return msgpack.packb(raw, use_bin_type=True)


class RedisContextMapStore:
    """Saves and loads ``ContextMap`` bytes with a ``redis.asyncio`` client.

    Thin on purpose: the map's ``to_bytes``/``from_bytes`` hold the format; this class adds the
    key layout (``{prefix}ctx:{{workflow_id}}:{replica_id}``: the workflow's hash tag, so a map
    lives in its workflow's Redis Cluster slot), seals secret values with the data
    key (``seal_secrets``) and translates redis errors into ``StoreUnavailable``.
    """

    def __init__(self, client: Any, *, prefix: str = "mesh:", cipher: DataCipher | None = None) -> None:
        """Use ``client`` (a ``redis.asyncio.Redis``) under ``prefix``; ``cipher`` defaults to the process's data key."""
        self._client = client
        self.prefix = prefix
        self._cipher = cipher

    def cipher(self) -> DataCipher:
        """The cipher secret values are sealed with (loaded on first use)."""
        if self._cipher is None:
            self._cipher = data_cipher()
        return self._cipher

    def encode(self, cmap: ContextMap) -> bytes:
        """The bytes stored for ``cmap``: its ``to_bytes`` with secret values sealed."""
        return seal_secrets(cmap.to_bytes(), self.cipher)

    def key(self, workflow_id: str, replica_id: str) -> str:
        """The Redis key of one replica."""
        return f"{self.prefix}ctx:{{{workflow_id}}}:{replica_id}"

    async def save(self, cmap: ContextMap) -> int:
        """Write the map; return its size in bytes."""
        data = self.encode(cmap)
        await self._call(self._client.set(self.key(cmap.workflow_id, cmap.replica_id), data))
        return len(data)

    async def load(
        self, workflow_id: str, replica_id: str, *, clock: HybridLogicalClock | None = None
    ) -> ContextMap | None:
        """The saved map, or None if there is none."""
        data = await self._call(self._client.get(self.key(workflow_id, replica_id)))
        if data is None:
            return None
        return ContextMap.from_bytes(open_secrets(data, self.cipher), replica_id=replica_id, clock=clock)

    async def delete(self, workflow_id: str, replica_id: str) -> None:
        """Forget the saved map."""
        await self._call(self._client.delete(self.key(workflow_id, replica_id)))

    async def _call(self, awaitable: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await awaitable
        except RedisError as exc:
            raise StoreUnavailable(f"redis context map: {type(exc).__name__}: {exc}") from exc
