"""Signing what an agent publishes and verifying what it reads on the workflow log.

Every agent (and every CLI client) has an Ed25519 key pair. The private key stays in the agent's
state directory (``<state_dir>/keys/<agent_id>.ed25519``, mode 0600) so a restarted agent keeps its
identity and the envelopes it signed earlier still verify when the log is replayed; the public
key is published in the keyring hash in Redis (``<prefix>:keyring``), where peers look it up.

The workflow log is replayable by design (at-least-once delivery, failover replays), so its
verifier accepts the same envelope again — handlers fold duplicates — and rejects unsigned and
forged envelopes, and a different content under an id already seen (equivocation). A sender not
yet in the local keyring triggers a reload from Redis before the envelope is judged, so an agent
that just started is never mistaken for a forger.

Trust model: whoever can write the keyring hash in Redis can introduce a key. Protect Redis.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import redis.asyncio as aioredis

from mesh.errors import StoreUnavailable
from mesh.security import (
    EnvelopeRejected,
    EnvelopeSigner,
    EnvelopeVerifier,
    KeyPair,
    Keyring,
    RedisKeyringStore,
    VerifierOptions,
    generate_keypair,
    private_key_from_hex,
    private_key_to_hex,
    public_key_to_hex,
)
from protocols import Envelope

__all__ = ["LogTrust", "load_or_create_keys"]

log = logging.getLogger("mesh.runtime.trust")


def load_or_create_keys(agent_id: str, key_dir: Path) -> KeyPair:
    """The agent's key pair from ``key_dir``, created (mode 0600) on first use."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in agent_id)
    path = key_dir / f"{safe}.ed25519"
    if path.exists():
        private = private_key_from_hex(path.read_text().strip())
        return KeyPair(agent_id, private, private.public_key())
    keys = generate_keypair(agent_id)
    key_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(private_key_to_hex(keys.private_key))
    return keys


class LogTrust:
    """A signer for outgoing envelopes and an async bus guard for incoming ones."""

    def __init__(
        self,
        keys: KeyPair,
        store: RedisKeyringStore,
        *,
        reload_interval_s: float = 0.2,
        client: aioredis.Redis | None = None,
    ) -> None:
        """Sign as ``keys.agent_id``; look peers' keys up in ``store``."""
        self.keys = keys
        self.store = store
        self.keyring = Keyring({keys.agent_id: keys.public_key})
        self.verifier = EnvelopeVerifier(
            self.keyring,
            options=VerifierOptions(accept_redelivery=True, max_age_ms=None, equivocation_rules=(),
                                    replay_window=500_000),
        )
        self._signer = EnvelopeSigner(keys.agent_id, keys.private_key)
        self._reload_interval_s = reload_interval_s
        self._last_reload = 0.0
        self._client = client

    @classmethod
    async def connect(cls, agent_id: str, *, redis_url: str, prefix: str, state_dir: Path) -> LogTrust:
        """Load or create this agent's keys, publish the public key, load the keyring."""
        client = aioredis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        store = RedisKeyringStore(client, prefix=f"{prefix}:")
        trust = cls(load_or_create_keys(agent_id, state_dir / "keys"), store, client=client)
        await trust.register()
        return trust

    async def register(self) -> None:
        """Publish this agent's public key and load everyone else's."""
        known = (await self.store.load()).get(self.keys.agent_id)
        if known is not None and public_key_to_hex(known) != public_key_to_hex(self.keys.public_key):
            log.warning("agent id %s had another key in the keyring; replacing it (envelopes signed with the "
                        "old key will no longer verify)", self.keys.agent_id)
        await self.store.publish(self.keys.agent_id, self.keys.public_key)
        await self._reload()

    def sign(self, envelope: Envelope) -> Envelope:
        """The envelope signed by this agent (the bus calls it on publish)."""
        return self._signer.sign(envelope)

    async def __call__(self, envelope: Envelope) -> None:
        """Bus guard: raise ``EnvelopeRejected`` (with a reason) unless authentic."""
        if envelope.sender not in self.keyring and envelope.signature:
            now = time.monotonic()
            if now - self._last_reload >= self._reload_interval_s:
                try:
                    await self._reload()
                except StoreUnavailable as exc:
                    log.warning("keyring reload failed: %s", exc)
        try:
            self.verifier.verify(envelope)
        except EnvelopeRejected as exc:
            # A known sender with a new key (it restarted without its key file): look again once.
            if exc.reason != "forged" or time.monotonic() - self._last_reload < self._reload_interval_s:
                raise
            try:
                await self._reload()
            except StoreUnavailable:
                raise exc from None
            self.verifier.verify(envelope)

    async def _reload(self) -> None:
        self._last_reload = time.monotonic()
        loaded = await self.store.load()
        for agent_id in loaded:
            key = loaded.get(agent_id)
            if key is not None:
                self.keyring.add(agent_id, key)

    @property
    def redis(self) -> aioredis.Redis:
        """The Redis connection ``connect`` opened (the agent shares it for its gossip maps)."""
        if self._client is None:
            raise RuntimeError("this LogTrust was not made by connect(); it has no Redis client of its own")
        return self._client

    @property
    def rejections(self) -> dict[str, int]:
        """Rejected envelopes by reason."""
        return dict(self.verifier.rejections)

    async def aclose(self) -> None:
        """Close the Redis connection."""
        if self._client is not None:
            await self._client.aclose()
