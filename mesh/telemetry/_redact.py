"""Redaction for telemetry: a re-export of the one redactor in ``mesh.security``.

Every attribute, event, log record and scratchpad line passes through ``redact_text`` or
``redact_value`` before it is written anywhere; see ``mesh.security._redaction`` for what is masked.
"""

from __future__ import annotations

from mesh.security._redaction import (
    MIN_SECRET_CHARS,
    REDACTED,
    SecretRegistry,
    is_secret_key,
    redact_text,
    redact_value,
    secret_registry,
)

__all__ = [
    "MIN_SECRET_CHARS",
    "REDACTED",
    "SecretRegistry",
    "is_secret_key",
    "redact_text",
    "redact_value",
    "secret_registry",
]
