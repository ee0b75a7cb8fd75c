"""Dead-letter claims in Redis: one ``SET NX EX`` key per claimed record."""

from __future__ import annotations

import contextlib
import logging

from mesh.errors import StoreError
from mesh.store.redis._connection import REDIS_ERRORS, RedisClient, RedisConnection, redis_call

__all__ = ["DEFAULT_CLAIM_TTL_S", "RedisDeadLetterClaims"]

log = logging.getLogger(__name__)

DEFAULT_CLAIM_TTL_S = 7 * 24 * 3600
"""How long a claim is remembered, in seconds: longer than any consumer lags behind the log."""


class RedisDeadLetterClaims:
    """``DeadLetterClaims`` in Redis: ``SET <prefix>dlq:<topic>:<partition>:<offset> 1 NX EX <ttl_s>``.

    One key per record, so any node of a Cluster holds it. Redis errors are mapped by
    ``redis_call`` like every adapter's; a ``StoreError`` (Redis unreachable, credentials refused)
    means "claim granted": a duplicate dead letter is better than a lost one.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str = "mesh:",
        ttl_s: int = DEFAULT_CLAIM_TTL_S,
        owns_client: bool = False,
    ) -> None:
        """Use ``client``; keys start with ``prefix``; ``aclose`` closes the client only if owned."""
        self._client = client
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._owns_client = owns_client

    @classmethod
    def connect(
        cls,
        connection: RedisConnection,
        *,
        prefix: str = "mesh:",
        ttl_s: int = DEFAULT_CLAIM_TTL_S,
        socket_timeout_s: float = 5.0,
    ) -> RedisDeadLetterClaims:
        """Claims on their own client (closed by ``aclose``)."""
        return cls(
            connection.client(socket_timeout_s=socket_timeout_s),
            prefix=prefix,
            ttl_s=ttl_s,
            owns_client=True,
        )

    def key(self, topic: str, partition: int, offset: int) -> str:
        """The Redis key of one record's claim."""
        return f"{self._prefix}dlq:{topic}:{partition}:{offset}"

    async def claim(self, topic: str, partition: int, offset: int) -> bool:
        """True when this call set the key (it was not claimed yet), or Redis cannot be reached."""
        key = self.key(topic, partition, offset)
        try:
            return bool(
                await redis_call(
                    f"dead-letter claim {key}",
                    self._client.set(key, b"1", nx=True, ex=self._ttl_s),
                )
            )
        except StoreError as exc:
            log.warning("%s; dead-lettering anyway", exc)
            return True

    async def aclose(self) -> None:
        """Close the client if this object opened it (``connect``); a shared one stays open."""
        if self._owns_client:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._client.aclose()

    def __repr__(self) -> str:
        return f"RedisDeadLetterClaims(prefix={self._prefix!r}, ttl_s={self._ttl_s})"
