"""A mock EHR (electronic health records) HTTP API for the patient-reconciliation workflow.

It runs in its own process (``python -m agents.mock_ehr``) or in a thread (``MockEhrServer``),
so crash tests can SIGKILL agents while the EHR, and its audit log, keep going. Everything is
standard library: ``ThreadingHTTPServer`` and JSON.

Endpoints (JSON in, JSON out):

* ``POST /auth/token`` ``{client_id, client_secret}`` (JSON or form-encoded) ->
  ``{access_token, token_type: "Bearer", expires_in, expires_at}``; bad credentials -> 401.
  Like real OAuth servers it issues a new token on every call; an ``Idempotency-Key`` is only
  remembered, so that ``POST /auth/token/lookup`` ``{client_id, client_secret, idempotency_key}``
  can answer ``{found: true, access_token, ...}`` for the token issued under that key (while it is
  valid) or ``{found: false}``: how a client that crashed mid-call finds out whether it got one.
* ``GET /patients?page=N&page_size=M`` -> ``{items: [ids], page, page_size, total, next_page}``
  (pages start at 1; ``next_page`` is null on the last page).
* ``GET /patients/{id}`` -> the record: demographics, medications, allergies. Records are
  deterministic from the seed; a few are deliberately inconsistent (``PLANTED_ISSUES``).
* ``GET /formulary`` -> ``{items: {code: {name, drug_class}}}``, the medication codes a record may use.
* ``POST /reconciliations`` ``{workflow_id, patient_id, findings: [...]}`` -> 201, creates a
  reconciliation record (a side effect). ``GET /reconciliations`` lists them.
* ``POST /reports`` ``{workflow_id, body}`` -> 201, stores a report (a side effect).
  ``GET /reports`` lists them.
* ``GET /audit/summary`` -> the counts of ``summarize_audit_log`` over the whole audit log.

Every endpoint but ``/auth/token`` needs ``Authorization: Bearer <token>``; a missing, unknown
or expired token gets 401 with ``{"error": "missing_token" | "invalid_token" | "token_expired"}``.
Side-effect POSTs honour ``Idempotency-Key``: the same key returns the original status and body
(with ``Idempotent-Replayed: true``) and creates nothing; the same key with a different request
gets 422. Fault injection: ``fail_rate`` answers 503 (``retryable: true``, nothing done) to a
seeded fraction of calls; ``latency_ms`` delays every call.

The audit log is append-only JSONL, one line per call, flushed and fsynced before the response
is sent. It names a token only by a hash and never holds the client secret; the line of a
granted token call carries the token's ``expires_at`` (a later call is a refresh, not a spare).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

from mesh.errors import ConfigError, ServiceStartError

__all__ = [
    # configuration
    "CLIENT_SECRET_ENV",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "EhrConfig",
    # data
    "FORMULARY",
    "PLANTED_ISSUES",
    "EhrDataset",
    "generate_dataset",
    # servers
    "MockEhrProcess",
    "MockEhrServer",
    "start_mock_ehr_process",
    # audit
    "AuditSummary",
    "summarize_audit_log",
    "token_id",
    # command line
    "main",
]

DEFAULT_CLIENT_ID = "mesh-agent"
"""Client id the mock accepts unless configured otherwise."""

DEFAULT_CLIENT_SECRET = "mock-ehr-dev-secret"
"""Client secret the mock accepts unless configured otherwise (a public test value)."""

CLIENT_SECRET_ENV = "MOCK_EHR_CLIENT_SECRET"
"""Environment variable the command line reads the client secret from (never an argument: ps shows those)."""

_MAX_BODY_BYTES = 1 << 20
_MAX_PAGE_SIZE = 100
_READY_PREFIX = "ready on "
# How often the serve loop checks for shutdown: stop() waits up to this long.
_POLL_INTERVAL_S = 0.05


# --------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True, kw_only=True)
class EhrConfig:
    """Behaviour of one mock EHR server."""

    token_ttl_s: float = 300.0
    """Lifetime of an access token, in seconds."""

    patients: int = 20
    """Number of patient records served."""

    page_size: int = 10
    """Default page size of ``GET /patients`` (a ``page_size`` query overrides it, up to 100)."""

    seed: int = 7
    """Seed of the records and of the fault injection: the same seed gives the same run."""

    fail_rate: float = 0.0
    """Fraction of calls answered 503 before doing anything (0 to 1)."""

    latency_ms: float = 0.0
    """Delay added to every call, in milliseconds."""

    client_id: str = DEFAULT_CLIENT_ID
    """The one client id accepted by ``POST /auth/token``."""

    token_lookup: bool = True
    """Whether ``POST /auth/token/lookup`` exists (False: 404, as on a server without it)."""

    token_reply_delay_s: float = 0.0
    """Delay between issuing a token (audited) and sending it: a window in which a fault test
    kills the client after the effect and before it learns of it."""

    client_secret: str = field(default=DEFAULT_CLIENT_SECRET, repr=False)
    """Its secret; kept out of ``repr`` so it never lands in a log by accident."""

    def __post_init__(self) -> None:
        if not self.token_ttl_s > 0:
            raise ConfigError(f"token_ttl_s must be > 0, got {self.token_ttl_s}")
        if self.patients < 0:
            raise ConfigError(f"patients must be >= 0, got {self.patients}")
        if not 1 <= self.page_size <= _MAX_PAGE_SIZE:
            raise ConfigError(f"page_size must be 1..{_MAX_PAGE_SIZE}, got {self.page_size}")
        if not 0.0 <= self.fail_rate <= 1.0:
            raise ConfigError(f"fail_rate must be within 0..1, got {self.fail_rate}")
        if self.latency_ms < 0:
            raise ConfigError(f"latency_ms must be >= 0, got {self.latency_ms}")
        if not self.client_id or not self.client_secret:
            raise ConfigError("client_id and client_secret must not be empty")


# --------------------------------------------------------------------------------------------
# data

FORMULARY: Mapping[str, Mapping[str, str]] = {
    "197361": {"name": "amlodipine 5 mg tablet", "drug_class": "calcium channel blocker"},
    "860975": {"name": "metformin 500 mg tablet", "drug_class": "biguanide"},
    "314076": {"name": "lisinopril 10 mg tablet", "drug_class": "ace inhibitor"},
    "617314": {"name": "atorvastatin 10 mg tablet", "drug_class": "statin"},
    "308182": {"name": "amoxicillin 250 mg capsule", "drug_class": "penicillin"},
    "198211": {"name": "simvastatin 20 mg tablet", "drug_class": "statin"},
    "310965": {"name": "ibuprofen 200 mg tablet", "drug_class": "nsaid"},
    "198440": {"name": "acetaminophen 500 mg tablet", "drug_class": "analgesic"},
    "313782": {"name": "sulfamethoxazole 800 mg tablet", "drug_class": "sulfonamide"},
    "197696": {"name": "codeine 30 mg tablet", "drug_class": "opioid"},
}
"""Medication codes a record may carry, with name and drug class (a code outside it is an issue)."""

# An allergy to the key conflicts with any medication of these drug classes.
_ALLERGY_CONFLICTS: Mapping[str, frozenset[str]] = {
    "penicillin": frozenset({"penicillin"}),
    "sulfa": frozenset({"sulfonamide"}),
    "codeine": frozenset({"opioid"}),
    "nsaids": frozenset({"nsaid"}),
    "latex": frozenset(),
    "peanuts": frozenset(),
}

PLANTED_ISSUES: tuple[str, ...] = (
    "missing_dob",
    "duplicate_mrn",
    "unknown_medication_code",
    "allergy_conflict",
)
"""Kinds of inconsistency planted in the records, in planting order (``duplicate_mrn`` takes two)."""

_GIVEN = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "John", "Radia", "Ken")
_FAMILY = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Backus", "Perlman", "Thompson")
_REACTIONS = ("rash", "hives", "anaphylaxis", "nausea", "swelling")
_SEVERITIES = ("mild", "moderate", "severe")
_DOSES = ("1 tablet daily", "1 tablet twice daily", "2 tablets daily", "1 tablet at night")


@dataclass(frozen=True)
class EhrDataset:
    """The records one seed gives, and which of them were made inconsistent on purpose."""

    patients: tuple[Mapping[str, Any], ...]
    """Patient records in id order."""

    issues: Mapping[str, tuple[str, ...]]
    """Patient id -> kinds of planted issue (``PLANTED_ISSUES``); both holders of a duplicate MRN are listed."""

    def record(self, patient_id: str) -> Mapping[str, Any] | None:
        """The record with this id, or None."""
        index = _patient_index(patient_id)
        if index is None or index >= len(self.patients):
            return None
        return self.patients[index]


def _patient_id(index: int) -> str:
    return f"P{index + 1:04d}"


def _patient_index(patient_id: str) -> int | None:
    if len(patient_id) != 5 or not patient_id.startswith("P") or not patient_id[1:].isdigit():
        return None
    number = int(patient_id[1:])
    return number - 1 if number >= 1 else None


def generate_dataset(count: int, *, seed: int) -> EhrDataset:
    """Deterministic records for ``count`` patients; a few carry the issues of ``PLANTED_ISSUES``.

    All four kinds are planted when ``count >= 5``; fewer patients get the first kinds that fit.
    Every other record is clean: a DOB, a unique MRN, known medication codes, no allergy conflict.
    """
    rng = random.Random(f"mock-ehr-data:{seed}")
    mrns = rng.sample(range(100_000, 1_000_000), count) if count else []
    records: list[dict[str, Any]] = []
    for index in range(count):
        allergies = [
            {"substance": s, "reaction": rng.choice(_REACTIONS), "severity": rng.choice(_SEVERITIES)}
            for s in rng.sample(sorted(_ALLERGY_CONFLICTS), rng.randint(0, 2))
        ]
        banned = set().union(*(_ALLERGY_CONFLICTS[a["substance"]] for a in allergies))
        allowed = sorted(c for c, m in FORMULARY.items() if m["drug_class"] not in banned)
        medications = [
            {"code": c, "name": FORMULARY[c]["name"], "dose": rng.choice(_DOSES)}
            for c in rng.sample(allowed, rng.randint(1, 3))
        ]
        born = date(1930, 1, 1) + timedelta(days=rng.randrange(365 * 75))
        records.append(
            {
                "id": _patient_id(index),
                "mrn": f"MRN-{mrns[index]}",
                "name": {"given": rng.choice(_GIVEN), "family": rng.choice(_FAMILY)},
                "dob": born.isoformat(),
                "sex": rng.choice(("female", "male")),
                "medications": medications,
                "allergies": allergies,
            }
        )

    issues: dict[str, list[str]] = {}
    slots = rng.sample(range(count), min(count, len(PLANTED_ISSUES) + 1))
    for kind in PLANTED_ISSUES:
        if kind == "duplicate_mrn":
            if len(slots) < 2:
                break
            first, second = slots.pop(), slots.pop()
            records[second]["mrn"] = records[first]["mrn"]
            for victim in (first, second):
                issues.setdefault(_patient_id(victim), []).append(kind)
            continue
        if not slots:
            break
        victim = slots.pop()
        record = records[victim]
        if kind == "missing_dob":
            del record["dob"]
        elif kind == "unknown_medication_code":
            code = f"9{rng.randrange(100_000):05d}"  # no formulary code starts with 9
            record["medications"].append({"code": code, "name": "unlisted compound", "dose": "as directed"})
        elif kind == "allergy_conflict":
            record["allergies"] = [{"substance": "penicillin", "reaction": "anaphylaxis", "severity": "severe"}]
            record["medications"] = [
                m for m in record["medications"] if FORMULARY[m["code"]]["drug_class"] != "penicillin"
            ]
            record["medications"].append({"code": "308182", "name": FORMULARY["308182"]["name"], "dose": "1 capsule three times daily"})
        issues.setdefault(_patient_id(victim), []).append(kind)
    return EhrDataset(
        patients=tuple(records), issues={k: tuple(v) for k, v in sorted(issues.items())}
    )


# --------------------------------------------------------------------------------------------
# audit log


def token_id(token: str) -> str:
    """The name of a token in the audit log: a short SHA-256 digest, never the token itself."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class AuditSummary:
    """Counts over an audit log; ``duplicate_effects`` must be 0 in a correct run."""

    calls: int = 0
    """Lines in the log (every call, whatever its status)."""

    auth_calls: int = 0
    """Calls to ``POST /auth/token``, granted or not."""

    tokens_issued: int = 0
    """Calls to ``POST /auth/token`` that returned a token."""

    unauthorized: int = 0
    """Calls answered 401 (bad credentials, missing, unknown or expired token)."""

    effects_created: int = 0
    """Side effects created (reconciliation and report records); replays not counted."""

    duplicate_effects: int = 0
    """Effects created for a logical effect that already had one (same workflow and patient, or same workflow's report)."""

    replays: int = 0
    """Side-effect calls answered from the idempotency store without creating anything."""

    injected_failures: int = 0
    """Calls answered 503 by fault injection."""

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict (what ``GET /audit/summary`` returns)."""
        return {
            "calls": self.calls,
            "auth_calls": self.auth_calls,
            "tokens_issued": self.tokens_issued,
            "unauthorized": self.unauthorized,
            "effects_created": self.effects_created,
            "duplicate_effects": self.duplicate_effects,
            "replays": self.replays,
            "injected_failures": self.injected_failures,
        }


def summarize_audit_log(path: str | Path) -> AuditSummary:
    """Count what an audit log file records; a missing file counts as empty.

    A torn last line (the writer died mid-write) is ignored; the server fsyncs every whole line.
    """
    counts = dict.fromkeys(AuditSummary().as_dict(), 0)
    effect_keys: set[str] = set()
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        return AuditSummary()
    with handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            counts["calls"] += 1
            status = entry.get("status")
            if entry.get("method") == "POST" and entry.get("path") == "/auth/token":
                counts["auth_calls"] += 1
                if status == HTTPStatus.OK:
                    counts["tokens_issued"] += 1
            if status == HTTPStatus.UNAUTHORIZED:
                counts["unauthorized"] += 1
            if status == HTTPStatus.SERVICE_UNAVAILABLE and entry.get("error") == "injected_failure":
                counts["injected_failures"] += 1
            if entry.get("replay"):
                counts["replays"] += 1
            elif entry.get("effect_id") and status == HTTPStatus.CREATED:
                counts["effects_created"] += 1
                key = entry.get("effect_key")
                if key in effect_keys:
                    counts["duplicate_effects"] += 1
                effect_keys.add(key)
    return AuditSummary(**counts)


class _AuditLog:
    """Append-only JSONL writer; each line is flushed and fsynced before the call is answered."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8")

    def write(self, entry: Mapping[str, Any]) -> None:
        line = json.dumps(entry, separators=(",", ":"), sort_keys=True) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
            # Tests read the log while the server runs, and a crash must not lose a line.
            os.fsync(self._file.fileno())

    def summary(self) -> AuditSummary:
        with self._lock:
            return summarize_audit_log(self.path)

    def close(self) -> None:
        with self._lock:
            self._file.close()


