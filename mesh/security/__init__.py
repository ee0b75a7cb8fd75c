"""Security of the mesh: Ed25519 envelope signatures, the keyring, verification and redaction.

Every envelope is signed by its sender over ``EnvelopeCodec.encode_body(env)``. Receivers run
``EnvelopeVerifier.verify`` before any handler: unsigned, forged (bad signature, unknown sender,
fields that differ from the signed body), replayed (id already seen, or HLC older than the
window) and equivocating envelopes raise ``EnvelopeRejected`` whose ``reason`` is the
dead-letter reason. Secret variables are masked by ``render_safe`` and ``SecretLogFilter``.
"""

from mesh.security._errors import EnvelopeRejected, KeyringError, RejectionReason
from mesh.security._keyring import DEFAULT_KEYRING_ENV, Keyring, RedisKeyringStore
from mesh.security._keys import (
    KeyPair,
    generate_keypair,
    private_key_from_hex,
    private_key_to_hex,
    public_key_from_hex,
    public_key_to_hex,
)
from mesh.security._redaction import SECRET_MASK, SecretLogFilter, redact_text, render_safe
from mesh.security._signer import EnvelopeSigner
from mesh.security._trust import (
    OPERATOR_KEY_FILE_ENV,
    OPERATOR_PUBLIC_KEY_ENV,
    OPERATOR_PUBLIC_KEY_FILE_ENV,
    AgentCertificate,
    KeyRecord,
    KeyRotation,
    TrustPolicy,
    certify,
    ensure_operator_key,
    load_operator_key,
    operator_key_path,
    rotate,
)
from mesh.security._verifier import (
    EnvelopeVerifier,
    EquivocationRule,
    VerifierOptions,
    ballot_equivocation_rule,
)

__all__ = [
    # keys
    "KeyPair",
    "generate_keypair",
    "private_key_from_hex",
    "private_key_to_hex",
    "public_key_from_hex",
    "public_key_to_hex",
    # keyring
    "DEFAULT_KEYRING_ENV",
    "Keyring",
    "RedisKeyringStore",
    # trust root: operator certificates, pinning and rotation, the one admission policy
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
    # signing and verification
    "EnvelopeSigner",
    "EnvelopeVerifier",
    "EquivocationRule",
    "VerifierOptions",
    "ballot_equivocation_rule",
    # errors
    "EnvelopeRejected",
    "KeyringError",
    "RejectionReason",
    # redaction
    "SECRET_MASK",
    "SecretLogFilter",
    "redact_text",
    "render_safe",
]
