"""Redaction: secret values, bearer tokens, API keys and Authorization headers never leave the process.

Every attribute, event, log record and scratchpad line passes through ``redact_text`` or
``redact_value`` before it is written anywhere. Three things are masked:

* values registered at run time in a ``SecretRegistry`` (context variables flagged secret, API keys
  read from the environment), wherever they appear inside a string;
* well-known credential shapes: ``Bearer <token>``, ``Authorization: <value>``, ``sk-ant-...`` keys;
* the whole value of a mapping entry whose key names a credential (``auth_token``, ``api_key``,
  ``password``, ``authorization``, ...).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = [
    "MIN_SECRET_CHARS",
    "REDACTED",
    "SecretRegistry",
    "is_secret_key",
    "redact_text",
    "redact_value",
    "secret_registry",
]

REDACTED = "[REDACTED]"
"""What a masked value is replaced with."""

MIN_SECRET_CHARS = 4
"""Shorter registered values are ignored: they cannot be told apart from ordinary text (turn
numbers, ids) and masking them would shred every line without protecting anything real."""

_log = logging.getLogger(__name__)

# Credential shapes masked even when nobody registered them. The Authorization pattern comes
# first so that ``Authorization: Bearer x`` is masked whole, scheme included.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"(?i)(\b(?:proxy-)?authorization\b[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}]+(?:[ \t]+[^\s\"',;}]+)?"
        ),
        r"\1" + REDACTED,
    ),
    # 8+ chars so that prose ("missing bearer token") survives while real tokens do not.
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]{8,}=*"), r"\1 " + REDACTED),
    (re.compile(r"\bsk-ant-[A-Za-z0-9_\-]+"), REDACTED),
    # Generic "sk-" style provider keys (OpenAI and friends) are long; require 20+ chars so that
    # words like "sk-learn" survive.
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{20,}"), REDACTED),
)

# A mapping key whose last segment is one of these names holds a credential, whatever its value.
_SECRET_KEY = re.compile(
    r"(?i)(?:^|[._\-])(authorization|proxy-authorization|api[_\-]?key|apikey|x-api-key|password|passwd"
    r"|secret|client[_\-]?secret|token|access[_\-]?token|refresh[_\-]?token|auth[_\-]?token"
    r"|bearer|cookie|set-cookie|credentials?|private[_\-]?key)$"
)


def is_secret_key(key: str) -> bool:
    """Whether a mapping key (attribute, header or parameter name) names a credential."""
    return bool(_SECRET_KEY.search(key))


class SecretRegistry:
    """The set of secret values known to this process, masked wherever they appear.

    Thread-safe; ``add`` may be called at any time (as the runtime learns secret variables) and
    takes effect for everything redacted afterwards.
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for value in values:
            self.add(value)

    def add(self, value: str | bytes | None) -> None:
        """Register a secret value; empty and very short values are ignored (see ``MIN_SECRET_CHARS``)."""
        if value is None:
            return
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        text = text.strip()
        if len(text) < MIN_SECRET_CHARS:
            if text:
                _log.warning(
                    "secret shorter than %d chars not registered for redaction", MIN_SECRET_CHARS
                )
            return
        with self._lock:
            if text in self._values:
                return
            self._values.add(text)
            self._pattern = None

    def discard(self, value: str) -> None:
        """Forget a secret value (e.g. a rotated token that can no longer be used)."""
        with self._lock:
            self._values.discard(value.strip())
            self._pattern = None

    def clear(self) -> None:
        """Forget every registered value."""
        with self._lock:
            self._values.clear()
            self._pattern = None

    def __len__(self) -> int:
        """How many values are registered."""
        return len(self._values)

    def __contains__(self, value: object) -> bool:
        """Whether ``value`` is a registered secret."""
        return isinstance(value, str) and value.strip() in self._values

    def mask(self, text: str) -> str:
        """``text`` with every registered value replaced by ``REDACTED``."""
        pattern = self._compiled()
        return pattern.sub(REDACTED, text) if pattern is not None else text

    def _compiled(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._pattern is None and self._values:
                # Longest first, so a secret that contains another is masked whole.
                variants = {v for value in self._values for v in _variants(value)}
                ordered = sorted(variants, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(v) for v in ordered))
            return self._pattern


def _variants(value: str) -> set[str]:
    # The same secret as it appears in a URL query or inside a JSON string.
    return {value, quote(value, safe=""), quote_plus(value, safe=""), json.dumps(value)[1:-1]}


_default_registry = SecretRegistry()


def secret_registry() -> SecretRegistry:
    """The process-wide registry the runtime adds secret values to."""
    return _default_registry


def redact_text(text: str, registry: SecretRegistry | None = None) -> str:
    """``text`` with registered secrets and credential shapes masked."""
    reg = registry if registry is not None else _default_registry
    out = reg.mask(text)
    for pattern, replacement in _PATTERNS:
        out = pattern.sub(replacement, out)
    return out


def redact_value(value: Any, registry: SecretRegistry | None = None, *, key: str = "") -> Any:
    """A copy of ``value`` (scalars, mappings, sequences) safe to write anywhere.

    Strings are masked with ``redact_text``; a mapping entry whose key names a credential is
    replaced whole; bytes are decoded (lossily) so that a secret inside them is masked too.
    Other objects are rendered with ``str`` first, since their repr may carry a secret.
    """
    if key and is_secret_key(key) and value not in (None, "", b"") and not isinstance(value, bool):
        return REDACTED
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value, registry)
    if isinstance(value, bytes | bytearray):
        return redact_text(bytes(value).decode("utf-8", "replace"), registry)
    if isinstance(value, Mapping):
        return {str(k): redact_value(v, registry, key=str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [redact_value(v, registry) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    return redact_text(str(value), registry)
