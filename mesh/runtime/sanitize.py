"""One-line, secret-free error text for history, events and scratchpads."""

from __future__ import annotations

from mesh.context import sanitize_error
from mesh.telemetry import redact_text

__all__ = ["one_line_error"]


def one_line_error(exc: BaseException, *, limit: int = 300) -> str:
    """``ErrorType: root cause`` on one line, never a stack trace.

    The context engine's sanitizer does the shaping and the pattern redaction (bearer tokens,
    API keys); the telemetry registry adds the secret values this process has seen at run time
    (the auth token a step discovered).
    """
    return redact_text(sanitize_error(exc, max_chars=limit))
