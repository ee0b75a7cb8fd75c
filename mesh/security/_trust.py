"""The trust root: operator certificates of agent keys, key rotation, and the one admission policy.

Redis (the keyring hash) only *carries* public keys; it is not trusted. A key read from it is
admitted into a ``Keyring`` only through its ``TrustPolicy``:

* ``certified`` (an operator public key is configured): the key must come with an
  ``AgentCertificate`` signed by the operator key for exactly that agent id. A key already trusted
  is replaced only by a certificate issued later (rotation by the operator).
* ``pinned`` (no operator key; trust on first use): the first key seen for an id is pinned; it is
  replaced only by a ``KeyRotation`` statement signed with the pinned key.

Either way, whoever can write Redis but holds neither the operator key nor the agent's own key
cannot make a key count as another agent's. The operator private key never needs to be on an
agent's machine; in dev (``mesh dev up``, the demo) it is, as a convenience: an agent that can
read it certifies its own key.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mesh.security._errors import KeyringError
from mesh.security._keys import (
    private_key_from_hex,
    private_key_to_hex,
    public_key_from_hex,
    public_key_to_hex,
)
from protocols.canonical import canonical_bytes

__all__ = [
    "OPERATOR_KEY_FILE_ENV",
    "OPERATOR_PUBLIC_KEY_ENV",
    "OPERATOR_PUBLIC_KEY_FILE_ENV",
    "AgentCertificate",
    "KeyRecord",
    "KeyRotation",
    "TrustPolicy",
    "certify",
    "ensure_operator_key",
    "load_operator_key",
    "operator_key_path",
    "rotate",
]

OPERATOR_PUBLIC_KEY_ENV = "MESH_OPERATOR_PUBLIC_KEY"
"""Hex of the operator's Ed25519 public key; agents admit only keys it certified."""
OPERATOR_PUBLIC_KEY_FILE_ENV = "MESH_OPERATOR_PUBLIC_KEY_FILE"
"""A file holding that hex (e.g. a mounted Kubernetes Secret)."""
OPERATOR_KEY_FILE_ENV = "MESH_OPERATOR_KEY_FILE"
"""The operator PRIVATE key file. Dev only: an agent that can read it certifies its own key."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _verify(key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True, slots=True)
class AgentCertificate:
    """The operator's statement "``public_key`` is the key of ``agent_id``", signed by the operator key."""

    agent_id: str
    public_key: str
    """Hex of the agent's Ed25519 public key."""
    issued_at_ms: int
    """When it was issued; a later certificate for the same id replaces an earlier one."""
    signature: bytes
    """Ed25519 signature by the operator key over ``signing_bytes()``."""

    def signing_bytes(self) -> bytes:
        """What the operator signs (canonical, so no field can be moved into another)."""
        return canonical_bytes(["mesh-agent-cert/1", self.agent_id, self.public_key, self.issued_at_ms])

    def verify(self, operator_key: Ed25519PublicKey) -> bool:
        """Whether the operator key signed this certificate."""
        return _verify(operator_key, self.signature, self.signing_bytes())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "agent_id": self.agent_id,
            "public_key": self.public_key,
            "issued_at_ms": self.issued_at_ms,
            "signature": self.signature.hex(),
        }

    def to_json(self) -> str:
        """The certificate as one line of JSON (what ``mesh keys certify`` prints)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> AgentCertificate:
        """Parse; raise ``KeyringError`` naming what is wrong."""
        try:
            cert = cls(
                agent_id=_str(data, "agent_id"),
                public_key=_str(data, "public_key"),
                issued_at_ms=_int(data, "issued_at_ms"),
                signature=bytes.fromhex(_str(data, "signature")),
            )
        except (TypeError, ValueError, KeyError) as exc:
            raise KeyringError(f"invalid agent certificate: {exc}") from None
        public_key_from_hex(cert.public_key)
        return cert

    @classmethod
    def from_json(cls, text: str) -> AgentCertificate:
        """Parse the JSON form."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeyringError(f"agent certificate is not valid JSON: {exc}") from None
        return cls.from_dict(data)


