"""Gossip context maps in Redis: one string per workflow and replica, one index set per replica.

Layout (``P`` is the prefix; the console reads the map keys)::

    P ctx:{<workflow>}:<replica>   string  the map's bytes (the workflow's hash tag: its Cluster slot)
    P ctxidx:<replica>             set     workflow ids whose maps the replica restores on start
"""

from __future__ import annotations

from mesh.store.redis._connection import RedisClient, redis_call

__all__ = ["RedisContextMapStore", "glob_escape"]


def glob_escape(text: str) -> str:
    """``text`` matched literally in a SCAN ``MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisContextMapStore:
    """``ContextMapStore`` in Redis (layout in the module docstring).

    The index entry is written before the map, so a crash never leaves a map the restart cannot
    find (an entry whose map was never written loads as None). Not one MULTI/EXEC: the index is
    per replica and the map carries its workflow's hash tag, so on Redis Cluster they live in
    different slots and a transaction over both would fail with CROSSSLOT.
    """

    def __init__(self, client: RedisClient, *, prefix: str = "mesh:") -> None:
        """Use ``client`` (shared: ``aclose`` leaves it open) under ``prefix``."""
        self._client = client
        self.prefix = prefix

    def key(self, workflow_id: str, replica_id: str) -> str:
        """The Redis key of one replica's map of one workflow."""
        return f"{self.prefix}ctx:{{{workflow_id}}}:{replica_id}"

    def index_key(self, replica_id: str) -> str:
        """The Redis key of a replica's workflow index."""
        return f"{self.prefix}ctxidx:{replica_id}"

    async def save(self, workflow_id: str, replica_id: str, data: bytes) -> None:
        """SADD to the index, then SET the map."""
        what = f"save context map {workflow_id}/{replica_id}"
        await redis_call(what, self._client.sadd(self.index_key(replica_id), workflow_id))  # type: ignore[arg-type]
        await redis_call(what, self._client.set(self.key(workflow_id, replica_id), data))

    async def load(self, workflow_id: str, replica_id: str) -> bytes | None:
        """GET the map."""
        data = await redis_call(
            f"load context map {workflow_id}/{replica_id}",
            self._client.get(self.key(workflow_id, replica_id)),
        )
        return None if data is None else bytes(data)

    async def workflows(self, replica_id: str) -> list[str]:
        """SMEMBERS of the replica's index, sorted."""
        members = await redis_call(
            f"list context maps of {replica_id}",
            self._client.smembers(self.index_key(replica_id)),  # type: ignore[arg-type]
        )
        return sorted(m.decode() if isinstance(m, bytes) else m for m in members)

    async def retire(self, workflow_id: str, replica_id: str, ttl_s: int) -> None:
        """EXPIRE the map, then SREM it from the index."""
        what = f"retire context map {workflow_id}/{replica_id}"
        # Two calls, not one MULTI: the replica's index and the workflow's map live in different
        # hash slots on Redis Cluster (CROSSSLOT). The TTL goes first: a crash between the two
        # leaves an index entry whose map expires (it then loads as None), never a map that lives on.
        if ttl_s > 0:
            await redis_call(what, self._client.expire(self.key(workflow_id, replica_id), ttl_s))
        await redis_call(what, self._client.srem(self.index_key(replica_id), workflow_id))  # type: ignore[arg-type]

    async def maps_of(self, workflow_id: str) -> dict[str, bytes]:
        """Every replica's saved map of ``workflow_id`` (a SCAN of its hash tag): ``{replica: bytes}``.

        For readers of the whole mesh (the console); a replica id holding ``:`` is skipped.
        """
        head = self.key(workflow_id, "")

        async def scan() -> dict[str, bytes]:
            found: dict[str, bytes] = {}
            async for key in self._client.scan_iter(match=glob_escape(head) + "*", count=200):
                name = key.decode() if isinstance(key, bytes) else str(key)
                replica = name[len(head) :]
                if not replica or ":" in replica:
                    continue
                data = await self._client.get(key)
                if data is not None:
                    found[replica] = bytes(data)
            return found

        return dict(
            sorted((await redis_call(f"read context maps of {workflow_id}", scan())).items())
        )

    async def aclose(self) -> None:
        """The client belongs to whoever built it; nothing to close."""

    def __repr__(self) -> str:
        return f"RedisContextMapStore(prefix={self.prefix!r})"
