"""Security of the mesh: Ed25519 envelope signatures, the keyring, verification and redaction.

Every envelope is signed by its sender over ``EnvelopeCodec.encode_body(env)``. Receivers run
``EnvelopeVerifier.verify`` before any handler: unsigned, forged (bad signature, unknown sender,
fields that differ from the signed body), replayed (id already seen, or HLC older than the
window) and equivocating envelopes raise ``EnvelopeRejected`` whose ``reason`` is the
dead-letter reason. ``redact_text``/``redact_value``/``Redactor`` are the one redactor every sink
uses (prompts, spans, trace events, logs, scratchpads, the CLI, dead letters), masking with ``REDACTED``.
"""

from mesh.security._data_key import (
    DATA_KEY_ENV,
    DATA_KEY_FILE_ENV,
    DATA_KEY_FILENAME,
    DataCipher,
    DataKeyError,
    SealedValueError,
    data_cipher,
    ensure_data_key_file,
    generate_data_key,
    is_sealed,
    load_data_cipher,
    private_dir,
    write_private_file,
)
from mesh.security._errors import EnvelopeRejected, KeyringError, RejectionReason
from mesh.security._keyring import DEFAULT_KEYRING_ENV, KeyDirectory, Keyring
from mesh.security._keys import (
    KeyPair,
    generate_keypair,
    private_key_from_hex,
    private_key_to_hex,
    public_key_from_hex,
    public_key_to_hex,
)
from mesh.security._redaction import (
    CREDENTIAL_PATTERNS,
    MIN_SECRET_CHARS,
    REDACTED,
    SECRET_MASK,
    RedactingLogFilter,
    Redactor,
    SecretLogFilter,
    SecretRegistry,
    install_log_redaction,
    is_secret_key,
    redact_bytes,
    redact_record,
    redact_text,
    redact_value,
    render_safe,
    secret_registry,
)
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
    "KeyDirectory",
    "Keyring",
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
    # secrets at rest: the data key, AES-GCM sealing, private files
    "DATA_KEY_ENV",
    "DATA_KEY_FILE_ENV",
    "DATA_KEY_FILENAME",
    "DataCipher",
    "DataKeyError",
    "SealedValueError",
    "data_cipher",
    "ensure_data_key_file",
    "generate_data_key",
    "is_sealed",
    "load_data_cipher",
    "private_dir",
    "write_private_file",
    # redaction: the one redactor of every sink
    "CREDENTIAL_PATTERNS",
    "MIN_SECRET_CHARS",
    "REDACTED",
    "SECRET_MASK",
    "RedactingLogFilter",
    "Redactor",
    "SecretLogFilter",
    "SecretRegistry",
    "install_log_redaction",
    "is_secret_key",
    "redact_bytes",
    "redact_record",
    "redact_text",
    "redact_value",
    "render_safe",
    "secret_registry",
]
