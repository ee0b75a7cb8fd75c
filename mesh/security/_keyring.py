"""The keyring: the public key of every agent allowed to send, by agent id."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mesh.security._errors import KeyringError
from mesh.security._keys import public_key_from_hex, public_key_to_hex
from mesh.security._trust import AgentCertificate, KeyRecord, KeyRotation, TrustPolicy

if TYPE_CHECKING:  # mesh.store imports mesh.security (private_dir): type only, no cycle
    from mesh.store.base import KeyringStore

__all__ = ["DEFAULT_KEYRING_ENV", "KeyDirectory", "Keyring"]

log = logging.getLogger("mesh.security.keyring")

DEFAULT_KEYRING_ENV = "MESH_KEYRING"
"""Environment variable holding the keyring as JSON ``{agent_id: hex public key}``."""


class Keyring:
    """Public keys by agent id; an envelope from an id not in here is forged.

    Keys given to the constructor or ``add`` are trusted as configured (local knowledge). Keys
    read from a shared store go through ``offer``/``refresh``, which apply the one ``policy``
    (operator certificates, or pinning with signed rotation) for every user of this keyring: the
    workflow log verifier, gossip and the quorum book.
    """

    def __init__(
        self, keys: Mapping[str, Ed25519PublicKey] | None = None, *, policy: TrustPolicy | None = None
    ) -> None:
        """Create a keyring from already-parsed keys, admitting store keys by ``policy`` (default: pinned)."""
        self._keys: dict[str, Ed25519PublicKey] = dict(keys or {})
        self._hex: dict[str, str] = {a: public_key_to_hex(k) for a, k in self._keys.items()}
        self._issued: dict[str, int] = {}
        self.policy = policy or TrustPolicy()
        self.refusals: Counter[str] = Counter()
        """Store keys the policy refused, by agent id (an impersonation attempt or a misconfiguration)."""

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

    def add(self, agent_id: str, public_key: Ed25519PublicKey, *, issued_at_ms: int = 0) -> None:
        """Trust ``public_key`` for ``agent_id`` as configured (replacing any previous key, no policy)."""
        self._keys[agent_id] = public_key
        self._hex[agent_id] = public_key_to_hex(public_key)
        self._issued[agent_id] = issued_at_ms

    def offer(self, agent_id: str, record: KeyRecord) -> bool:
        """Admit ``record``'s key for ``agent_id`` if the policy allows it; return whether it changed."""
        verdict, why = self.policy.judge(agent_id, record, self._hex.get(agent_id), self._issued.get(agent_id, 0))
        if verdict == "refuse":
            if self.refusals[agent_id] == 0:
                log.warning("keyring: refused a key for %s: %s", agent_id, why)
            self.refusals[agent_id] += 1
            return False
        if verdict == "keep":
            return False
        if agent_id in self._keys:
            log.info("keyring: key of %s replaced (%s)", agent_id, why)
        issued = record.certificate.issued_at_ms if record.certificate is not None else 0
        self.add(agent_id, public_key_from_hex(record.public_key), issued_at_ms=issued)
        return True

    def refresh(self, records: Mapping[str, KeyRecord]) -> int:
        """Offer every record (e.g. ``KeyDirectory.records()``); return how many keys changed."""
        return sum(self.offer(agent_id, record) for agent_id, record in records.items())

    def remove(self, agent_id: str) -> None:
        """Stop trusting ``agent_id``."""
        self._keys.pop(agent_id, None)
        self._hex.pop(agent_id, None)
        self._issued.pop(agent_id, None)

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


class KeyDirectory:
    """The key records agents publish in a shared ``mesh.store.KeyringStore``, parsed.

    The store keeps record text by agent id; this adds the record format (``KeyRecord``: the key,
    its operator certificate, a signed rotation). Records are unverified until a ``Keyring``
    admits them by its policy (``load``, ``Keyring.refresh``). Store errors pass through as the
    store raises them (``StoreUnavailable`` when it cannot be reached).
    """

    def __init__(self, store: KeyringStore) -> None:
        """Publish and read records in ``store``."""
        self.store = store

    async def publish(
        self,
        agent_id: str,
        public_key: Ed25519PublicKey,
        *,
        certificate: AgentCertificate | None = None,
        rotation: KeyRotation | None = None,
    ) -> None:
        """Announce ``agent_id``'s public key with the evidence for it (operator certificate, rotation)."""
        record = KeyRecord(public_key_to_hex(public_key), certificate, rotation)
        await self.store.publish(agent_id, record.to_json())

    async def records(self) -> dict[str, KeyRecord]:
        """Every published record, unverified; unreadable entries are skipped (and logged), not fatal."""
        out: dict[str, KeyRecord] = {}
        for agent_id, text in (await self.store.records()).items():
            try:
                out[agent_id] = KeyRecord.parse(text)
            except KeyringError as exc:
                log.warning("keyring %r: skipping the entry of %r: %s", self.store, agent_id, exc)
        return out

    async def load(self, policy: TrustPolicy | None = None) -> Keyring:
        """A keyring of the published keys that ``policy`` admits (default: pinned, first use)."""
        keyring = Keyring(policy=policy)
        keyring.refresh(await self.records())
        return keyring