# --------------------------------------------------------------------------------------------
# server state and request handling


@dataclass
class _Call:
    """What the audit line of one call will say; filled in as the call is handled."""

    method: str
    path: str
    query: str = ""
    status: int = 0
    error: str | None = None
    token_id: str | None = None
    client_id: str | None = None
    idempotency_key: str | None = None
    replay: bool = False
    effect_id: str | None = None
    effect_key: str | None = None
    expires_at: float | None = None
    """Of a token issued by this call (Unix seconds): a later token call after it is a refresh."""


class _Reply(Exception):
    """Control flow: answer the call now with this status and body."""

    def __init__(self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def _error(status: int, code: str, detail: str, **headers: str) -> _Reply:
    body = {"error": code, "detail": detail, "retryable": status in (429, 503)}
    return _Reply(status, body, headers)


@dataclass
class _Token:
    client_id: str
    expires_at_monotonic: float


@dataclass
class _Effect:
    fingerprint: str
    status: int
    body: Mapping[str, Any]


class _EhrState:
    """Everything the server knows; one lock guards it because every operation is tiny."""

    def __init__(self, config: EhrConfig, audit: _AuditLog) -> None:
        self.config = config
        self.audit = audit
        self.dataset = generate_dataset(config.patients, seed=config.seed)
        self._lock = threading.Lock()
        self._fault_rng = random.Random(f"mock-ehr-faults:{config.seed}")
        self._tokens: dict[str, _Token] = {}
        self._token_by_key: dict[str, str] = {}
        self._by_key: dict[str, _Effect] = {}
        self.reconciliations: list[dict[str, Any]] = []
        self.reports: list[dict[str, Any]] = []
        self._effect_seq = 0

    def inject_failure(self) -> bool:
        if self.config.fail_rate <= 0:
            return False
        with self._lock:
            return self._fault_rng.random() < self.config.fail_rate

    def issue_token(self, client_id: str, key: str | None = None) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = _Token(client_id, time.monotonic() + self.config.token_ttl_s)
            if key is not None:
                self._token_by_key[f"{client_id}\0{key}"] = token
        return token

    def token_for_key(self, client_id: str, key: str) -> tuple[str, float] | None:
        """The valid token issued under ``key`` and its remaining lifetime (s), or None."""
        with self._lock:
            token = self._token_by_key.get(f"{client_id}\0{key}")
            found = self._tokens.get(token) if token is not None else None
        if token is None or found is None:
            return None
        left = found.expires_at_monotonic - time.monotonic()
        return (token, left) if left > 0 else None

    def check_token(self, token: str) -> _Token:
        with self._lock:
            found = self._tokens.get(token)
        if found is None:
            raise _error(401, "invalid_token", "the bearer token is not known", **_BEARER_INVALID)
        if time.monotonic() >= found.expires_at_monotonic:
            raise _error(401, "token_expired", "the bearer token has expired", **_BEARER_INVALID)
        return found

    def create_effect(
        self,
        call: _Call,
        *,
        kind: str,
        logical_key: str,
        fingerprint: str,
        make: Any,
    ) -> _Reply:
        """Create an effect once per idempotency key; ``make(effect_id)`` builds the record."""
        with self._lock:
            key = call.idempotency_key
            if key is not None and key in self._by_key:
                stored = self._by_key[key]
                if stored.fingerprint != fingerprint:
                    raise _error(
                        422,
                        "idempotency_key_reused",
                        "this Idempotency-Key was used for a different request",
                    )
                call.replay = True
                call.effect_id = str(stored.body.get("id"))
                call.effect_key = logical_key
                return _Reply(stored.status, stored.body, {"Idempotent-Replayed": "true"})
            self._effect_seq += 1
            effect_id = f"{kind[:3]}-{self._effect_seq:06d}"
            record = make(effect_id)
            (self.reconciliations if kind == "reconciliation" else self.reports).append(record)
            if key is not None:
                self._by_key[key] = _Effect(fingerprint, 201, record)
            call.effect_id = effect_id
            call.effect_key = logical_key
            return _Reply(201, record)

    def list_effects(self, kind: str, workflow_id: str | None) -> list[dict[str, Any]]:
        with self._lock:
            items = self.reconciliations if kind == "reconciliation" else self.reports
            return [r for r in items if workflow_id is None or r["workflow_id"] == workflow_id]


_BEARER_INVALID = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def _require_str(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise _error(400, "bad_request", f"field {name!r} must be a non-empty string")
    return value


def _fingerprint(method: str, path: str, body: Any) -> str:
    text = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _redact_query(query: str) -> str:
    """The query string with any token- or secret-looking value blanked (a client may misplace one)."""
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    sensitive = ("token", "secret", "password", "key")
    return urlencode(
        [(k, "[redacted]" if any(w in k.lower() for w in sensitive) else v) for k, v in pairs]
    )


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Handler(BaseHTTPRequestHandler):
    """Routes one HTTP request; every call ends in exactly one audit line and one response."""

    protocol_version = "HTTP/1.1"
    server_version = "MockEHR/1.0"
    # Headers and body go out in two writes; with Nagle on, delayed ACKs add 40 ms per call.
    disable_nagle_algorithm = True
    state: _EhrState  # set on the subclass made per server

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet: stdout carries only the ready line, and the audit log records every call.
        return

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        call = _Call(method=method, path=url.path, query=_redact_query(url.query))
        key = self.headers.get("Idempotency-Key")
        call.idempotency_key = key.strip() if key and key.strip() else None
        try:
            raw = self._read_body()
            reply = self._route(call, url.path, parse_qs(url.query), raw)
        except _Reply as exc:
            reply = exc
        except Exception as exc:  # the mock must answer, not hang the client
            reply = _error(500, "internal", type(exc).__name__)
        call.status = reply.status
        if reply.status >= 400:
            call.error = str(reply.body.get("error"))
        self._audit(call)
        if call.path == "/auth/token" and reply.status == 200 and self.state.config.token_reply_delay_s > 0:
            time.sleep(self.state.config.token_reply_delay_s)
        self._send(reply)

    def _read_body(self) -> bytes:
        length_text = self.headers.get("Content-Length") or "0"
        try:
            length = int(length_text)
        except ValueError:
            self.close_connection = True
            raise _error(400, "bad_request", "Content-Length is not a number") from None
        if length > _MAX_BODY_BYTES:
            # The unread body would corrupt the next request on this connection.
            self.close_connection = True
            raise _error(413, "too_large", f"body over {_MAX_BODY_BYTES} bytes")
        return self.rfile.read(length) if length > 0 else b""

    def _audit(self, call: _Call) -> None:
        self.state.audit.write(
            {
                "ts": _now_iso(),
                "method": call.method,
                "path": call.path,
                "query": call.query,
                "status": call.status,
                "error": call.error,
                "token_id": call.token_id,
                "client_id": call.client_id,
                "idempotency_key": call.idempotency_key,
                "replay": call.replay,
                "effect_id": call.effect_id,
                "effect_key": call.effect_key,
                "expires_at": call.expires_at,
            }
        )

    def _send(self, reply: _Reply) -> None:
        data = json.dumps(reply.body).encode("utf-8")
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    # routing ---------------------------------------------------------------------------------

    def _route(self, call: _Call, path: str, query: Mapping[str, list[str]], raw: bytes) -> _Reply:
        state = self.state
        parts = [p for p in path.split("/") if p]
        routes: dict[tuple[str, ...], tuple[str, ...]] = {
            ("auth", "token"): ("POST",),
            ("patients",): ("GET",),
            ("formulary",): ("GET",),
            ("reconciliations",): ("GET", "POST"),
            ("reports",): ("GET", "POST"),
            ("audit", "summary"): ("GET",),
        }
        if state.config.token_lookup:
            routes[("auth", "token", "lookup")] = ("POST",)
        shape = tuple(parts)
        if len(parts) == 2 and parts[0] == "patients":
            shape = ("patients", "{id}")
            routes[shape] = ("GET",)
        if shape not in routes:
            raise _error(404, "not_found", f"no endpoint {path}")
        if call.method not in routes[shape]:
            raise _error(405, "method_not_allowed", f"{path} allows {', '.join(routes[shape])}",
                         Allow=", ".join(routes[shape]))

        if state.config.latency_ms > 0:
            time.sleep(state.config.latency_ms / 1000.0)
        if shape != ("audit", "summary") and state.inject_failure():
            raise _error(503, "injected_failure", "temporarily unavailable (injected)", **{"Retry-After": "0"})

        if shape == ("auth", "token"):
            return self._token(call, raw)
        if shape == ("auth", "token", "lookup"):
            return self._token_lookup(call, raw)
        self._authenticate(call)
        body = self._json(raw) if call.method == "POST" else {}
        if shape == ("patients",):
            return self._list_patients(query)
        if shape == ("patients", "{id}"):
            record = state.dataset.record(parts[1])
            if record is None:
                raise _error(404, "not_found", f"no patient {parts[1]!r}")
            return _Reply(200, record)
        if shape == ("formulary",):
            return _Reply(200, {"items": {code: dict(m) for code, m in FORMULARY.items()}})
        if shape == ("audit", "summary"):
            return _Reply(200, state.audit.summary().as_dict())
        kind = "reconciliation" if shape == ("reconciliations",) else "report"
        if call.method == "GET":
            workflows = query.get("workflow_id")
            workflow = workflows[0] if workflows else None
            return _Reply(200, {"items": state.list_effects(kind, workflow)})
        if kind == "reconciliation":
            return self._reconcile(call, body)
        return self._report(call, body)

    def _json(self, raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _error(400, "bad_request", f"body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _error(400, "bad_request", "body must be a JSON object")
        return body

    def _token(self, call: _Call, raw: bytes) -> _Reply:
        config = self.state.config
        is_form = "application/x-www-form-urlencoded" in (self.headers.get("Content-Type") or "")
        # curl -d sends JSON with a form content type: trust the body's shape over the header.
        if is_form and not raw.lstrip().startswith(b"{"):
            form = parse_qs(raw.decode("utf-8", "replace"))
            body: dict[str, Any] = {k: v[0] for k, v in form.items()}
        else:
            body = self._json(raw)
        client_id = body.get("client_id")
        secret = body.get("client_secret")
        call.client_id = client_id if isinstance(client_id, str) else None
        if not isinstance(client_id, str) or not isinstance(secret, str):
            raise _error(400, "bad_request", "client_id and client_secret are required strings")
        grant = body.get("grant_type", "client_credentials")
        if grant != "client_credentials":
            raise _error(400, "unsupported_grant_type", "only client_credentials is supported")
        known = secrets.compare_digest(client_id.encode(), config.client_id.encode())
        if not (known and secrets.compare_digest(secret.encode(), config.client_secret.encode())):
            raise _error(401, "invalid_client", "unknown client or wrong secret")
        token = self.state.issue_token(client_id, call.idempotency_key)
        call.token_id = token_id(token)
        ttl = config.token_ttl_s
        call.expires_at = round(time.time() + ttl, 3)
        return _Reply(
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": int(ttl) if float(ttl).is_integer() else ttl,
                "expires_at": call.expires_at,
            },
        )

    def _token_lookup(self, call: _Call, raw: bytes) -> _Reply:
        config = self.state.config
        body = self._json(raw)
        client_id, secret, key = body.get("client_id"), body.get("client_secret"), body.get("idempotency_key")
        call.client_id = client_id if isinstance(client_id, str) else None
        if not all(isinstance(v, str) for v in (client_id, secret, key)):
            raise _error(400, "bad_request", "client_id, client_secret and idempotency_key are required strings")
        assert isinstance(client_id, str) and isinstance(secret, str) and isinstance(key, str)
        known = secrets.compare_digest(client_id.encode(), config.client_id.encode())
        if not (known and secrets.compare_digest(secret.encode(), config.client_secret.encode())):
            raise _error(401, "invalid_client", "unknown client or wrong secret")
        found = self.state.token_for_key(client_id, key)
        if found is None:
            return _Reply(200, {"found": False})
        token, left = found
        call.token_id = token_id(token)
        return _Reply(200, {"found": True, "access_token": token, "token_type": "Bearer",
                            "expires_in": round(left, 3), "expires_at": round(time.time() + left, 3)})

    def _authenticate(self, call: _Call) -> None:
        header = self.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _error(401, "missing_token", "send Authorization: Bearer <token>",
                         **{"WWW-Authenticate": "Bearer"})
        call.token_id = token_id(token)
        found = self.state.check_token(token)
        call.client_id = found.client_id

    def _list_patients(self, query: Mapping[str, list[str]]) -> _Reply:
        def number(name: str, default: int) -> int:
            text = (query.get(name) or [str(default)])[0]
            try:
                value = int(text)
            except ValueError:
                raise _error(400, "bad_request", f"{name} must be an integer, got {text!r}") from None
            return value

        page = number("page", 1)
        page_size = number("page_size", self.state.config.page_size)
        if page < 1:
            raise _error(400, "bad_request", f"page starts at 1, got {page}")
        if not 1 <= page_size <= _MAX_PAGE_SIZE:
            raise _error(400, "bad_request", f"page_size must be 1..{_MAX_PAGE_SIZE}, got {page_size}")
        total = len(self.state.dataset.patients)
        start = (page - 1) * page_size
        items = [p["id"] for p in self.state.dataset.patients[start : start + page_size]]
        pages = math.ceil(total / page_size)
        return _Reply(
            200,
            {
                "items": items,
                "page": page,
                "page_size": page_size,
                "total": total,
                "next_page": page + 1 if page < pages else None,
            },
        )

    def _reconcile(self, call: _Call, body: dict[str, Any]) -> _Reply:
        workflow_id = _require_str(body, "workflow_id")
        patient_id = _require_str(body, "patient_id")
        findings = body.get("findings", [])
        if not isinstance(findings, list):
            raise _error(400, "bad_request", "field 'findings' must be a list")
        if self.state.dataset.record(patient_id) is None:
            raise _error(404, "not_found", f"no patient {patient_id!r}")

        def make(effect_id: str) -> dict[str, Any]:
            return {
                "id": effect_id,
                "workflow_id": workflow_id,
                "patient_id": patient_id,
                "findings": findings,
                "created_at": _now_iso(),
            }

        return self.state.create_effect(
            call,
            kind="reconciliation",
            logical_key=f"reconciliation:{workflow_id}:{patient_id}",
            fingerprint=_fingerprint("POST", "/reconciliations", body),
            make=make,
        )

    def _report(self, call: _Call, body: dict[str, Any]) -> _Reply:
        workflow_id = _require_str(body, "workflow_id")
        report = body.get("body")
        if not isinstance(report, str | dict | list) or not report:
            raise _error(400, "bad_request", "field 'body' must be a non-empty string or object")

        def make(effect_id: str) -> dict[str, Any]:
            return {"id": effect_id, "workflow_id": workflow_id, "body": report, "created_at": _now_iso()}

        return self.state.create_effect(
            call,
            kind="report",
            logical_key=f"report:{workflow_id}",
            fingerprint=_fingerprint("POST", "/reports", body),
            make=make,
        )


# --------------------------------------------------------------------------------------------
# servers


class MockEhrServer:
    """The mock EHR served from a background thread of this process.

    ``with MockEhrServer(audit_log=path) as srv: httpx.get(srv.base_url + "/patients")``.
    """

    def __init__(
        self,
        *,
        audit_log: str | Path,
        config: EhrConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.config = config or EhrConfig()
        """Behaviour of this server."""
        self.audit_log = Path(audit_log)
        """Path of the JSONL audit log (appended to)."""
        self._host = host
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._state: _EhrState | None = None
        self._serving_here = False

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def dataset(self) -> EhrDataset:
        """The records served, with the planted issues."""
        if self._state is None:
            raise RuntimeError("the server is not started")
        return self._state.dataset

    def bind(self) -> Self:
        """Bind the socket and open the audit log without serving yet; returns self."""
        if self._httpd is not None:
            return self
        audit = _AuditLog(self.audit_log)
        state = _EhrState(self.config, audit)
        # A subclass per server carries its state: BaseHTTPRequestHandler takes no extra arguments.
        handler = type("_BoundHandler", (_Handler,), {"state": state})
        try:
            httpd = ThreadingHTTPServer((self._host, self._port), handler)
        except OSError:
            audit.close()
            raise
        httpd.daemon_threads = True
        self._state, self._httpd = state, httpd
        return self

    def start(self) -> Self:
        """Bind and serve from a daemon thread; returns self."""
        self.bind()
        if self._thread is None:
            assert self._httpd is not None
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL_S},
                name="mock-ehr",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until ``stop`` is called from another thread."""
        self.bind()
        assert self._httpd is not None
        self._serving_here = True
        try:
            self._httpd.serve_forever(poll_interval=_POLL_INTERVAL_S)
        finally:
            self._serving_here = False

    def summary(self) -> AuditSummary:
        """The audit summary, read from the log under the writer's lock."""
        if self._state is None:
            return summarize_audit_log(self.audit_log)
        return self._state.audit.summary()

    def stop(self) -> None:
        """Stop serving and close the audit log; safe to call twice."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            # shutdown() waits for a serve loop to end, so it would hang if none ever ran.
            if self._thread is not None or self._serving_here:
                httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._state is not None:
            self._state.audit.close()
            self._state = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class MockEhrProcess:
    """A mock EHR running as a child process (see ``start_mock_ehr_process``)."""

    def __init__(self, popen: subprocess.Popen[str], base_url: str, audit_log: Path) -> None:
        self.popen = popen
        """The child process."""
        self.base_url = base_url
        """``http://127.0.0.1:port`` it serves on."""
        self.audit_log = audit_log
        """Path of its audit log."""

    @property
    def pid(self) -> int:
        """Process id of the child."""
        return self.popen.pid

    def summary(self) -> AuditSummary:
        """The audit summary computed from its log file."""
        return summarize_audit_log(self.audit_log)

    def stop(self, *, timeout_s: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout_s`` seconds; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=timeout_s)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        return self.popen.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _command_args(config: EhrConfig) -> list[str]:
    return [
        "--token-ttl-s", repr(config.token_ttl_s),
        "--patients", str(config.patients),
        "--page-size", str(config.page_size),
        "--seed", str(config.seed),
        "--fail-rate", repr(config.fail_rate),
        "--latency-ms", repr(config.latency_ms),
        "--client-id", config.client_id,
        "--token-reply-delay-s", repr(config.token_reply_delay_s),
        *([] if config.token_lookup else ["--no-token-lookup"]),
    ]  # fmt: skip


def start_mock_ehr_process(
    audit_log: str | Path,
    *,
    config: EhrConfig | None = None,
    port: int = 0,
    ready_timeout_s: float = 15.0,
    env: Mapping[str, str] | None = None,
    stderr_path: Path | None = None,
) -> MockEhrProcess:
    """Start ``python -m agents.mock_ehr`` and wait for its ready line.

    ``port=0`` lets the OS pick a free port; the ready line tells which. ``stderr_path`` takes the
    child's stderr (default: inherited). The client secret goes
    through the environment, never the command line. Raises ``ServiceStartError`` (with the
    child's exit code) when it exits or stays silent for ``ready_timeout_s`` seconds.
    """
    config = config or EhrConfig()
    audit_path = Path(audit_log)
    child_env = dict(os.environ if env is None else env)
    child_env[CLIENT_SECRET_ENV] = config.client_secret
    child_env["PYTHONUNBUFFERED"] = "1"
    command = [
        sys.executable, "-m", "agents.mock_ehr",
        "--port", str(port), "--audit-log", str(audit_path), *_command_args(config),
    ]  # fmt: skip
    # Its stderr (a client that hung up mid-call prints a traceback) goes to a file when asked.
    if stderr_path is not None:
        Path(stderr_path).parent.mkdir(parents=True, exist_ok=True)
    stderr = open(stderr_path, "ab") if stderr_path is not None else None
    try:
        popen = subprocess.Popen(
            command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, stderr=stderr, text=True, env=child_env
        )
    finally:
        if stderr is not None:
            stderr.close()
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.append(popen.stdout.readline() if popen.stdout else ""), daemon=True
    )
    reader.start()
    reader.join(timeout=ready_timeout_s)
    line = lines[0].strip() if lines else ""
    if not line.startswith(_READY_PREFIX):
        popen.kill()
        code = popen.wait(timeout=5)
        why = f"exited with {code}" if lines else f"not ready after {ready_timeout_s} s"
        raise ServiceStartError(f"mock EHR {why}; first line: {line!r}")
    return MockEhrProcess(popen, line[len(_READY_PREFIX) :], audit_path)


# --------------------------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    defaults = EhrConfig()
    parser = argparse.ArgumentParser(
        prog="python -m agents.mock_ehr",
        description=f"Mock EHR API. The client secret is read from ${CLIENT_SECRET_ENV}.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    parser.add_argument("--audit-log", required=True, type=Path, help="JSONL audit log to append to")
    parser.add_argument("--token-ttl-s", type=float, default=defaults.token_ttl_s)
    parser.add_argument("--patients", type=int, default=defaults.patients)
    parser.add_argument("--page-size", type=int, default=defaults.page_size)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--fail-rate", type=float, default=defaults.fail_rate)
    parser.add_argument("--latency-ms", type=float, default=defaults.latency_ms)
    parser.add_argument("--client-id", default=defaults.client_id)
    parser.add_argument("--token-reply-delay-s", type=float, default=defaults.token_reply_delay_s)
    parser.add_argument("--no-token-lookup", dest="token_lookup", action="store_false",
                        help="serve no POST /auth/token/lookup")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM or SIGINT; prints one ``ready on URL`` line when listening."""
    args = _parser().parse_args(argv)
    try:
        config = EhrConfig(
            token_ttl_s=args.token_ttl_s,
            patients=args.patients,
            page_size=args.page_size,
            seed=args.seed,
            fail_rate=args.fail_rate,
            latency_ms=args.latency_ms,
            client_id=args.client_id,
            token_lookup=args.token_lookup,
            token_reply_delay_s=args.token_reply_delay_s,
            client_secret=os.environ.get(CLIENT_SECRET_ENV) or DEFAULT_CLIENT_SECRET,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = MockEhrServer(audit_log=args.audit_log, config=config, host=args.host, port=args.port)
    try:
        server.bind()
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1

    def on_signal(signum: int, frame: object) -> None:
        # shutdown() waits for the serve loop, which runs in this very thread: ask from another.
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"{_READY_PREFIX}{server.base_url}", flush=True)
    server.serve_forever()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
