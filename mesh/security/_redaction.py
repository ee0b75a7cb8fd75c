"""The one redactor: secrets never reach prompts, logs, spans, events, scratchpads, the CLI or dead letters.

Every sink of the mesh calls into this module, so a credential masked in one place is masked in
all of them, and always spelled ``[REDACTED]``. Three things are masked:

* values registered at run time in a ``SecretRegistry`` (variables flagged secret, the workflow's
  own secret variables, API keys read from the environment), wherever they appear, also
  URL-encoded or JSON-escaped;
* well-known credential shapes, registered or not (``CREDENTIAL_PATTERNS``): Authorization headers
  and bearer tokens in every spelling, provider API keys (Anthropic, OpenAI, GitHub, AWS, Slack,
  Google, Stripe), passwords in URLs, password/secret/token fields in JSON, Python reprs and
  ``key=value`` text, PEM private keys and JWTs;
* the whole value of a mapping entry whose key names a credential (``is_secret_key``).

Masking too much is preferred to masking too little: a masked non-secret costs a reader some
context, a leaked secret costs a rotation.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = [
    "CREDENTIAL_PATTERNS",
    "MIN_SECRET_CHARS",
    "REDACTED",
    "SECRET_MASK",
    "RedactingLogFilter",
    "Redactor",
    "SecretLogFilter",
    "SecretRegistry",
    "install_log_redaction",
    "is_secret_key",
    "redact_bytes",
    "redact_record",
    "redact_text",
    "redact_value",
    "render_safe",
    "secret_registry",
]

REDACTED = "[REDACTED]"
"""The one spelling of a masked value, in every sink."""

SECRET_MASK = REDACTED
"""Alias of ``REDACTED`` (older name); the same string."""

MIN_SECRET_CHARS = 4
"""Shorter registered values are ignored: they cannot be told apart from ordinary text (turn
numbers, ids) and masking them would shred every line without protecting anything real."""

_log = logging.getLogger(__name__)

_NOT_MASKED = r"(?!\[REDACTED\])"
# Control characters and undecodable bytes (``surrogateescape``) end a value: in a binary record
# they are the framing around a string, not part of it.
_BINARY = r"\x00-\x1f\x7f-\x9f\udc80-\udcff"
# Every repetition before a keyword is bounded, so hostile text costs linear time, not quadratic.
# Patterns do not rely on a word boundary before a keyword: in binary records (msgpack in a dead
# letter) a length byte that reads as a letter or digit may sit right before it.
# Field names that hold a credential, as they appear before ``=``/``:`` in free text.
_KEY_WORDS = (
    r"password|passwd|pwd|passphrase|secret|token|apikey"
    r"|(?:api|access|secret|private|signing|encryption|master|data)[_\-]?key"
    r"|credentials?|cookie|session[_\-]?id|signature"
)
# The match starts at the keyword (``db_password=`` masks from ``password=`` on): no scan of the
# name before it, which cost quadratic time on long dotted words.
_KV_KEY = r"(?i)((?:" + _KEY_WORDS + r")[\"']?\s*(?:=|:)\s*)"
_LITERALS = r"(?!(?:true|false|none|null)(?:[\s,;&}\])]|$))"

CREDENTIAL_PATTERNS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    # A PEM private key block, whole (also JSON-escaped, also cut before its END line).
    (
        "pem_private_key",
        re.compile(
            r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY-----(?:[\s\S]{0,16384}?-----END[A-Z0-9 ]{0,40}PRIVATE KEY-----"
            r"|[A-Za-z0-9+/=\s\\:,\-]*)"
        ),
        REDACTED,
    ),
    # Authorization headers in any spelling (header, JSON, repr, key=value); the scheme is kept.
    (
        "authorization",
        re.compile(
            r"(?i)((?:proxy[_\-]?)?authori[sz]ation\b[\"']?\s*[:=]\s*[\"']?"
            r"(?:(?:bearer|basic|token|digest|negotiate|apikey|hoba|mutual|aws4-hmac-sha256|sso-key)\s+)?+)"
            + _NOT_MASKED
            + r"[^\s\"',;}\]" + _BINARY + r"]+"
        ),
        r"\1" + REDACTED,
    ),
    # A bearer token anywhere. 8+ chars so that prose ("missing bearer token") survives.
    ("bearer", re.compile(r"(?i)(bearer\s+)" + _NOT_MASKED + r"[A-Za-z0-9\-._~+/]{8,}=*"), r"\1" + REDACTED),
    ("anthropic_key", re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}"), REDACTED),
    # OpenAI and friends; 20+ chars so that words like "sk-learn" survive.
    ("openai_key", re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_\-]{20,}"), REDACTED),
    ("github_token", re.compile(r"(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"), REDACTED),
    ("aws_access_key", re.compile(r"(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}"), REDACTED),
    (
        "aws_secret_key",
        re.compile(r"(?i)(aws.{0,20}?(?:secret|key)[\w\-]*[\"']?\s*[:=]\s*[\"']?)" + _NOT_MASKED + r"[A-Za-z0-9/+=]{40}"),
        r"\1" + REDACTED,
    ),
    ("slack_token", re.compile(r"(?:xox[abposre]|xapp)-[A-Za-z0-9\-]{10,}"), REDACTED),
    ("google_api_key", re.compile(r"AIza[0-9A-Za-z_\-]{35}"), REDACTED),
    ("stripe_key", re.compile(r"(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,}"), REDACTED),
    ("jwt", re.compile(r"eyJ[A-Za-z0-9_\-]{4,512}\.[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*"), REDACTED),
    # user:password@host in any URL; the user is kept.
    (
        "url_password",
        re.compile(r"(?i)([a-z][a-z0-9+.\-]{0,30}://[^/\s:@\"']{0,256}:)" + _NOT_MASKED + r"[^/\s@\"'" + _BINARY + r"]+(?=@)"),
        r"\1" + REDACTED,
    ),
    # password/secret/token fields: quoted values (JSON, Python repr) first, then bare ones.
    ("credential_field", re.compile(_KV_KEY + r"\"" + _NOT_MASKED + r"(?:[^\"\\]|\\.)+\""), r'\1"' + REDACTED + '"'),
    ("credential_field", re.compile(_KV_KEY + r"'" + _NOT_MASKED + r"(?:[^'\\]|\\.)+'"), r"\1'" + REDACTED + "'"),
    (
        "credential_field",
        re.compile(_KV_KEY + _NOT_MASKED + _LITERALS + r"[^\s\"',;&}\]\[)(" + _BINARY + r"]+"),
        r"\1" + REDACTED,
    ),
)
"""``(kind, pattern, replacement)`` for credential shapes masked whether registered or not."""

_BYTES_OPENAI_KEY = re.compile(r"sk-[A-Za-z0-9_\-]{20,}")

# A mapping key whose last segment is one of these names holds a credential, whatever its value.
_SECRET_KEY = re.compile(
    r"(?i)(?:^|[._\-])(authorization|proxy-authorization|api[_\-]?key|apikey|x-api-key|password|passwd"
    r"|passphrase|secret|client[_\-]?secret|(?:secret|signing|encryption|master|data)[_\-]?key"
    r"|secret[_\-]?access[_\-]?key|token|access[_\-]?token"
    r"|refresh[_\-]?token|auth[_\-]?token|id[_\-]?token|bearer|cookie|set-cookie|credentials?"
    r"|private[_\-]?key)$"
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
        """Start with ``values`` registered."""
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._held: dict[str, set[str]] = {}  # value -> scopes holding it (values added with a scope)
        self._scopes: dict[str, set[str]] = {}  # scope -> its values
        for value in values:
            self.add(value)

    def add(self, value: str | bytes | None, *, scope: str | None = None) -> None:
        """Register a secret value; empty and very short values are ignored (see ``MIN_SECRET_CHARS``).

        With a ``scope`` (the runtime uses ``<agent>/<workflow>``) the value is kept until every
        scope that added it is ``release``d: a workflow's token is forgotten once the workflows
        that knew it are done here, so the registry (and the pattern every redaction runs) stays
        the size of the live work, not of all work ever done. Without one it is kept for good.
        """
        if value is None:
            return
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        text = text.strip()
        if len(text) < MIN_SECRET_CHARS:
            if text:
                _log.warning("secret shorter than %d chars not registered for redaction", MIN_SECRET_CHARS)
            return
        with self._lock:
            if scope is not None:
                if text not in self._values or text in self._held:
                    self._held.setdefault(text, set()).add(scope)
                    self._scopes.setdefault(scope, set()).add(text)
            else:
                self._held.pop(text, None)  # registered for good now
            if text in self._values:
                return
            self._values.add(text)
            self._pattern = None

    def release(self, scope: str) -> None:
        """Forget the values ``scope`` added, unless another scope (or an unscoped add) holds them."""
        with self._lock:
            for text in self._scopes.pop(scope, ()):
                holders = self._held.get(text)
                if holders is None:
                    continue
                holders.discard(scope)
                if not holders:
                    del self._held[text]
                    self._values.discard(text)
                    self._pattern = None

    def discard(self, value: str) -> None:
        """Forget a secret value (e.g. a rotated token that can no longer be used)."""
        with self._lock:
            self._values.discard(value.strip())
            self._held.pop(value.strip(), None)
            self._pattern = None

    def clear(self) -> None:
        """Forget every registered value."""
        with self._lock:
            self._values.clear()
            self._held.clear()
            self._scopes.clear()
            self._pattern = None

    def values(self) -> frozenset[str]:
        """The registered values."""
        with self._lock:
            return frozenset(self._values)

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
                self._pattern = _literal_pattern(self._values)
            return self._pattern


def _variants(value: str) -> set[str]:
    # The same secret as it appears in a URL query or inside a JSON string.
    return {value, quote(value, safe=""), quote_plus(value, safe=""), json.dumps(value)[1:-1]}


def _literal_pattern(values: Iterable[str]) -> re.Pattern[str] | None:
    # Longest first, so a secret that contains another is masked whole.
    variants = {v for value in values for v in _variants(value) if len(v) >= MIN_SECRET_CHARS}
    if not variants:
        return None
    return re.compile("|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True)))


_default_registry = SecretRegistry()


def secret_registry() -> SecretRegistry:
    """The process-wide registry the runtime adds secret values to."""
    return _default_registry


_REPEAT_MIN_CHARS = 6
"""A value a pattern masked is also masked wherever else it appears in the same text (a token that is
also a URL's user name, a key quoted twice) once it is at least this long: shorter ones are words."""


def _mask_patterns(text: str) -> str:
    hidden: set[str] = set()

    def masked(m: re.Match[str], replacement: str) -> str:
        out = m.expand(replacement)
        whole, at = m.group(0), out.find(REDACTED)
        if at >= 0:
            prefix, suffix = out[:at], out[at + len(REDACTED):]
            if whole.startswith(prefix) and whole.endswith(suffix) and len(whole) >= len(prefix) + len(suffix):
                value = whole[len(prefix): len(whole) - len(suffix)].strip().strip("'\"")
                if len(value) >= _REPEAT_MIN_CHARS:
                    hidden.add(value)
        return out

    for _kind, pattern, replacement in CREDENTIAL_PATTERNS:
        text = pattern.sub(functools.partial(masked, replacement=replacement), text)
    if hidden:
        text = re.compile("|".join(re.escape(v) for v in sorted(hidden, key=len, reverse=True))).sub(REDACTED, text)
    return text


class Redactor:
    """An immutable redactor: the process registry, its own literal ``secrets`` and the patterns.

    ``secrets`` are literal values (a step's secret variables); values shorter than
    ``MIN_SECRET_CHARS`` are ignored. Compiled once; ``redact`` is safe to call from many threads.
    """

    def __init__(self, secrets: Iterable[Any] = (), *, patterns: bool = True, registry: SecretRegistry | None = None) -> None:
        """Mask ``secrets``, the process registry's values and ``registry``'s, and, if ``patterns``, credential shapes."""
        self._secrets = frozenset(str(s).strip() for s in secrets if s is not None and len(str(s).strip()) >= MIN_SECRET_CHARS)
        self._literal = _literal_pattern(self._secrets)
        self._patterns = patterns
        self._registry = registry

    @property
    def secrets(self) -> frozenset[str]:
        """The literal values this redactor adds to the registry's."""
        return self._secrets

    def with_secrets(self, secrets: Iterable[Any]) -> Redactor:
        """A redactor that also hides ``secrets``."""
        return Redactor([*self._secrets, *secrets], patterns=self._patterns, registry=self._registry)

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``REDACTED``."""
        if self._literal is not None:
            text = self._literal.sub(REDACTED, text)
        text = _default_registry.mask(text)
        if self._registry is not None and self._registry is not _default_registry:
            text = self._registry.mask(text)
        if self._patterns:
            text = _mask_patterns(text)
        return text

    __call__ = redact


_DEFAULT_REDACTOR = Redactor()

Secrets = SecretRegistry | Redactor | Iterable[Any] | None
"""What the ``secrets`` argument of the functions below accepts, on top of the process registry."""


def _redactor_for(secrets: Secrets) -> Redactor:
    if secrets is None:
        return _DEFAULT_REDACTOR
    if isinstance(secrets, Redactor):
        return secrets
    if isinstance(secrets, SecretRegistry):
        return Redactor(registry=secrets)
    if isinstance(secrets, str | bytes):
        return Redactor([secrets if isinstance(secrets, str) else secrets.decode("utf-8", "replace")])
    return Redactor(secrets)


def redact_text(text: str, secrets: Secrets = None) -> str:
    """``text`` with registered secrets, ``secrets`` and credential shapes masked."""
    return _redactor_for(secrets).redact(text)


def redact_bytes(data: bytes, secrets: Secrets = None) -> bytes:
    """``data`` with secrets masked; every byte outside a secret is kept, invalid UTF-8 included."""
    text = _redactor_for(secrets).redact(bytes(data).decode("utf-8", "surrogateescape"))
    # In binary framing a length byte may read as a letter right before a key: no word boundary.
    text = _BYTES_OPENAI_KEY.sub(REDACTED, text)
    return text.encode("utf-8", "surrogateescape")


def redact_value(value: Any, secrets: Secrets = None, *, key: str = "") -> Any:
    """A copy of ``value`` (scalars, mappings, sequences) safe to write anywhere.

    Strings are masked with ``redact_text``; a mapping entry whose key names a credential is
    replaced whole; bytes are decoded (lossily) so that a secret inside them is masked too.
    Other objects are rendered with ``str`` first, since their repr may carry a secret.
    """
    redactor = _redactor_for(secrets)
    return _redact_value(value, redactor, key)


def _redact_value(value: Any, redactor: Redactor, key: str) -> Any:
    if key and is_secret_key(key) and value not in (None, "", b"") and not isinstance(value, bool):
        return REDACTED
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redactor.redact(value)
    if isinstance(value, bytes | bytearray):
        return redactor.redact(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, Mapping):
        return {str(k): _redact_value(v, redactor, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_redact_value(v, redactor, "") for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    return redactor.redact(str(value))


def _is_secret(entry: Any) -> bool:
    if isinstance(entry, Mapping):
        return bool(entry.get("secret", False))
    return bool(getattr(entry, "secret", False))


def _value_of(entry: Any) -> Any:
    if isinstance(entry, Mapping):
        return entry.get("value")
    return getattr(entry, "value", entry)


def render_safe(variables: Any) -> dict[str, Any]:
    """A plain ``{name: value}`` view with every secret value replaced by ``REDACTED``.

    Accepts anything with ``items()`` whose values are entries with ``value`` and ``secret``
    (attributes or keys), e.g. a ``mesh.gossip.ContextMap``. Non-secret values are redacted too.
    """
    items = variables.items() if hasattr(variables, "items") else variables
    return {
        str(name): REDACTED if _is_secret(entry) else redact_value(_value_of(entry), key=str(name))
        for name, entry in items
    }


# -- logs --------------------------------------------------------------------------------------

# Attributes every LogRecord has; anything else was passed through ``extra=`` and is redacted too.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_formatter = logging.Formatter()


def redact_record(record: logging.LogRecord, secrets: Secrets = None) -> logging.LogRecord:
    """Mask secrets in a record in place: message and args, exception text, stack, extras."""
    redactor = _redactor_for(secrets)
    try:
        message = record.getMessage()
    except Exception:  # a bad format string must not lose the record; keep the raw template
        message = f"{record.msg!s} {record.args!r}"
    record.msg = redactor.redact(message)
    record.args = None
    if record.exc_info and not record.exc_text:
        # Formatters reuse exc_text when it is set, so the traceback is rendered (and masked) once.
        record.exc_text = _formatter.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redactor.redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redactor.redact(record.stack_info)
    for key, value in list(vars(record).items()):
        if key not in _STANDARD_ATTRS and isinstance(value, str):
            setattr(record, key, redactor.redact(value))
    return record


class RedactingLogFilter(logging.Filter):
    """A filter that masks secrets in every record it sees and lets it through."""

    def __init__(self, secrets: Secrets = None) -> None:
        """Mask the process registry's values, ``secrets`` and credential shapes."""
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; never drops it."""
        redact_record(record, self._secrets)
        return True


class SecretLogFilter(logging.Filter):
    """A filter whose extra secrets come from a callable, asked per record (secrets found later count)."""

    def __init__(self, secrets: Callable[[], Iterable[Any]]) -> None:
        """Mask what ``secrets()`` returns, plus everything ``RedactingLogFilter`` masks."""
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; never drops it."""
        redact_record(record, list(self._secrets()))
        return True


_install_lock = threading.Lock()
_installed = False


def install_log_redaction(secrets: Secrets = None) -> None:
    """Redact every log record of this process at creation (idempotent).

    A ``logging.Filter`` on a handler only sees records that reach that handler; the record
    factory covers every logger and every handler, including those libraries add later.
    """
    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return redact_record(previous(*args, **kwargs), secrets)

        logging.setLogRecordFactory(factory)
        _installed = True
