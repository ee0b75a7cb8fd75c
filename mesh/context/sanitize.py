"""Error sanitizing and secret redaction for everything that enters a prompt (or a log).

A stack trace in a prompt costs hundreds of tokens and teaches the model nothing it can act on;
what it needs is one line, ``ErrorType: root cause``. Repeated failures of one operation are
collapsed to one line. Secrets are redacted before text becomes a block, so they never reach a
prompt; :class:`Redactor` is the one redactor of ``mesh.security`` that also serves logs, spans,
trace events, scratchpads, the CLI and dead letters.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from mesh.security._redaction import REDACTED, Redactor, redact_text

__all__ = [
    "REDACTED",
    "Attempt",
    "Redactor",
    "collapse_failures",
    "redact",
    "sanitize_error",
]

def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with ``secrets``, registered secrets and credential shapes replaced by ``[REDACTED]``."""
    return redact_text(text, tuple(secrets))


_DEFAULT_REDACTOR = Redactor()


# -- errors -------------------------------------------------------------------------------------

_WS = re.compile(r"\s+")
_TRACEBACK_HEAD = "Traceback (most recent call last):"
_CHAIN_LINES = (
    "The above exception was the direct cause of the following exception:",
    "During handling of the above exception, another exception occurred:",
)
_EXC_LINE = re.compile(r"^(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*)(?::\s?(.*))?$")


def _one_line(text: str, max_chars: int) -> str:
    text = _WS.sub(" ", text).strip()
    if len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "…"
    return text


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _chain_root(exc: BaseException) -> BaseException:
    seen = {id(exc)}
    root = exc
    while True:
        nxt = root.__cause__
        if nxt is None and not root.__suppress_context__:
            nxt = root.__context__
        if nxt is None or id(nxt) in seen:
            return root
        seen.add(id(nxt))
        root = nxt


def _parse_traceback(text: str) -> tuple[str, str, str, str] | None:
    """(outer type, outer message, root type, root message) of a printed traceback."""
    if _TRACEBACK_HEAD not in text:
        return None
    found: list[tuple[str, str]] = []
    in_frames = False
    for line in text.splitlines():
        if line.startswith(_TRACEBACK_HEAD):
            in_frames = True
            continue
        if not line.strip() or line.strip() in _CHAIN_LINES:
            continue
        if line[0] in " \t":
            continue  # frame, source line or caret
        if in_frames:
            m = _EXC_LINE.match(line.strip())
            if m:
                found.append((m.group(1), (m.group(2) or "").strip()))
                in_frames = False
    if not found:
        return None
    # Python prints a chain root first and the exception finally raised last.
    (root_type, root_msg), (outer_type, outer_msg) = found[0], found[-1]
    return outer_type, outer_msg, root_type, root_msg


def sanitize_error(
    error: BaseException | str,
    *,
    redactor: Redactor | None = None,
    max_chars: int = 200,
) -> str:
    """One line ``ErrorType: root cause`` for an exception or a printed traceback.

    For a chained exception the type is the one raised last (what the caller saw) and the cause
    is the chain's root, e.g. ``FetchError: ConnectionRefusedError: [Errno 111] refused``.
    Whitespace is collapsed, secrets are redacted and the line is cut at ``max_chars``.
    """
    redactor = redactor or _DEFAULT_REDACTOR
    if isinstance(error, BaseException):
        outer_type = type(error).__name__
        root = _chain_root(error)
        root_type = type(root).__name__
        root_msg = _first_line(str(root))
    else:
        parsed = _parse_traceback(error)
        if parsed is None:
            return _one_line(redactor.redact(_first_line(error) or "unknown error"), max_chars)
        outer_type, _outer_msg, root_type, root_msg = parsed
    if root_type == outer_type:
        line = f"{outer_type}: {root_msg}" if root_msg else outer_type
    else:
        cause = f"{root_type}: {root_msg}" if root_msg else root_type
        line = f"{outer_type}: {cause}"
    return _one_line(redactor.redact(line), max_chars)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of an operation: ``error`` is None when it succeeded."""

    operation: str
    """What was tried (a tool or action name)."""
    error: BaseException | str | None = None
    """The failure, raw or already sanitized; None for a success."""


def _error_type(line: str) -> str:
    head = line.split(":", 1)[0].strip()
    return head if head and " " not in head else line


def collapse_failures(
    attempts: Iterable[Attempt],
    *,
    redactor: Redactor | None = None,
    max_chars: int = 200,
) -> list[str]:
    """One line per streak of consecutive failures of one operation, one per success.

    A streak of N > 1 failures becomes ``op: attempts 1-N failed due to X; last error: ...``,
    where X is the error type (or the most common types when they differ).
    """
    lines: list[str] = []
    streak_op: str | None = None
    streak: list[str] = []

    def flush() -> None:
        if not streak:
            return
        if len(streak) == 1:
            lines.append(f"{streak_op}: attempt 1 failed: {streak[0]}")
        else:
            types = Counter(_error_type(e) for e in streak)
            if len(types) == 1:
                cause = next(iter(types))
            else:
                cause = ", ".join(f"{t} ({n})" for t, n in types.most_common(3))
            lines.append(
                f"{streak_op}: attempts 1-{len(streak)} failed due to {cause}; "
                f"last error: {streak[-1]}"
            )
        streak.clear()

    for attempt in attempts:
        if attempt.operation != streak_op:
            flush()
            streak_op = attempt.operation
        if attempt.error is None:
            n = len(streak)
            flush()
            lines.append(
                f"{attempt.operation}: succeeded" + (f" on attempt {n + 1}" if n else "")
            )
        else:
            streak.append(sanitize_error(attempt.error, redactor=redactor, max_chars=max_chars))
    flush()
    return lines
