"""Ed25519 key pairs and their text form (hex of the 32 raw bytes)."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from mesh.security._errors import KeyringError

__all__ = [
    "KeyPair",
    "generate_keypair",
    "private_key_from_hex",
    "private_key_to_hex",
    "public_key_from_hex",
    "public_key_to_hex",
]


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An agent's signing key and the public key peers verify it with."""

    agent_id: str
    """Whose keys these are."""
    private_key: Ed25519PrivateKey
    """Signing key; never logged."""
    public_key: Ed25519PublicKey
    """Verification key, shared through the keyring."""

    def __repr__(self) -> str:
        return f"KeyPair(agent_id={self.agent_id!r}, public_key={public_key_to_hex(self.public_key)})"


def generate_keypair(agent_id: str) -> KeyPair:
    """A fresh random Ed25519 key pair for ``agent_id``."""
    private_key = Ed25519PrivateKey.generate()
    return KeyPair(agent_id, private_key, private_key.public_key())


def public_key_to_hex(key: Ed25519PublicKey) -> str:
    """The 32 raw public-key bytes as hex."""
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def public_key_from_hex(text: str) -> Ed25519PublicKey:
    """Parse a hex public key; raise ``KeyringError`` if it is not 32 hex-encoded bytes."""
    try:
        raw = bytes.fromhex(text.strip())
        if len(raw) != 32:
            raise ValueError(f"expected 32 bytes, got {len(raw)}")
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError, AttributeError) as exc:
        raise KeyringError(f"invalid Ed25519 public key: {exc}") from None


def private_key_to_hex(key: Ed25519PrivateKey) -> str:
    """The 32 raw private-key bytes as hex (store it as a secret)."""
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()).hex()


def private_key_from_hex(text: str) -> Ed25519PrivateKey:
    """Parse a hex private key; raise ``KeyringError`` without echoing the key."""
    try:
        raw = bytes.fromhex(text.strip())
        if len(raw) != 32:
            raise ValueError(f"expected 32 bytes, got {len(raw)}")
        return Ed25519PrivateKey.from_private_bytes(raw)
    except (ValueError, TypeError, AttributeError):
        raise KeyringError("invalid Ed25519 private key (expected 64 hex characters)") from None
