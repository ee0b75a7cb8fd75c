"""Secret variables never reach a log line, repr or rendered view."""

from __future__ import annotations

import io
import logging

from mesh.security import SECRET_MASK, SecretLogFilter, redact_text, render_safe

TOKEN = "sk-live-0123456789abcdef"


class _Entry:
    def __init__(self, value: object, secret: bool) -> None:
        self.value = value
        self.secret = secret


def test_render_safe_masks_only_secrets_for_objects_and_mappings():
    variables = {"token": _Entry(TOKEN, True), "order": _Entry("o-1", False)}
    assert render_safe(variables) == {"token": SECRET_MASK, "order": "o-1"}
    plain = {"token": {"value": TOKEN, "secret": True}, "n": {"value": 3}}
    assert render_safe(plain) == {"token": SECRET_MASK, "n": 3}


def test_redact_text_masks_longest_first_and_skips_tiny_values():
    assert redact_text(f"auth={TOKEN} x", [TOKEN, TOKEN[:8], "ab"]) == f"auth={SECRET_MASK} x"
    assert redact_text("abc", ["ab"]) == "abc"


def test_log_filter_scrubs_messages_args_and_tracebacks():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    secrets = [TOKEN]
    handler.addFilter(SecretLogFilter(lambda: secrets))
    logger = logging.getLogger("test.security.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("calling with %s", TOKEN)
        try:
            raise ValueError(f"bad token {TOKEN}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert "calling with" in text
    assert "ValueError: bad token" in text
    assert TOKEN not in text
    assert text.count(SECRET_MASK) == 2
