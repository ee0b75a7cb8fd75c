"""The keyring table in Redis: one hash, field = agent id, value = the record's JSON."""

from __future__ import annotations

import contextlib

from mesh.store.redis._connection import REDIS_ERRORS, RedisClient, RedisConnection, redis_call

__all__ = ["RedisKeyringStore"]


class RedisKeyringStore:
    """``KeyringStore`` over one Redis hash at ``{prefix}keyring`` (no hash tag: one key, one slot)."""

    def __init__(
        self, client: RedisClient, *, prefix: str = "mesh:", owns_client: bool = False
    ) -> None:
        """Use ``client``; the hash lives at ``{prefix}keyring``; ``aclose`` closes the client only if owned."""
        self._client = client
        self._owns_client = owns_client
        self.key = f"{prefix}keyring"

    @classmethod
    def connect(
        cls, connection: RedisConnection, *, prefix: str = "mesh:", socket_timeout_s: float = 5.0
    ) -> RedisKeyringStore:
        """A keyring store on its own client (closed by ``aclose``), for processes that need nothing else."""
        return cls(
            connection.client(socket_timeout_s=socket_timeout_s), prefix=prefix, owns_client=True
        )

    async def publish(self, agent_id: str, record: str) -> None:
        """HSET the agent's field."""
        await redis_call(
            f"publish key of {agent_id} in {self.key}",
            self._client.hset(self.key, agent_id, record),  # type: ignore[arg-type]
        )

    async def records(self) -> dict[str, str]:
        """HGETALL; undecodable fields are skipped (the security layer logs unreadable records)."""
        raw = await redis_call(f"read keyring {self.key}", self._client.hgetall(self.key))  # type: ignore[arg-type]
        out: dict[str, str] = {}
        for k, v in raw.items():
            try:
                out[_text(k)] = _text(v)
            except UnicodeDecodeError:
                continue
        return out

    async def aclose(self) -> None:
        """Close the client if this store opened it (``connect``); a shared one stays open."""
        if self._owns_client:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._client.aclose()

    def __repr__(self) -> str:
        return f"RedisKeyringStore(key={self.key!r})"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
