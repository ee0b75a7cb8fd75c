"""Log redaction: the same masking as spans and events, applied to log records.

A ``logging.Filter`` on a handler only sees records that reach that handler; installing the
redaction as the record factory instead covers every logger and every handler, including those
added later by libraries. Records are created only for enabled levels, so the eager message
formatting this needs costs nothing for suppressed debug logs.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from mesh.telemetry._redact import SecretRegistry, redact_text

__all__ = ["RedactingLogFilter", "install_log_redaction", "redact_record"]

# Attributes every LogRecord has; anything else was passed through ``extra=`` and is redacted too.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}
_formatter = logging.Formatter()


def redact_record(
    record: logging.LogRecord, registry: SecretRegistry | None = None
) -> logging.LogRecord:
    """Mask secrets in a record in place: message and args, exception text, stack, extras."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format string must not lose the record; keep the raw template
        message = f"{record.msg!s} {record.args!r}"
    record.msg = redact_text(message, registry)
    record.args = None
    if record.exc_info and not record.exc_text:
        # Formatters reuse exc_text when it is set, so the traceback is rendered (and masked) once.
        record.exc_text = _formatter.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact_text(record.exc_text, registry)
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info, registry)
    for key, value in list(vars(record).items()):
        if key not in _STANDARD_ATTRS and isinstance(value, str):
            setattr(record, key, redact_text(value, registry))
    return record


class RedactingLogFilter(logging.Filter):
    """A filter that masks secrets in every record it sees and lets it through."""

    def __init__(self, registry: SecretRegistry | None = None) -> None:
        super().__init__()
        self._registry = registry

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; never drops it."""
        redact_record(record, self._registry)
        return True


_install_lock = threading.Lock()
_installed = False


def install_log_redaction(registry: SecretRegistry | None = None) -> None:
    """Redact every log record of this process at creation (idempotent)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return redact_record(previous(*args, **kwargs), registry)

        logging.setLogRecordFactory(factory)
        _installed = True
