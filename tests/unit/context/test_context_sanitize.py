"""Each sanitizer rule: one-line errors, collapsed failures, redaction."""

import traceback

from mesh.context import (
    REDACTED,
    Attempt,
    Block,
    Redactor,
    collapse_failures,
    redact,
    sanitize_error,
)


def raise_chained() -> None:
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except OSError as exc:
        raise RuntimeError("fetch failed") from exc


def test_exception_becomes_type_and_root_cause() -> None:
    assert sanitize_error(ValueError("bad page\nsecond line")) == "ValueError: bad page"
    try:
        raise_chained()
    except RuntimeError as exc:
        line = sanitize_error(exc)
    assert line == "RuntimeError: ConnectionRefusedError: [Errno 111] Connection refused"
    assert "\n" not in line


def test_printed_traceback_becomes_one_line() -> None:
    try:
        raise_chained()
    except RuntimeError:
        text = traceback.format_exc()
    assert text.count("\n") > 5
    assert sanitize_error(text) == (
        "RuntimeError: ConnectionRefusedError: [Errno 111] Connection refused"
    )
    tb = 'Traceback (most recent call last):\n  File "x.py", line 1, in f\n    g()\nrequests.exceptions.ReadTimeout: read timed out\n'
    assert sanitize_error(tb) == "ReadTimeout: read timed out"


def test_sanitized_line_is_bounded_and_redacted() -> None:
    line = sanitize_error(ValueError("x" * 1000 + " Bearer abcdef123456"), max_chars=80)
    assert len(line) <= 80
    assert sanitize_error(PermissionError("Authorization: Bearer tok.en-123 rejected")) == (
        f"PermissionError: Authorization: Bearer {REDACTED} rejected"
    )


def test_consecutive_failures_collapse_with_the_last_error() -> None:
    attempts = [Attempt("fetch_page", TimeoutError(f"read timed out after {i}s")) for i in range(1, 6)]
    attempts.append(Attempt("fetch_page", None))
    attempts.append(Attempt("validate", ValueError("schema mismatch")))
    lines = collapse_failures(attempts)
    assert lines == [
        "fetch_page: attempts 1-5 failed due to TimeoutError; "
        "last error: TimeoutError: read timed out after 5s",
        "fetch_page: succeeded on attempt 6",
        "validate: attempt 1 failed: ValueError: schema mismatch",
    ]


def test_mixed_failure_types_are_counted() -> None:
    lines = collapse_failures(
        [Attempt("op", TimeoutError("t")), Attempt("op", TimeoutError("t")), Attempt("op", "KeyError: k")]
    )
    assert lines == [
        "op: attempts 1-3 failed due to TimeoutError (2), KeyError (1); last error: KeyError: k"
    ]


def test_redaction_of_flagged_secrets_and_known_shapes() -> None:
    secret = "s3cr3t-token-value"
    text = (
        f"token={secret} header Authorization: Bearer eyJhbGciOi.payload.sig "
        "key sk-ant-api03-AbCdEf123456_xyz openai sk-abcdefghijklmnopqrstu "
        "url https://user:hunter2@db.local/x api_key: 'abc123def' ghp_abcdefghijklmnopqrstuvwxyz "
        "AKIAABCDEFGHIJKLMNOP"
    )
    out = redact(text, [secret])
    for leaked in (
        secret,
        "eyJhbGciOi",
        "sk-ant-api03",
        "sk-abcdefghij",
        "hunter2",
        "abc123def",
        "ghp_abc",
        "AKIAABCD",
    ):
        assert leaked not in out, leaked
    assert "Authorization: Bearer [REDACTED]" in out
    assert "https://user:[REDACTED]@db.local/x" in out


def test_redactor_leaves_clean_text_alone_and_ignores_tiny_secrets() -> None:
    clean = "Fetched 3 pages; next page is 4. Status ok."
    assert Redactor(["ok"]).redact(clean) == clean  # too short to be a real secret
    redactor = Redactor(["pass-phrase-1"]).with_secrets(["other-secret"])
    assert redactor("a pass-phrase-1 b other-secret") == f"a {REDACTED} b {REDACTED}"


async def test_builder_redacts_blocks_before_counting() -> None:
    from mesh.context import Budget, PromptBuilder

    builder = PromptBuilder(redactor=Redactor(["topsecretvalue"]))
    blocks = [Block("m", "Mission.", kind="mission"), Block("v", "auth = topsecretvalue", kind="variable")]
    prompt = await builder.build(blocks, Budget(window=500, output_reserve=0))
    assert "topsecretvalue" not in prompt.text
    assert REDACTED in prompt.text
    assert prompt.ledger.is_balanced()
