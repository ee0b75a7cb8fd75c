"""The reasoner's rate limiter in Redis, shared by every agent of a mesh: requests and tokens per
window, and the provider's ``Retry-After`` honoured by all of them at once (``RateLimiter`` in
``mesh.store.base`` says why it is shared). ``RedisRateLimiter`` keeps one sliding-window log per
mesh and a "hold until" time.

Why a Lua script rather than a rate-limit library: a call must take one request and an estimate of
its tokens atomically, across two limits, and the estimate must be corrected to what the provider
reports afterwards; the libraries we looked at (``limits``) count one limit per call and cannot
correct a hit after the fact. The script is short, uses Redis's clock (agents' clocks may drift)
and keeps both keys in one hash slot (Redis Cluster).

Keys (``P`` the mesh prefix, with or without its trailing colon): ``{P:llm}:calls`` sorted set,
one member per call in the window, ``<tokens>:<id>`` scored by its Redis time in ms, expiring with
the window; ``{P:llm}:hold``, the Redis time in ms before which nobody calls (set from
``Retry-After``).

Redis unreachable (any ``StoreError`` from ``redis_call``): the limiter lets the call through and
logs (the provider's own limits and the SDK's retries still apply); a mesh that must never exceed
its limits should alert on that log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from mesh.errors import StoreError
from mesh.store.base import RateTicket
from mesh.store.redis._connection import (
    REDIS_ERRORS,
    RedisClient,
    RedisConnection,
    redis_call,
    register_script,
)

__all__ = ["RedisRateLimiter"]

log = logging.getLogger(__name__)

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local tokens = tonumber(ARGV[4])
local hold = tonumber(redis.call('GET', KEYS[2]) or '0')
if hold > now then return hold - now end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local count = #entries / 2
if count > 0 then
  local free_at = tonumber(entries[2]) + window - now + 1
  if rpm > 0 and count >= rpm then return free_at end
  if tpm > 0 then
    local used = 0
    for i = 1, #entries, 2 do used = used + tonumber(string.match(entries[i], '^(%d+):')) end
    if used + tokens > tpm then return free_at end
  end
end
redis.call('ZADD', KEYS[1], now, tokens .. ':' .. ARGV[5])
redis.call('PEXPIRE', KEYS[1], window)
return -now
"""

_SETTLE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], score, ARGV[2])
return 1
"""

_HOLD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if now + ms > current then redis.call('SET', KEYS[1], now + ms, 'PX', ms) end
return now + ms
"""


class RedisRateLimiter:
    """``RateLimiter`` over one sliding-window log in Redis, shared by every agent of a mesh."""

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str = "mesh:",
        rpm: int = 0,
        tpm: int = 0,
        window_s: float = 60.0,
        owns_client: bool = False,
    ) -> None:
        """Limit to ``rpm`` requests and ``tpm`` tokens per ``window_s`` seconds (0: that limit is off).

        Keys live under ``{<prefix>:llm}`` (``mesh`` and ``mesh:`` name the same keys);
        ``aclose`` closes ``client`` only if owned. A Cluster client works too: both keys share
        one hash tag.
        """
        if rpm < 0 or tpm < 0 or window_s <= 0:
            raise ValueError("rpm and tpm must be >= 0 and window_s > 0")
        self.rpm, self.tpm, self.window_s = rpm, tpm, window_s
        self._client = client
        self._owns_client = owns_client
        tag = f"{{{prefix.removesuffix(':')}:llm}}"
        self.calls_key, self.hold_key = f"{tag}:calls", f"{tag}:hold"
        self._acquire = register_script(client, _ACQUIRE)
        self._settle = register_script(client, _SETTLE)
        self._hold = register_script(client, _HOLD)
        self._warned_at = 0.0

    @classmethod
    def connect(
        cls,
        connection: RedisConnection,
        *,
        prefix: str = "mesh:",
        rpm: int = 0,
        tpm: int = 0,
        window_s: float = 60.0,
        socket_timeout_s: float = 5.0,
    ) -> RedisRateLimiter:
        """A limiter on its own client (closed by ``aclose``)."""
        client = connection.client(socket_timeout_s=socket_timeout_s)
        return cls(client, prefix=prefix, rpm=rpm, tpm=tpm, window_s=window_s, owns_client=True)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "mesh:", rpm: int = 0, tpm: int = 0, window_s: float = 60.0
    ) -> RedisRateLimiter:
        """A limiter with its own connection to the standalone server at ``url``."""
        return cls.connect(
            RedisConnection(url=url), prefix=prefix, rpm=rpm, tpm=tpm, window_s=window_s
        )

    async def acquire(self, tokens: int) -> RateTicket:
        """Wait for room in the window (and for any hold to pass), then record the call."""
        member = uuid.uuid4().hex
        tokens = max(int(tokens), 0)
        if self.tpm:
            tokens = min(
                tokens, self.tpm
            )  # a call larger than the limit goes alone in an empty window
        started = time.monotonic()
        window_ms = int(self.window_s * 1000)
        while True:
            try:
                wait_ms = int(
                    await redis_call(
                        "rate limiter",
                        self._acquire(
                            keys=[self.calls_key, self.hold_key],
                            args=[window_ms, self.rpm, self.tpm, tokens, member],
                        ),
                    )
                )
            except StoreError as exc:
                self._warn(
                    f"rate limiter unreachable ({type(exc).__name__}: {exc}); calling without it"
                )
                return RateTicket("", tokens, time.monotonic() - started)
            if wait_ms <= 0:  # granted: the script returns minus the Redis time of the grant
                return RateTicket(
                    f"{tokens}:{member}", tokens, time.monotonic() - started, -wait_ms
                )
            await asyncio.sleep(min(wait_ms, window_ms) / 1000)

    async def settle(self, ticket: RateTicket, tokens: int) -> None:
        """Record the call's real size (input plus output tokens) in place of its estimate."""
        if not ticket.member or not self.tpm:
            return
        member = ticket.member.split(":", 1)[1]
        try:
            await redis_call(
                "rate limiter",
                self._settle(
                    keys=[self.calls_key], args=[ticket.member, f"{max(int(tokens), 0)}:{member}"]
                ),
            )
        except StoreError as exc:
            self._warn(f"rate limiter unreachable ({type(exc).__name__}: {exc})")

    async def hold(self, seconds: float) -> None:
        """Make every agent of the mesh wait ``seconds`` before its next call."""
        ms = int(seconds * 1000)
        if ms <= 0:
            return
        try:
            await redis_call("rate limiter", self._hold(keys=[self.hold_key], args=[ms]))
        except StoreError as exc:
            self._warn(
                f"rate limiter unreachable ({type(exc).__name__}: {exc}); the hold is local only"
            )
        log.info("provider asked to retry after %.3f s: every agent of the mesh waits", seconds)

    async def aclose(self) -> None:
        """Close the client if this limiter opened it (``connect``); a shared one stays open."""
        if self._owns_client:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._client.aclose()

    def __repr__(self) -> str:
        return f"RedisRateLimiter(key={self.calls_key!r}, rpm={self.rpm}, tpm={self.tpm}, window_s={self.window_s})"

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 30.0:  # one line per 30 s, not one per call
            self._warned_at = now
            log.warning(message)
