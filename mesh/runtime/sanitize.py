"""One-line, secret-free error text for history, events and scratchpads."""

from __future__ import annotations

from mesh.context import sanitize_error

__all__ = ["one_line_error"]


def one_line_error(exc: BaseException, *, limit: int = 300) -> str:
    """``ErrorType: root cause`` on one line, never a stack trace.

    The context engine's sanitizer does the shaping and the redaction, with the one redactor of
    ``mesh.security``: credential shapes and the secret values this process has seen at run time
    (the auth token a step discovered).
    """
    return sanitize_error(exc, max_chars=limit)
