"""Every Redis store of one process, on one connection setting and (where they share) one client."""

from __future__ import annotations

import contextlib

from mesh.store.redis._checkpoints import RedisStateStore
from mesh.store.redis._connection import REDIS_ERRORS, RedisClient, RedisConnection, redis_call
from mesh.store.redis._context_maps import RedisContextMapStore
from mesh.store.redis._dead_letters import DEFAULT_CLAIM_TTL_S, RedisDeadLetterClaims
from mesh.store.redis._keyring import RedisKeyringStore
from mesh.store.redis._rate_limiter import RedisRateLimiter
from mesh.store.redis._run_index import RedisRunIndex
from mesh.store.redis._votes import RedisVoteLedger, read_ballots

__all__ = ["RedisStores"]


class RedisStores:
    """Builds the Redis adapter of each store seam for one process.

    The keyring, context maps, vote ledgers, dead-letter claims and the rate limiter share one
    client (opened lazily, closed by ``aclose``); the checkpoint store and the run index get their
    own (they have their own timeouts and close themselves), as they always had.
    """

    def __init__(
        self, connection: RedisConnection, *, prefix: str = "mesh:", socket_timeout_s: float = 5.0
    ) -> None:
        """Reach Redis through ``connection``; keys start with ``prefix`` (e.g. ``mesh:``)."""
        self.connection = connection
        self.prefix = prefix
        self._client: RedisClient = connection.client(socket_timeout_s=socket_timeout_s)
        self.keyring = RedisKeyringStore(self._client, prefix=prefix)
        """The published keys (``KeyringStore``)."""
        self.context_maps = RedisContextMapStore(self._client, prefix=prefix)
        """Gossip replicas' saved maps (``ContextMapStore``)."""

    @property
    def client(self) -> RedisClient:
        """The shared client (every seam has a builder here: prefer those)."""
        return self._client

    def dead_letter_claims(self, *, ttl_s: int = DEFAULT_CLAIM_TTL_S) -> RedisDeadLetterClaims:
        """The dead-letter claims (``DeadLetterClaims``) on the shared client, kept ``ttl_s`` seconds."""
        return RedisDeadLetterClaims(self._client, prefix=self.prefix, ttl_s=ttl_s)

    def rate_limiter(
        self, *, rpm: int = 0, tpm: int = 0, window_s: float = 60.0
    ) -> RedisRateLimiter:
        """The reasoner's rate limiter (``RateLimiter``) on the shared client.

        ``rpm`` requests and ``tpm`` tokens per ``window_s`` seconds (0: that limit is off); every
        process built on the same prefix shares the window and the hold.
        """
        return RedisRateLimiter(
            self._client, prefix=self.prefix, rpm=rpm, tpm=tpm, window_s=window_s
        )

    def vote_ledger(self, voter: str, *, ttl_s: int = 7 * 24 * 3600) -> RedisVoteLedger:
        """``voter``'s vote ledger on the shared client."""
        return RedisVoteLedger(self._client, voter, prefix=self.prefix, ttl_s=ttl_s)

    def checkpoints(
        self,
        *,
        keep_versions: int = 50,
        socket_timeout_s: float = 5.0,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> RedisStateStore:
        """A checkpoint store on its own client (see ``RedisStateStore``)."""
        return RedisStateStore.connect(
            self.connection,
            key_prefix=self.prefix,
            keep_versions=keep_versions,
            socket_timeout_s=socket_timeout_s,
            wait_replicas=wait_replicas,
            wait_timeout_ms=wait_timeout_ms,
        )

    def run_index(self, *, socket_timeout_s: float = 5.0) -> RedisRunIndex:
        """A run index on its own client."""
        return RedisRunIndex.connect(
            self.connection, key_prefix=self.prefix, socket_timeout_s=socket_timeout_s
        )

    async def ballots(self, workflow_id: str) -> dict[str, dict[str, str]]:
        """Every validator's recorded verdicts on ``workflow_id``: ``{voter: {proposal id: verdict}}``."""
        return await read_ballots(self._client, workflow_id, prefix=self.prefix)

    async def ping(self) -> bool:
        """Whether Redis answers (``StoreError`` subclasses when it does not)."""
        return bool(await redis_call("ping", self._client.ping()))  # type: ignore[arg-type]

    async def aclose(self) -> None:
        """Close the shared client (stores built by ``checkpoints``/``run_index`` close themselves)."""
        with contextlib.suppress(*REDIS_ERRORS):
            await self._client.aclose()

    def __repr__(self) -> str:
        return f"RedisStores({self.connection.describe()}, prefix={self.prefix!r})"
