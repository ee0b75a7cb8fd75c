"""The keyring: the public key of every agent allowed to send, by agent id."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mesh.errors import StoreUnavailable
from mesh.security._errors import KeyringError
from mesh.security._keys import public_key_from_hex, public_key_to_hex

__all__ = ["DEFAULT_KEYRING_ENV", "Keyring", "RedisKeyringStore"]

DEFAULT_KEYRING_ENV = "MESH_KEYRING"
"""Environment variable holding the keyring as JSON ``{agent_id: hex public key}``."""


class Keyring:
    """Public keys by agent id; an envelope from an id not in here is forged."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey] | None = None) -> None:
        """Create a keyring from already-parsed keys."""
        self._keys: dict[str, Ed25519PublicKey] = dict(keys or {})

    # -- loading --------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> Keyring:
        """Build from ``{agent_id: hex public key}``; raise ``KeyringError`` naming a bad entry."""
        if not isinstance(data, Mapping):
            raise KeyringError(f"keyring must be a mapping of agent id to hex key, got {type(data).__name__}")
        keys = {}
        for agent_id, text in data.items():
            if not isinstance(agent_id, str) or not isinstance(text, str):
                raise KeyringError(f"keyring entry {agent_id!r}: agent id and key must be strings")
            try:
                keys[agent_id] = public_key_from_hex(text)
            except KeyringError as exc:
                raise KeyringError(f"keyring entry {agent_id!r}: {exc}") from None
        return cls(keys)

    @classmethod
    def from_json(cls, text: str) -> Keyring:
        """Build from a JSON object ``{agent_id: hex public key}``."""
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeyringError(f"keyring is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_file(cls, path: str | Path) -> Keyring:
        """Build from a JSON file."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise KeyringError(f"cannot read keyring file {path}: {exc.strerror}") from None
        return cls.from_json(text)

    @classmethod
    def from_env(cls, var: str = DEFAULT_KEYRING_ENV, *, environ: Mapping[str, str] | None = None) -> Keyring:
        """Build from the JSON in an environment variable (empty keyring when it is unset)."""
        env = os.environ if environ is None else environ
        text = env.get(var, "")
        return cls.from_json(text) if text.strip() else cls()

    # -- access ---------------------------------------------------------------------------

    def add(self, agent_id: str, public_key: Ed25519PublicKey) -> None:
        """Trust ``public_key`` for ``agent_id`` (replacing any previous key)."""
        self._keys[agent_id] = public_key

    def remove(self, agent_id: str) -> None:
        """Stop trusting ``agent_id``."""
        self._keys.pop(agent_id, None)

    def get(self, agent_id: str) -> Ed25519PublicKey | None:
        """The public key of ``agent_id``, or None."""
        return self._keys.get(agent_id)

    def to_dict(self) -> dict[str, str]:
        """``{agent_id: hex public key}``, the form ``from_dict`` reads."""
        return {agent_id: public_key_to_hex(key) for agent_id, key in sorted(self._keys.items())}

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._keys))

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Keyring({len(self._keys)} agents)"


class RedisKeyringStore:
    """Shares public keys through one Redis hash, so agents that start later find each other.

    Written against the ``redis.asyncio`` client; redis errors become ``StoreUnavailable``.
    """

    def __init__(self, client: Any, *, prefix: str = "mesh:") -> None:
        """Use ``client`` (a ``redis.asyncio.Redis``); the hash lives at ``{prefix}keyring``."""
        self._client = client
        self.key = f"{prefix}keyring"

    async def publish(self, agent_id: str, public_key: Ed25519PublicKey) -> None:
        """Announce ``agent_id``'s public key."""
        await self._call(self._client.hset(self.key, agent_id, public_key_to_hex(public_key)))

    async def load(self) -> Keyring:
        """Every published key as a keyring."""
        raw = await self._call(self._client.hgetall(self.key))
        return Keyring.from_dict({_text(k): _text(v) for k, v in raw.items()})

    async def _call(self, awaitable: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await awaitable
        except RedisError as exc:
            raise StoreUnavailable(f"redis keyring {self.key}: {type(exc).__name__}: {exc}") from exc


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
