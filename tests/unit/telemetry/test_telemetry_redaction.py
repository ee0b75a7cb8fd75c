"""Redaction of secret values, credential shapes and credential-named keys; log records."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

import mesh.security._redaction as logging_module
from mesh.telemetry import (
    REDACTED,
    RedactingLogFilter,
    SecretRegistry,
    install_log_redaction,
    is_secret_key,
    redact_text,
    redact_value,
)


def test_telemetry_registered_secret_is_masked_inside_text() -> None:
    reg = SecretRegistry()
    reg.add("hunter2-longer")
    assert redact_text("login with hunter2-longer now", reg) == f"login with {REDACTED} now"
    assert "hunter2-longer" in reg


def test_telemetry_longest_secret_masked_whole_when_one_contains_another() -> None:
    reg = SecretRegistry(["abcd", "abcdefgh"])
    assert redact_text("x abcdefgh y", reg) == f"x {REDACTED} y"


def test_telemetry_short_and_empty_values_are_not_registered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reg = SecretRegistry()
    reg.add("")
    reg.add(None)
    with caplog.at_level(logging.WARNING):
        reg.add("ab")
    assert len(reg) == 0
    assert redact_text("ab 12", reg) == "ab 12"
    assert "shorter" in caplog.text


def test_telemetry_discard_and_bytes_values() -> None:
    reg = SecretRegistry()
    reg.add(b"bytes-secret")
    assert redact_text("has bytes-secret", reg) == f"has {REDACTED}"
    reg.discard("bytes-secret")
    assert redact_text("has bytes-secret", reg) == "has bytes-secret"


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("Authorization: Bearer abc.def.ghi-123", "abc.def.ghi-123"),
        ("headers={'Authorization': 'Bearer tok_9876543210'}", "tok_9876543210"),
        ("authorization=Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("sent bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"),
        ("key sk-ant-api03-AbC_dEf-123456 used", "sk-ant-api03-AbC_dEf-123456"),
        ("openai sk-proj1234567890abcdefghijKLMN", "sk-proj1234567890abcdefghijKLMN"),
    ],
)
def test_telemetry_credential_shapes_are_masked(text: str, leaked: str) -> None:
    out = redact_text(text, SecretRegistry())
    assert leaked not in out
    assert REDACTED in out


@pytest.mark.parametrize(
    "text", ["missing bearer token", "uses sk-learn", "Authorization header missing"]
)
def test_telemetry_ordinary_prose_survives(text: str) -> None:
    assert redact_text(text, SecretRegistry()) == text


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("auth_token", True),
        ("Authorization", True),
        ("x-api-key", True),
        ("api_key", True),
        ("password", True),
        ("http.request.header.authorization", True),
        ("max_tokens", False),
        ("gen_ai.usage.input_tokens", False),
        ("mesh.tool.idempotency_key", False),
        ("token_budget", False),
    ],
)
def test_telemetry_secret_key_names(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_telemetry_redact_value_walks_structures() -> None:
    reg = SecretRegistry(["deep-secret-1"])
    value = {
        "url": "https://api/x?q=deep-secret-1",
        "auth_token": "anything at all",
        "nested": [{"password": "p"}, ("deep-secret-1", 3, None, True)],
        "count": 3,
        "raw": b"bytes deep-secret-1",
        "flag": {"secret": True},
    }
    out = redact_value(value, reg)
    assert out == {
        "url": f"https://api/x?q={REDACTED}",
        "auth_token": REDACTED,
        "nested": [{"password": REDACTED}, (REDACTED, 3, None, True)],
        "count": 3,
        "raw": f"bytes {REDACTED}",
        "flag": {"secret": True},
    }
    assert value["auth_token"] == "anything at all"  # input not mutated


def test_telemetry_log_filter_masks_message_args_exception_and_extras() -> None:
    reg = SecretRegistry(["log-secret-77"])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s %(peer)s"))
    handler.addFilter(RedactingLogFilter(reg))
    log = logging.getLogger("test_telemetry_log_filter")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise ValueError("boom with log-secret-77")
        except ValueError:
            log.error(
                "token %s, header %s",
                "log-secret-77",
                "Authorization: Bearer abcdefghijk",
                exc_info=True,
                extra={"peer": "log-secret-77"},
            )
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert "log-secret-77" not in text
    assert "abcdefghijk" not in text
    assert text.count(REDACTED) >= 4
    assert "ValueError" in text  # the traceback is kept, only masked


@pytest.fixture
def restore_record_factory(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo ``install_log_redaction`` so other tests see plain records."""
    original = logging.getLogRecordFactory()
    monkeypatch.setattr(logging_module, "_installed", False)
    yield
    logging.setLogRecordFactory(original)


def test_telemetry_installed_redaction_covers_every_logger(
    restore_record_factory: None, caplog: pytest.LogCaptureFixture
) -> None:
    reg = SecretRegistry(["factory-secret-5"])
    install_log_redaction(reg)
    install_log_redaction(reg)  # idempotent: one wrapper only
    with caplog.at_level(logging.INFO):
        logging.getLogger("some.library").info("sending %s", "factory-secret-5")
    assert caplog.records
    assert "factory-secret-5" not in caplog.text
    assert REDACTED in caplog.text


def test_telemetry_secret_is_masked_when_url_or_json_encoded() -> None:
    raw = 'p@ss/w+rd "q"'
    reg = SecretRegistry([raw])
    url = "https://x/?pw=p%40ss%2Fw%2Brd%20%22q%22 and p%40ss%2Fw%2Brd+%22q%22"
    assert redact_text(url, reg) == f"https://x/?pw={REDACTED} and {REDACTED}"
    assert redact_text('{"pw": "p@ss/w+rd \\"q\\""}', reg) == f'{{"pw": "{REDACTED}"}}'
