"""Where a gossip node keeps its maps between runs: the map format, sealed, over a ``ContextMapStore``.

The store (``mesh.store``: Redis, in memory) keeps opaque bytes per workflow and replica and the
list of a replica's workflows; this module adds the map's format (``ContextMap.to_bytes``) with
every secret value sealed by the data key, bound to its workflow and name (``seal_secrets``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from mesh.gossip._clock import HybridLogicalClock
from mesh.gossip._map import ContextMap
from mesh.security import DataCipher, data_cipher, is_sealed
from mesh.store.base import ContextMapStore

__all__ = ["ContextMapArchive", "open_secrets", "seal_secrets"]


def _secret_values(
    raw: dict[str, Any],
) -> list[tuple[dict[str, Any] | list[Any], Any, tuple[str, ...]]]:
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


class ContextMapArchive:
    """Saves and restores one process's ``ContextMap``s in a ``mesh.store.ContextMapStore``.

    Thin on purpose: the map's ``to_bytes``/``from_bytes`` hold the format and the store holds the
    layout and the error policy (``StoreUnavailable``: the node retries later); this class seals
    secret values on the way in and opens them on the way out.
    """

    def __init__(self, store: ContextMapStore, *, cipher: DataCipher | None = None) -> None:
        """Keep maps in ``store``; ``cipher`` defaults to the process's data key (loaded when a secret is saved)."""
        self.store = store
        self._cipher = cipher

    def cipher(self) -> DataCipher:
        """The cipher secret values are sealed with (loaded on first use)."""
        if self._cipher is None:
            self._cipher = data_cipher()
        return self._cipher

    def encode(self, cmap: ContextMap) -> bytes:
        """The bytes stored for ``cmap``: its ``to_bytes`` with secret values sealed."""
        return seal_secrets(cmap.to_bytes(), self.cipher)

    async def save(self, cmap: ContextMap) -> int:
        """Write the map (secret values sealed) and index it; return its size in bytes."""
        data = self.encode(cmap)
        await self.store.save(cmap.workflow_id, cmap.replica_id, data)
        return len(data)

    async def load(
        self, workflow_id: str, replica_id: str, *, clock: HybridLogicalClock | None = None
    ) -> ContextMap | None:
        """The saved map, or None if there is none."""
        data = await self.store.load(workflow_id, replica_id)
        if data is None:
            return None
        return ContextMap.from_bytes(
            open_secrets(data, self.cipher), replica_id=replica_id, clock=clock
        )

    async def workflows(self, replica_id: str) -> list[str]:
        """Workflow ids of every map saved for ``replica_id``, sorted."""
        return await self.store.workflows(replica_id)

    async def retire(self, workflow_id: str, replica_id: str, ttl_s: int) -> None:
        """A finished workflow's map: out of the restore list, expiring after ``ttl_s`` seconds."""
        await self.store.retire(workflow_id, replica_id, ttl_s)

    def __repr__(self) -> str:
        return f"ContextMapArchive({self.store!r})"
