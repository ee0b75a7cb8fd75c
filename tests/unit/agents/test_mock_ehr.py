"""The mock EHR API: auth, 401s, pagination, records, idempotency, audit log, faults, process."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agents.mock_ehr import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    FORMULARY,
    PLANTED_ISSUES,
    EhrConfig,
    MockEhrServer,
    generate_dataset,
    main,
    start_mock_ehr_process,
    summarize_audit_log,
    token_id,
)
from mesh.errors import ConfigError

CREDENTIALS = {"client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET}


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "ehr.jsonl"


@pytest.fixture
def server(audit_path: Path) -> Iterator[MockEhrServer]:
    with MockEhrServer(audit_log=audit_path, config=EhrConfig(patients=20, seed=7)) as srv:
        yield srv


@pytest.fixture
def client(server: MockEhrServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=5.0) as http:
        yield http


def get_token(http: httpx.Client) -> str:
    response = http.post("/auth/token", json=CREDENTIALS)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def audit_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# auth -------------------------------------------------------------------------------------------


def test_token_grant_returns_a_bearer_token_that_opens_the_api(client: httpx.Client) -> None:
    response = client.post("/auth/token", json=CREDENTIALS)
    body = response.json()
    assert response.status_code == 200
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["expires_at"] > time.time() + 290
    assert len(body["access_token"]) >= 32
    listed = client.get("/patients", headers=bearer(body["access_token"]))
    assert listed.status_code == 200


def test_token_grant_accepts_form_encoding(client: httpx.Client) -> None:
    response = client.post("/auth/token", data={**CREDENTIALS, "grant_type": "client_credentials"})
    assert response.status_code == 200
    assert response.json()["token_type"] == "Bearer"


def test_wrong_secret_is_refused_with_401(client: httpx.Client) -> None:
    response = client.post("/auth/token", json={**CREDENTIALS, "client_secret": "guess"})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_missing_credentials_are_a_bad_request(client: httpx.Client) -> None:
    response = client.post("/auth/token", json={"client_id": DEFAULT_CLIENT_ID})
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, "missing_token"),
        ({"Authorization": "Basic abc"}, "missing_token"),
        ({"Authorization": "Bearer not-a-token"}, "invalid_token"),
    ],
)
def test_calls_without_a_valid_token_get_401(
    client: httpx.Client, headers: dict[str, str], error: str
) -> None:
    for method, path in [("GET", "/patients"), ("GET", "/patients/P0001"), ("POST", "/reports")]:
        response = client.request(method, path, headers=headers, json={"workflow_id": "w", "body": "x"})
        assert response.status_code == 401, (method, path)
        assert response.json()["error"] == error
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_expired_token_gets_401_token_expired(audit_path: Path) -> None:
    with (
        MockEhrServer(audit_log=audit_path, config=EhrConfig(token_ttl_s=0.2)) as srv,
        httpx.Client(base_url=srv.base_url) as http,
    ):
        token = get_token(http)
        assert http.get("/patients", headers=bearer(token)).status_code == 200
        time.sleep(0.3)
        response = http.get("/patients", headers=bearer(token))
        assert response.status_code == 401
        assert response.json()["error"] == "token_expired"
        fresh = get_token(http)
        assert http.get("/patients", headers=bearer(fresh)).status_code == 200
    assert summarize_audit_log(audit_path).unauthorized == 1


# patients ---------------------------------------------------------------------------------------


def test_pagination_walks_every_patient_once(client: httpx.Client) -> None:
    headers = bearer(get_token(client))
    seen: list[str] = []
    page: int | None = 1
    pages = 0
    while page is not None:
        body = client.get("/patients", params={"page": page, "page_size": 5}, headers=headers).json()
        assert body["total"] == 20
        assert len(body["items"]) == 5
        seen.extend(body["items"])
        page = body["next_page"]
        pages += 1
    assert pages == 4
    assert seen == [f"P{i:04d}" for i in range(1, 21)]
    beyond = client.get("/patients", params={"page": 5, "page_size": 5}, headers=headers).json()
    assert beyond["items"] == []
    assert beyond["next_page"] is None


def test_default_page_size_and_bad_pages(client: httpx.Client) -> None:
    headers = bearer(get_token(client))
    assert len(client.get("/patients", headers=headers).json()["items"]) == 10
    for params in ({"page": 0}, {"page": "x"}, {"page_size": 0}, {"page_size": 101}):
        assert client.get("/patients", params=params, headers=headers).status_code == 400


def test_patient_record_is_the_dataset_record(server: MockEhrServer, client: httpx.Client) -> None:
    headers = bearer(get_token(client))
    record = client.get("/patients/P0003", headers=headers).json()
    assert record == server.dataset.record("P0003")
    assert {"id", "mrn", "name", "sex", "medications", "allergies"} <= set(record)
    assert client.get("/patients/P0021", headers=headers).status_code == 404
    assert client.get("/patients/nobody", headers=headers).status_code == 404


def test_formulary_lists_the_known_codes(client: httpx.Client) -> None:
    body = client.get("/formulary", headers=bearer(get_token(client))).json()
    assert set(body["items"]) == set(FORMULARY)


def test_dataset_is_deterministic_per_seed() -> None:
    assert generate_dataset(20, seed=1) == generate_dataset(20, seed=1)
    assert generate_dataset(20, seed=1).patients != generate_dataset(20, seed=2).patients


@pytest.mark.parametrize("seed", [1, 7, 1234])
def test_planted_issues_are_real_and_other_records_are_clean(seed: int) -> None:
    dataset = generate_dataset(20, seed=seed)
    kinds = sorted(k for ks in dataset.issues.values() for k in ks)
    assert kinds == sorted([*PLANTED_ISSUES, "duplicate_mrn"])  # a duplicate MRN has two holders
    mrn_count: dict[str, int] = {}
    for record in dataset.patients:
        mrn_count[record["mrn"]] = mrn_count.get(record["mrn"], 0) + 1
    for record in dataset.patients:
        found: set[str] = set()
        if "dob" not in record:
            found.add("missing_dob")
        if mrn_count[record["mrn"]] > 1:
            found.add("duplicate_mrn")
        codes = [m["code"] for m in record["medications"]]
        if any(code not in FORMULARY for code in codes):
            found.add("unknown_medication_code")
        allergic = {a["substance"] for a in record["allergies"]}
        classes = {FORMULARY[c]["drug_class"] for c in codes if c in FORMULARY}
        if "penicillin" in allergic and "penicillin" in classes:
            found.add("allergy_conflict")
        assert found == set(dataset.issues.get(record["id"], ())), record["id"]


def test_small_datasets_plant_what_fits() -> None:
    assert generate_dataset(0, seed=1).issues == {}
    assert [k for ks in generate_dataset(1, seed=1).issues.values() for k in ks] == ["missing_dob"]


# side effects and idempotency -------------------------------------------------------------------


def test_same_idempotency_key_returns_the_original_and_creates_nothing(
    client: httpx.Client, audit_path: Path
) -> None:
    headers = {**bearer(get_token(client)), "Idempotency-Key": "wf-1:validate:P0002"}
    payload = {"workflow_id": "wf-1", "patient_id": "P0002", "findings": [{"kind": "missing_dob"}]}
    first = client.post("/reconciliations", json=payload, headers=headers)
    second = client.post("/reconciliations", json=payload, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    listed = client.get("/reconciliations", params={"workflow_id": "wf-1"}, headers=headers).json()
    assert [r["id"] for r in listed["items"]] == [first.json()["id"]]

    posts = [e for e in audit_lines(audit_path) if e["path"] == "/reconciliations" and e["method"] == "POST"]
    assert [e["replay"] for e in posts] == [False, True]
    assert {e["effect_id"] for e in posts} == {first.json()["id"]}
    assert {e["idempotency_key"] for e in posts} == {"wf-1:validate:P0002"}
    summary = summarize_audit_log(audit_path)
    assert (summary.effects_created, summary.replays, summary.duplicate_effects) == (1, 1, 0)


def test_reused_key_with_a_different_request_is_refused(client: httpx.Client) -> None:
    headers = {**bearer(get_token(client)), "Idempotency-Key": "k"}
    assert client.post("/reports", json={"workflow_id": "w", "body": "a"}, headers=headers).status_code == 201
    refused = client.post("/reports", json={"workflow_id": "w", "body": "b"}, headers=headers)
    assert refused.status_code == 422
    assert refused.json()["error"] == "idempotency_key_reused"
    assert len(client.get("/reports", headers=headers).json()["items"]) == 1


def test_same_logical_effect_under_two_keys_counts_as_a_duplicate(
    server: MockEhrServer, client: httpx.Client, audit_path: Path
) -> None:
    token = get_token(client)
    payload = {"workflow_id": "wf-2", "patient_id": "P0005", "findings": []}
    for key in ("attempt-1", "attempt-2"):
        response = client.post(
            "/reconciliations", json=payload, headers={**bearer(token), "Idempotency-Key": key}
        )
        assert response.status_code == 201
    # Another patient and the workflow's report are distinct logical effects.
    client.post("/reconciliations", json={**payload, "patient_id": "P0006"}, headers=bearer(token))
    client.post("/reports", json={"workflow_id": "wf-2", "body": "done"}, headers=bearer(token))
    client.post("/reports", json={"workflow_id": "wf-2", "body": "again"}, headers=bearer(token))

    from_file = summarize_audit_log(audit_path)
    assert from_file.effects_created == 5
    assert from_file.duplicate_effects == 2
    served = client.get("/audit/summary", headers=bearer(token)).json()
    # The summary call itself is logged after the counts are taken.
    assert served == from_file.as_dict()
    assert server.summary().calls == from_file.calls + 1


def test_side_effect_bodies_are_validated(client: httpx.Client) -> None:
    headers = bearer(get_token(client))
    bad = [
        ("/reconciliations", {"patient_id": "P0001"}, 400),
        ("/reconciliations", {"workflow_id": "w", "patient_id": "P9999"}, 404),
        ("/reconciliations", {"workflow_id": "w", "patient_id": "P0001", "findings": "x"}, 400),
        ("/reports", {"workflow_id": "w"}, 400),
    ]
    for path, payload, status in bad:
        assert client.post(path, json=payload, headers=headers).status_code == status, payload
    assert client.post("/reports", content=b"{not json", headers=headers).status_code == 400
    assert client.get("/reconciliations", headers=headers).json()["items"] == []


def test_unknown_routes_and_methods(client: httpx.Client) -> None:
    assert client.get("/nope").status_code == 404
    response = client.get("/auth/token")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


# audit log --------------------------------------------------------------------------------------


def test_audit_log_names_tokens_by_hash_and_never_holds_secrets(
    audit_path: Path, tmp_path: Path
) -> None:
    secret = "s3cr3t-value-that-must-not-leak"
    config = EhrConfig(client_secret=secret)
    assert secret not in repr(config)
    with MockEhrServer(audit_log=audit_path, config=config) as srv, httpx.Client(base_url=srv.base_url) as http:
        token = http.post("/auth/token", json={**CREDENTIALS, "client_secret": secret}).json()["access_token"]
        http.post("/auth/token", json={**CREDENTIALS, "client_secret": secret + "-wrong"})
        http.get("/patients", headers=bearer(token))
        http.get("/patients", params={"access_token": token}, headers=bearer(token))
        http.post("/reports", json={"workflow_id": "w", "body": "b"}, headers=bearer(token))
    text = audit_path.read_text(encoding="utf-8")
    assert secret not in text
    assert token not in text
    entries = audit_lines(audit_path)
    assert len(entries) == 5
    assert entries[0]["token_id"] == token_id(token)
    assert entries[0]["client_id"] == DEFAULT_CLIENT_ID
    assert entries[1]["status"] == 401
    assert entries[3]["query"] == "access_token=%5Bredacted%5D"
    expected = {
        "ts", "method", "path", "query", "status", "error", "token_id", "client_id",
        "idempotency_key", "replay", "effect_id", "effect_key", "expires_at",
    }  # fmt: skip
    assert all(set(e) == expected for e in entries)
    # A granted token's line says when it expires (the chaos checker tells refreshes from spares).
    assert entries[0]["expires_at"] is not None and entries[1]["expires_at"] is None


def test_summary_counts_auth_calls_and_unauthorized(client: httpx.Client, audit_path: Path) -> None:
    get_token(client)
    token = get_token(client)
    client.post("/auth/token", json={**CREDENTIALS, "client_secret": "no"})
    client.get("/patients")
    client.get("/patients", headers=bearer(token))
    summary = summarize_audit_log(audit_path)
    assert (summary.calls, summary.auth_calls, summary.tokens_issued, summary.unauthorized) == (5, 3, 2, 2)


def test_summary_ignores_a_torn_last_line_and_a_missing_file(tmp_path: Path) -> None:
    assert summarize_audit_log(tmp_path / "absent.jsonl").calls == 0
    path = tmp_path / "torn.jsonl"
    line = {"method": "POST", "path": "/auth/token", "status": 200}
    path.write_text(json.dumps(line) + "\n" + '{"method": "PO', encoding="utf-8")
    assert summarize_audit_log(path).auth_calls == 1
    assert summarize_audit_log(path).calls == 1


# faults -----------------------------------------------------------------------------------------


def test_injected_failures_are_retryable_503s_that_do_nothing(audit_path: Path) -> None:
    with (
        MockEhrServer(audit_log=audit_path, config=EhrConfig(fail_rate=1.0)) as srv,
        httpx.Client(base_url=srv.base_url) as http,
    ):
        response = http.post("/auth/token", json=CREDENTIALS)
        assert response.status_code == 503
        assert response.json() == {
            "error": "injected_failure",
            "detail": "temporarily unavailable (injected)",
            "retryable": True,
        }
        assert response.headers["Retry-After"] == "0"
    summary = summarize_audit_log(audit_path)
    assert (summary.injected_failures, summary.tokens_issued) == (1, 0)


def test_fail_rate_is_seeded(tmp_path: Path) -> None:
    def pattern(seed: int, run: int) -> list[int]:
        config = EhrConfig(fail_rate=0.3, seed=seed)
        with (
            MockEhrServer(audit_log=tmp_path / f"{seed}-{run}.jsonl", config=config) as srv,
            httpx.Client(base_url=srv.base_url) as http,
        ):
            return [http.post("/auth/token", json=CREDENTIALS).status_code for _ in range(30)]

    first = pattern(3, 0)
    assert first == pattern(3, 1)
    assert 0 < first.count(503) < 30
    assert set(first) == {200, 503}


def test_latency_is_added(audit_path: Path) -> None:
    with (
        MockEhrServer(audit_log=audit_path, config=EhrConfig(latency_ms=80)) as srv,
        httpx.Client(base_url=srv.base_url) as http,
    ):
        started = time.monotonic()
        http.post("/auth/token", json=CREDENTIALS)
        assert time.monotonic() - started >= 0.08


# configuration, command line, process -----------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{"token_ttl_s": 0}, {"fail_rate": 1.5}, {"page_size": 0}, {"patients": -1}, {"client_secret": ""}],
)
def test_bad_config_is_a_config_error(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        EhrConfig(**options)  # type: ignore[arg-type]


def test_command_line_rejects_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--audit-log", str(tmp_path / "a.jsonl"), "--fail-rate", "2"]) == 2
    assert "fail_rate" in capsys.readouterr().err


def test_process_helper_starts_serves_and_stops(tmp_path: Path) -> None:
    audit = tmp_path / "proc.jsonl"
    secret = "process-secret-not-on-the-command-line"
    config = EhrConfig(client_secret=secret, token_ttl_s=60, patients=7, page_size=3)
    process = start_mock_ehr_process(audit, config=config)
    try:
        assert process.base_url.startswith("http://127.0.0.1:")
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        assert secret.encode() not in cmdline
        with httpx.Client(base_url=process.base_url) as http:
            grant = http.post("/auth/token", json={**CREDENTIALS, "client_secret": secret}).json()
            assert grant["expires_in"] == 60
            listed = http.get("/patients", headers=bearer(grant["access_token"])).json()
            assert (listed["total"], listed["page_size"]) == (7, 3)
        assert process.summary().tokens_issued == 1
    finally:
        code = process.stop()
    assert code == 0  # SIGTERM is a clean shutdown
    assert process.popen.poll() == 0
    assert secret not in audit.read_text(encoding="utf-8")
    assert grant["access_token"] not in audit.read_text(encoding="utf-8")
