"""Log redaction: the same masking as spans and events (``mesh.security``), applied to log records.

``install_log_redaction`` installs it as the record factory, so it covers every logger and every
handler, including those added later by libraries. Records are created only for enabled levels,
so the eager message formatting this needs costs nothing for suppressed debug logs.
"""

from __future__ import annotations

from mesh.security._redaction import RedactingLogFilter, install_log_redaction, redact_record

__all__ = ["RedactingLogFilter", "install_log_redaction", "redact_record"]
