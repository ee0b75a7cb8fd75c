"""One-line, secret-free error text for history, events and scratchpads."""

from __future__ import annotations

from mesh.telemetry import redact_text

__all__ = ["one_line_error"]


def one_line_error(exc: BaseException, *, limit: int = 300) -> str:
    """``ErrorType: root cause`` on one line, secrets redacted, never a stack trace."""
    root: BaseException = exc
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if root is not exc:
        inner = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
        if inner and inner not in message:
            message = f"{message} ({type(root).__name__}: {inner})" if message else f"{type(root).__name__}: {inner}"
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    text = redact_text(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