@dataclass(frozen=True, slots=True)
class KeyRotation:
    """An agent's statement "my key ``old_key`` is replaced by ``new_key``", signed with the old key."""

    agent_id: str
    old_key: str
    new_key: str
    signature: bytes

    def signing_bytes(self) -> bytes:
        """What the old key signs."""
        return canonical_bytes(["mesh-key-rotation/1", self.agent_id, self.old_key, self.new_key])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"agent_id": self.agent_id, "old_key": self.old_key, "new_key": self.new_key,
                "signature": self.signature.hex()}

    @classmethod
    def from_dict(cls, data: Any) -> KeyRotation:
        """Parse; raise ``KeyringError`` naming what is wrong."""
        try:
            return cls(_str(data, "agent_id"), _str(data, "old_key"), _str(data, "new_key"),
                       bytes.fromhex(_str(data, "signature")))
        except (TypeError, ValueError, KeyError) as exc:
            raise KeyringError(f"invalid key rotation: {exc}") from None


def certify(
    operator_key: Ed25519PrivateKey, agent_id: str, public_key: Ed25519PublicKey, *, issued_at_ms: int | None = None
) -> AgentCertificate:
    """Certify ``public_key`` as ``agent_id``'s key with the operator key."""
    cert = AgentCertificate(agent_id, public_key_to_hex(public_key),
                            _now_ms() if issued_at_ms is None else issued_at_ms, b"")
    signature = operator_key.sign(cert.signing_bytes())
    return AgentCertificate(cert.agent_id, cert.public_key, cert.issued_at_ms, signature)


def rotate(agent_id: str, old_key: Ed25519PrivateKey, new_key: Ed25519PublicKey) -> KeyRotation:
    """A rotation statement from ``old_key`` to ``new_key`` (for pinned keyrings)."""
    unsigned = KeyRotation(agent_id, public_key_to_hex(old_key.public_key()), public_key_to_hex(new_key), b"")
    return KeyRotation(unsigned.agent_id, unsigned.old_key, unsigned.new_key, old_key.sign(unsigned.signing_bytes()))


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the keyring store holds for one agent id: a key and the evidence for it."""

    public_key: str
    certificate: AgentCertificate | None = None
    rotation: KeyRotation | None = None

    def to_json(self) -> str:
        """The stored form."""
        data: dict[str, Any] = {"key": self.public_key}
        if self.certificate is not None:
            data["cert"] = self.certificate.to_dict()
        if self.rotation is not None:
            data["rotation"] = self.rotation.to_dict()
        return json.dumps(data, sort_keys=True)

    @classmethod
    def parse(cls, text: str) -> KeyRecord:
        """Read the stored form (a bare hex key, the format before certificates, is read too)."""
        text = text.strip()
        if not text.startswith("{"):
            public_key_from_hex(text)
            return cls(text)
        try:
            data = json.loads(text)
            key = _str(data, "key")
        except (json.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
            raise KeyringError(f"invalid keyring record: {exc}") from None
        public_key_from_hex(key)
        cert = AgentCertificate.from_dict(data["cert"]) if data.get("cert") is not None else None
        rotation = KeyRotation.from_dict(data["rotation"]) if data.get("rotation") is not None else None
        return cls(key, cert, rotation)


Verdict = tuple[Literal["admit", "keep", "refuse"], str]


class TrustPolicy:
    """The one rule deciding which key from the keyring store counts as an agent's (see module doc)."""

    def __init__(self, operator_key: Ed25519PublicKey | None = None) -> None:
        """``certified`` mode with an operator public key, else ``pinned`` (trust on first use)."""
        self.operator_key = operator_key

    @property
    def mode(self) -> Literal["certified", "pinned"]:
        """``certified`` or ``pinned``."""
        return "certified" if self.operator_key is not None else "pinned"

    def judge(self, agent_id: str, record: KeyRecord, current: str | None, current_issued_ms: int) -> Verdict:
        """``admit`` the record's key, ``keep`` the current one (nothing new), or ``refuse`` it, with why."""
        if current == record.public_key:
            cert = record.certificate
            newer = cert is not None and cert.issued_at_ms > current_issued_ms and self._certifies(agent_id, record)
            return ("admit", "recertified") if newer else ("keep", "")
        if self.operator_key is not None:
            if record.certificate is None:
                return "refuse", f"key of {agent_id!r} has no operator certificate"
            if not self._certifies(agent_id, record):
                return "refuse", f"certificate of {agent_id!r} is not signed by the operator key for this id and key"
            if current is not None and record.certificate.issued_at_ms <= current_issued_ms:
                return "refuse", f"certificate of {agent_id!r} is not newer than the trusted one"
            return "admit", "certified"
        if current is None:
            return "admit", "pinned on first use"
        rotation = record.rotation
        if rotation is None:
            return "refuse", f"key of {agent_id!r} differs from the pinned key and carries no rotation statement"
        valid = (
            rotation.agent_id == agent_id
            and rotation.old_key == current
            and rotation.new_key == record.public_key
            and _verify(public_key_from_hex(current), rotation.signature, rotation.signing_bytes())
        )
        if not valid:
            return "refuse", f"rotation statement of {agent_id!r} is not signed by the pinned key"
        return "admit", "rotated by the pinned key"

    def _certifies(self, agent_id: str, record: KeyRecord) -> bool:
        cert = record.certificate
        return (
            self.operator_key is not None
            and cert is not None
            and cert.agent_id == agent_id
            and cert.public_key == record.public_key
            and cert.verify(self.operator_key)
        )

    @classmethod
    def from_env(cls, *, environ: Mapping[str, str] | None = None, state_dir: Path | None = None) -> TrustPolicy:
        """The policy configured by ``MESH_OPERATOR_PUBLIC_KEY`` / ``..._FILE`` / ``MESH_OPERATOR_KEY_FILE``.

        Falls back to the dev operator key under ``state_dir`` (made by ``mesh dev up``), else pinned.
        """
        env = os.environ if environ is None else environ
        text = env.get(OPERATOR_PUBLIC_KEY_ENV, "").strip()
        if text:
            return cls(public_key_from_hex(text))
        path = env.get(OPERATOR_PUBLIC_KEY_FILE_ENV, "").strip()
        if path:
            return cls(public_key_from_hex(_read(Path(path), "operator public key")))
        private = load_operator_key(environ=env, state_dir=state_dir)
        return cls(private.public_key() if private is not None else None)

    def __repr__(self) -> str:
        if self.operator_key is None:
            return "TrustPolicy(mode='pinned')"
        return f"TrustPolicy(mode='certified', operator={public_key_to_hex(self.operator_key)[:16]}...)"


