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


def test_secret_variables_of_a_context_map_never_show_in_repr_str_views_or_logs():
    from mesh.gossip import ContextMap

    cmap = ContextMap("wf", "agent")
    entry = cmap.set("auth_token", TOKEN, secret=True)
    cmap.set("order_id", "o-1")
    keys = cmap.add("api_keys", TOKEN + "-2", secret=True)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(SecretLogFilter(cmap.secret_values))
    logger = logging.getLogger("test.security.map")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("map %s entry %r set %s", cmap, entry, keys)
        logger.info("careless: %s", cmap.value("auth_token"))
    finally:
        logger.removeHandler(handler)
    rendered = [repr(cmap), str(cmap), repr(entry), str(entry), repr(keys), str(render_safe(cmap)), out.getvalue()]
    for text in rendered:
        assert TOKEN not in text
    assert render_safe(cmap) == {"auth_token": SECRET_MASK, "order_id": "o-1", "api_keys": SECRET_MASK}
    assert f"careless: {SECRET_MASK}" in out.getvalue()
    assert cmap.value("auth_token") == TOKEN  # the value itself is intact for the code that needs it
