"""The one redactor: generated secret shapes embedded in random text never survive, in any sink's spelling."""

from __future__ import annotations

import base64
import json
import logging
import string
from collections.abc import Callable
from urllib.parse import quote, quote_plus

import msgpack
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import mesh.context
import mesh.telemetry
from mesh.context import sanitize_error
from mesh.runtime.sanitize import one_line_error
from mesh.security import (
    REDACTED,
    SECRET_MASK,
    Redactor,
    SecretRegistry,
    is_secret_key,
    redact_bytes,
    redact_record,
    redact_text,
    redact_value,
)

ALNUM = string.ascii_letters + string.digits
UPPER_NUM = string.ascii_uppercase + string.digits
B64 = ALNUM + "+/"
B64URL = ALNUM + "-_"
PASSWORD_CHARS = ALNUM + "!#$%*+-.^_~"

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def chars(alphabet: str, n: int, m: int | None = None) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=n, max_size=n if m is None else m)


# Each strategy yields (text as it would appear in a line, the secret part that must not survive).
Shape = tuple[str, str]


@st.composite
def authorization(draw: st.DrawFn) -> Shape:
    token = draw(chars(B64URL + ".~+/", 12, 60))
    scheme = draw(st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Token", "token", "Digest", ""]))
    header = draw(st.sampled_from(["Authorization", "authorization", "AUTHORIZATION", "Proxy-Authorization",
                                   "proxy_authorization", "Authorisation"]))
    value = f"{scheme} {token}".strip()
    form = draw(st.sampled_from([
        "{h}: {v}", "{h}:{v}", "{h}={v}", '"{h}": "{v}"', "'{h}': '{v}'", "{h} = {v}", '{{"{h}":"{v}"}}',
    ]))
    return form.format(h=header, v=value), token


@st.composite
def bearer(draw: st.DrawFn) -> Shape:
    token = draw(chars(B64URL + ".~+/", 12, 80))
    return f"{draw(st.sampled_from(['Bearer', 'bearer', 'BEARER']))} {token}", token


@st.composite
def provider_key(draw: st.DrawFn) -> Shape:
    kind = draw(st.sampled_from(["anthropic", "openai", "openai_proj", "github", "github_pat", "aws_id",
                                 "slack", "google", "stripe"]))
    key = {
        "anthropic": lambda: "sk-ant-api03-" + draw(chars(B64URL, 20, 95)),
        "openai": lambda: "sk-" + draw(chars(ALNUM, 20, 48)),
        "openai_proj": lambda: "sk-proj-" + draw(chars(B64URL, 20, 120)),
        "github": lambda: draw(st.sampled_from(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"])) + draw(chars(ALNUM, 36)),
        "github_pat": lambda: "github_pat_" + draw(chars(ALNUM + "_", 22, 82)),
        "aws_id": lambda: draw(st.sampled_from(["AKIA", "ASIA"])) + draw(chars(UPPER_NUM, 16)),
        "slack": lambda: draw(st.sampled_from(["xoxb-", "xoxp-", "xoxa-", "xoxs-", "xapp-"]))
        + draw(chars(ALNUM + "-", 10, 60)),
        "google": lambda: "AIza" + draw(chars(B64URL, 35)),
        "stripe": lambda: draw(st.sampled_from(["sk_live_", "rk_live_", "sk_test_"])) + draw(chars(ALNUM, 24, 99)),
    }[kind]()
    return key, key


@st.composite
def aws_secret(draw: st.DrawFn) -> Shape:
    secret = draw(chars(B64, 40))
    name = draw(st.sampled_from(["aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", "aws_secret_key",
                                 "awsSecretAccessKey"]))
    form = draw(st.sampled_from(["{k}={v}", "{k} = {v}", '"{k}": "{v}"', "{k}: {v}"]))
    return form.format(k=name, v=secret), secret


@st.composite
def url_password(draw: st.DrawFn) -> Shape:
    password = draw(chars(ALNUM + "!$&'()*+,;=-._~%", 6, 40).filter(lambda p: "'" not in p))
    scheme = draw(st.sampled_from(["https", "postgres", "redis", "amqp", "mongodb+srv", "ftp"]))
    user = draw(chars(ALNUM + "._-", 0, 12))
    host = draw(chars(string.ascii_lowercase, 1, 12)) + ".example"
    assume(password not in user and password not in host)
    return f"{scheme}://{user}:{password}@{host}/db?x=1", password


@st.composite
def credential_field(draw: st.DrawFn) -> Shape:
    key = draw(st.sampled_from(["password", "Password", "db_password", "client_secret", "secret", "api_key",
                                "apiKey", "X-Api-Key", "access_token", "refresh_token", "auth_token", "token",
                                "passwd", "private_key", "secret_key", "credentials"]))
    form = draw(st.sampled_from(["json", "repr", "kv", "kv_spaced", "yaml", "query"]))
    if form in ("json", "repr"):
        value = draw(st.text(min_size=6, max_size=40).filter(lambda v: v.strip() and "REDACTED" not in v))
        if form == "json":
            text = json.dumps({key: value, "n": 1})
            return text, json.dumps(value)[1:-1]
        text = repr({key: value, "n": 1})
        return text, repr(value)[1:-1]
    value = draw(chars(PASSWORD_CHARS, 6, 40).filter(lambda v: v.lower() not in ("true", "false", "none", "null")))
    text = {
        "kv": f"{key}={value}",
        "kv_spaced": f"{key} = {value}",
        "yaml": f"{key}: {value}",
        "query": f"https://api.example/v1?user=ann&{key}={value}&page=2",
    }[form]
    return text, value


@st.composite
def pem_private_key(draw: st.DrawFn) -> Shape:
    kind = draw(st.sampled_from(["", "RSA ", "EC ", "OPENSSH ", "ENCRYPTED "]))
    body = base64.b64encode(draw(st.binary(min_size=48, max_size=300))).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    block = f"-----BEGIN {kind}PRIVATE KEY-----\n" + "\n".join(lines) + f"\n-----END {kind}PRIVATE KEY-----"
    if draw(st.booleans()):
        return json.dumps({"key": block})[1:-1], lines[0]
    return block, lines[0]


@st.composite
def jwt(draw: st.DrawFn) -> Shape:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    header = part({"alg": draw(st.sampled_from(["HS256", "RS256", "ES256"])), "typ": "JWT"})
    payload = part({"sub": draw(chars(ALNUM, 1, 20)), "exp": draw(st.integers(0, 2**40))})
    sig = draw(chars(B64URL, 16, 86))
    token = f"{header}.{payload}.{sig}"
    return token, f"{payload}.{sig}"


SHAPES = st.one_of(authorization(), bearer(), provider_key(), aws_secret(), url_password(), credential_field(),
                   pem_private_key(), jwt())
SEPARATORS = st.sampled_from([" ", "\n", "\t", ", ", "; ", " | ", "\r\n", " -> "])


@st.composite
def embedded(draw: st.DrawFn) -> tuple[str, str]:
    """A line of random text with one secret shape in it, and the secret that must not survive."""
    text, secret = draw(SHAPES)
    before, after = draw(st.text(max_size=60)), draw(st.text(max_size=60))
    line = f"{before}{draw(SEPARATORS)}{text}{draw(SEPARATORS)}{after}"
    assume(line.count(secret) == text.count(secret))  # the random text may not spell the secret by itself
    return line, secret


SINKS: dict[str, Callable[[str], str]] = {
    "security.redact_text": redact_text,
    "security.Redactor": Redactor(),
    "context.Redactor (prompts)": mesh.context.Redactor(),
    "context.redact": mesh.context.redact,
    "telemetry.redact_text (spans, events, scratchpads)": mesh.telemetry.redact_text,
    "telemetry.redact_value": lambda t: str(mesh.telemetry.redact_value(t)),
    "dead letter raw bytes": lambda t: redact_bytes(t.encode("utf-8", "surrogatepass")).decode("utf-8", "surrogatepass"),
}


@SETTINGS
@given(embedded())
def test_every_generated_secret_shape_is_masked_in_random_text(case: tuple[str, str]) -> None:
    line, secret = case
    for sink, redact in SINKS.items():
        out = redact(line)
        assert secret not in unmasked(out), f"{sink} leaked {secret!r} from {line!r}: {out!r}"
        assert REDACTED in out, sink


@SETTINGS
@given(embedded())
def test_every_sink_masks_alike_and_redaction_is_idempotent(case: tuple[str, str]) -> None:
    line, _secret = case
    outputs = {sink: redact(line) for sink, redact in SINKS.items() if "bytes" not in sink and "value" not in sink}
    assert len(set(outputs.values())) == 1, outputs
    once = redact_text(line)
    assert redact_text(once) == once


@SETTINGS
@given(st.lists(SHAPES, min_size=1, max_size=4), st.binary(max_size=16))
def test_secrets_inside_binary_records_are_masked_in_dead_letter_bytes(shapes: list[Shape], junk: bytes) -> None:
    # msgpack puts a length byte, which may read as a letter or digit, right before each string.
    texts = [text for text, _ in shapes]
    record = junk + msgpack.packb({"payload": " | ".join(texts), "items": texts, "pad": "x" * len(junk) * 9},
                                  use_bin_type=True)
    out = redact_bytes(record)
    for _, secret in shapes:
        assert secret.encode() not in out.replace(REDACTED.encode(), b"\x00"), (record, out)


def unmasked(text: str) -> str:
    """``text`` without the masks, so a secret that happens to spell part of ``[REDACTED]`` is not found in it."""
    return text.replace(REDACTED, "\x00")


@SETTINGS
@given(st.text(min_size=4, max_size=40).filter(lambda s: len(s.strip()) >= 4),
       st.text(max_size=60), st.text(max_size=60))
def test_registered_secret_variables_are_masked_wherever_they_appear(secret: str, before: str, after: str) -> None:
    registry = SecretRegistry([secret])
    value = secret.strip()
    for line in (f"{before} {value} {after}", f"{before}{json.dumps({'v': value})}{after}",
                 f"https://x/?q={quote(value, safe='')}", f"{before}{quote_plus(value)}{after}"):
        for out in (redact_text(line, registry), Redactor([value])(line)):
            assert value not in unmasked(out), (line, out)


def test_prose_and_ordinary_values_survive() -> None:
    for text in ("the bearer token is missing", "max_tokens=1024 prompt_tokens=55", "sk-learn is a library",
                 "secret=True priority=0", "GET /patients?page=2 -> 200", "token (filled)", "ehr_base_url: http://x/"):
        assert redact_text(text) == text


def test_one_mask_spelling_everywhere() -> None:
    assert SECRET_MASK == REDACTED == mesh.context.REDACTED == mesh.telemetry.REDACTED == "[REDACTED]"
    line = "401 for Authorization: Bearer abcdefgh12345678 key=sk-ant-api03-zzzzzzzzzzzz"
    expected = redact_text(line)
    assert "abcdefgh12345678" not in expected and "zzzzzzzzzzzz" not in expected
    assert sanitize_error(PermissionError(line)) == f"PermissionError: {expected}"
    assert one_line_error(PermissionError(line)) == f"PermissionError: {expected}"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", (line,), None)
    assert redact_record(record).getMessage() == expected


def test_credential_keys_mask_whole_values() -> None:
    assert is_secret_key("Authorization") and is_secret_key("x-api-key") and is_secret_key("db.password")
    assert not is_secret_key("max_tokens") and not is_secret_key("token_count")
    assert redact_value({"headers": {"Authorization": "anything at all"}, "tokens": 5}) == {
        "headers": {"Authorization": REDACTED}, "tokens": 5}


FRAGMENTS = ["a.", "a", "aws", "x://", "x://a:", "Bearer ", "-----BEGIN PRIVATE KEY-----", "password", "password=",
             '"password": "', "authorization: ", "eyJ", "eyJaaaa.", "sk-", "sk-ant-", "ghp_", "AKIA", "xoxb-", "AIza",
             ":", "@", "=", " ", "\\", '"', "a-", "\x00", "\udcd9"]


def test_hostile_text_costs_linear_time() -> None:
    # 30k characters of pairs of pattern fragments: linear redaction takes a few ms each; a
    # quadratic pattern (as the URL, field and JWT patterns once were) takes tens of seconds.
    import time

    for first in FRAGMENTS:
        for second in FRAGMENTS[:3]:
            text = (first + second) * (30_000 // len(first + second))
            started = time.perf_counter()
            redact_text(text)
            assert time.perf_counter() - started < 5, (first, second)


def test_a_masked_value_is_masked_wherever_else_it_appears_in_the_same_text() -> None:
    # Found by the binary-record property: a bearer token that was also a URL's user name
    # survived in the URL (the pattern masks only the password there).
    token = "abcdEFGH1234"
    for line in (f"redis://{token}:passw0rd@h.example/db and Bearer {token}",
                 f"Bearer {token} | redis://{token}:passw0rd@h.example/db"):
        assert token not in redact_text(line), line
        assert token.encode() not in redact_bytes(msgpack.packb({"a": line, "b": line.split(" | ")}, use_bin_type=True))
    # Short values are words, not secrets to hunt across the text.
    assert redact_text("password=hunt2 and hunt2 again") == "password=[REDACTED] and hunt2 again"


def test_scoped_secrets_are_forgotten_when_every_scope_that_added_them_is_released() -> None:
    # bench.memory: every workflow's token stayed in the process registry for good, and the
    # pattern every redaction runs grew with all work ever done (RSS +45 MB per 250 workflows).
    registry = SecretRegistry()
    registry.add("token-of-wf1-abcdef", scope="fetch/wf1")
    registry.add("token-of-wf1-abcdef", scope="validate/wf1")
    registry.add("operator-api-key-123456")
    registry.add("operator-api-key-123456", scope="fetch/wf1")  # already held for good
    registry.release("fetch/wf1")
    assert "token-of-wf1-abcdef" in registry  # validate still works on wf1
    assert registry.mask("x token-of-wf1-abcdef y") == "x [REDACTED] y"
    registry.release("validate/wf1")
    assert "token-of-wf1-abcdef" not in registry
    assert registry.mask("x token-of-wf1-abcdef y") == "x token-of-wf1-abcdef y"
    assert "operator-api-key-123456" in registry
    for n in range(2000):  # a long-running agent: the registry stays the size of live work
        registry.add(f"token-{n:06d}-abcdef", scope=f"fetch/wf{n}")
        registry.release(f"fetch/wf{n}")
    assert len(registry) == 1
