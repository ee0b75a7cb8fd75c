"""Redaction: values of variables flagged secret never reach logs, spans, events or scratchpads."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["SECRET_MASK", "SecretLogFilter", "redact_text", "render_safe"]

SECRET_MASK = "***"
"""What a secret value is replaced with."""

_MIN_SECRET_CHARS = 4
"""Shorter secrets are not scrubbed from free text: masking every 'a' would destroy the line."""


def _is_secret(entry: Any) -> bool:
    if isinstance(entry, Mapping):
        return bool(entry.get("secret", False))
    return bool(getattr(entry, "secret", False))


def _value_of(entry: Any) -> Any:
    if isinstance(entry, Mapping):
        return entry.get("value")
    return getattr(entry, "value", entry)


def render_safe(variables: Any) -> dict[str, Any]:
    """A plain ``{name: value}`` view with every secret value replaced by ``SECRET_MASK``.

    Accepts anything with ``items()`` (or a ``safe_items()`` method) whose values are entries
    with ``value`` and ``secret`` (attributes or keys), e.g. a ``mesh.gossip.ContextMap``.
    """
    items = variables.items() if hasattr(variables, "items") else variables
    return {str(name): SECRET_MASK if _is_secret(entry) else _value_of(entry) for name, entry in items}


def redact_text(text: str, secrets: Iterable[Any]) -> str:
    """``text`` with every occurrence of each secret's text replaced by ``SECRET_MASK``."""
    for secret in sorted({str(s) for s in secrets if s is not None}, key=len, reverse=True):
        if len(secret) >= _MIN_SECRET_CHARS:
            text = text.replace(secret, SECRET_MASK)
    return text


class SecretLogFilter(logging.Filter):
    """A logging filter that scrubs current secret values from every record it sees.

    ``secrets`` is called per record, so secrets discovered later are scrubbed too. Attach it
    to handlers (not loggers) so records of child loggers pass through it.
    """

    def __init__(self, secrets: Callable[[], Iterable[Any]]) -> None:
        """Scrub the values ``secrets()`` returns."""
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message with secrets masked; never drops the record."""
        secrets = list(self._secrets())
        if secrets:
            record.msg = redact_text(record.getMessage(), secrets)
            record.args = None
            # Format the traceback now (formatters reuse a cached exc_text) so it can be scrubbed.
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact_text(record.exc_text, secrets)
            if record.stack_info:
                record.stack_info = redact_text(record.stack_info, secrets)
        return True
