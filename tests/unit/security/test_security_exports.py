"""The public surface of mesh.security, pinned: changing it must be deliberate."""

from __future__ import annotations

import mesh.security as package


def test_security_public_names_are_pinned():
    assert sorted(package.__all__) == [
        "DEFAULT_KEYRING_ENV",
        "EnvelopeRejected",
        "EnvelopeSigner",
        "EnvelopeVerifier",
        "EquivocationRule",
        "KeyPair",
        "Keyring",
        "KeyringError",
        "RedisKeyringStore",
        "RejectionReason",
        "SECRET_MASK",
        "SecretLogFilter",
        "VerifierOptions",
        "ballot_equivocation_rule",
        "generate_keypair",
        "private_key_from_hex",
        "private_key_to_hex",
        "public_key_from_hex",
        "public_key_to_hex",
        "redact_text",
        "render_safe",
    ]


def test_security_every_exported_name_exists_and_is_documented():
    assert len(set(package.__all__)) == len(package.__all__)
    for name in package.__all__:
        obj = getattr(package, name)
        if callable(obj) and getattr(obj, "__module__", "").startswith("mesh."):
            assert obj.__doc__, f"{name} has no docstring"