def operator_key_path(state_dir: Path) -> Path:
    """Where ``mesh dev up`` and the demo keep the dev operator's private key."""
    return state_dir / "operator" / "operator.ed25519"


def load_operator_key(*, environ: Mapping[str, str] | None = None, state_dir: Path | None = None) -> Ed25519PrivateKey | None:
    """The operator private key if this process may read it (``MESH_OPERATOR_KEY_FILE``, else the dev file)."""
    env = os.environ if environ is None else environ
    path_text = env.get(OPERATOR_KEY_FILE_ENV, "").strip()
    if path_text:
        return private_key_from_hex(_read(Path(path_text), "operator key"))
    if state_dir is not None and operator_key_path(state_dir).exists():
        return private_key_from_hex(_read(operator_key_path(state_dir), "operator key"))
    return None


def ensure_operator_key(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """Load the operator key at ``path`` or create it (0600 in a 0700 directory); say if it was created."""
    if path.exists():
        return private_key_from_hex(_read(path, "operator key")), False
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return private_key_from_hex(_read(path, "operator key")), False
    with os.fdopen(fd, "w") as fh:
        fh.write(private_key_to_hex(key))
    pub = path.with_suffix(".pub")
    pub.write_text(public_key_to_hex(key.public_key()) + "\n")
    return key, True


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise KeyringError(f"cannot read {what} file {path}: {exc.strerror}") from None


def _str(data: Any, name: str) -> str:
    value = data[name]
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string")
    return value


def _int(data: Any, name: str) -> int:
    value = data[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer")
    return value
