"""The public surface of mesh.security, pinned: changing it must be deliberate."""

from __future__ import annotations

import mesh.security as package


def test_security_public_names_are_pinned():
    assert sorted(package.__all__) == [
        "AgentCertificate",
        "CREDENTIAL_PATTERNS",
        "DATA_KEY_ENV",
        "DATA_KEY_FILENAME",
        "DATA_KEY_FILE_ENV",
        "DEFAULT_KEYRING_ENV",
        "DataCipher",
        "DataKeyError",
        "EnvelopeRejected",
        "EnvelopeSigner",
        "EnvelopeVerifier",
        "EquivocationRule",
        "KeyDirectory",
        "KeyPair",
        "KeyRecord",
        "KeyRotation",
        "Keyring",
        "KeyringError",
        "MIN_SECRET_CHARS",
        "OPERATOR_KEY_FILE_ENV",
        "OPERATOR_PUBLIC_KEY_ENV",
        "OPERATOR_PUBLIC_KEY_FILE_ENV",
        "REDACTED",
        "RedactingLogFilter",
        "Redactor",
        "RejectionReason",
        "SECRET_MASK",
        "SealedValueError",
        "SecretLogFilter",
        "SecretRegistry",
        "TrustPolicy",
        "VerifierOptions",
        "ballot_equivocation_rule",
        "certify",
        "data_cipher",
        "ensure_data_key_file",
        "ensure_operator_key",
        "generate_data_key",
        "generate_keypair",
        "install_log_redaction",
        "is_sealed",
        "is_secret_key",
        "load_data_cipher",
        "load_operator_key",
        "operator_key_path",
        "private_dir",
        "private_key_from_hex",
        "private_key_to_hex",
        "public_key_from_hex",
        "public_key_to_hex",
        "redact_bytes",
        "redact_record",
        "redact_text",
        "redact_value",
        "render_safe",
        "rotate",
        "secret_registry",
        "write_private_file",
    ]


def test_security_every_exported_name_exists_and_is_documented():
    assert len(set(package.__all__)) == len(package.__all__)
    for name in package.__all__:
        obj = getattr(package, name)
        if callable(obj) and getattr(obj, "__module__", "").startswith("mesh."):
            assert obj.__doc__, f"{name} has no docstring"
