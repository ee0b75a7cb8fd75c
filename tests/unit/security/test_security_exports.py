"""The public surface of mesh.security, pinned: changing it must be deliberate."""

from __future__ import annotations

import mesh.security as package


def test_security_public_names_are_pinned():
    assert sorted(package.__all__) == [
        "AgentCertificate",
        "DEFAULT_KEYRING_ENV",
        "EnvelopeRejected",
        "EnvelopeSigner",
        "EnvelopeVerifier",
        "EquivocationRule",
        "KeyPair",
        "KeyRecord",
        "KeyRotation",
        "Keyring",
        "KeyringError",
        "OPERATOR_KEY_FILE_ENV",
        "OPERATOR_PUBLIC_KEY_ENV",
        "OPERATOR_PUBLIC_KEY_FILE_ENV",
        "RedisKeyringStore",
        "RejectionReason",
        "SECRET_MASK",
        "SecretLogFilter",
        "TrustPolicy",
        "VerifierOptions",
        "ballot_equivocation_rule",
        "certify",
        "ensure_operator_key",
        "generate_keypair",
        "load_operator_key",
        "operator_key_path",
        "private_key_from_hex",
        "private_key_to_hex",
        "public_key_from_hex",
        "public_key_to_hex",
        "redact_text",
        "render_safe",
        "rotate",
    ]


def test_security_every_exported_name_exists_and_is_documented():
    assert len(set(package.__all__)) == len(package.__all__)
    for name in package.__all__:
        obj = getattr(package, name)
        if callable(obj) and getattr(obj, "__module__", "").startswith("mesh."):
            assert obj.__doc__, f"{name} has no docstring"
