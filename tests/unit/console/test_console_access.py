"""Who may use the console: loopback only by default, the bearer token for remote clients and every write.

The access middleware is exercised through the real app over ASGI with the client address set, so
no network is needed; the routes it lets through answer without Redis (health) or are refused first.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from mesh.console import ConsoleData, ConsoleSettings, DecisionRequest, create_app
from mesh.settings import MeshSettings

TOKEN = "tok-" + "0123456789abcdef0123"


def _app(
    settings: ConsoleSettings, decided: list[tuple[str, str, DecisionRequest, str]] | None = None
):  # type: ignore[no-untyped-def]
    data = ConsoleData(
        MeshSettings(redis_url="redis://127.0.0.1:1/0", kafka_bootstrap="127.0.0.1:1"),
        scratchpad_dir=Path("/nonexistent"),
    )

    async def decide(wf: str, step: str, req: DecisionRequest, operator: str) -> str:
        assert decided is not None
        decided.append((wf, step, req, operator))
        return "event-1"

    return create_app(
        data, settings, decide=decide if decided is not None else None, manage_data=False
    )


def _client(
    app, host: str, *, token: str = "", http_host: str = "127.0.0.1:8470"
) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    headers = {"Host": http_host}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(host, 40000)),
        base_url="http://console",
        headers=headers,
    )


async def test_loopback_reads_without_a_token_and_other_machines_are_refused() -> None:
    app = _app(ConsoleSettings(token=TOKEN))
    async with _client(app, "127.0.0.1") as local:
        r = await local.get("/api/health")
        assert r.status_code == 200 and r.json()["redis"] is False
        assert (
            r.headers["x-frame-options"] == "DENY"
            and "default-src 'self'" in r.headers["content-security-policy"]
        )
    async with _client(app, "10.1.2.3", token=TOKEN) as remote:
        r = await remote.get("/api/health")
        assert r.status_code == 403 and "this machine only" in r.json()["detail"]
    async with _client(app, "::1") as local6:
        assert (await local6.get("/api/health")).status_code == 200


async def test_remote_clients_need_the_token_when_remote_access_is_allowed(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text(TOKEN + "\n")
    app = _app(ConsoleSettings(allow_remote=True, token_file=str(secret_file)))
    async with _client(app, "10.1.2.3", http_host="console.example") as anonymous:
        r = await anonymous.get("/api/health")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert (await anonymous.get("/healthz")).text == "ok"  # probes only learn that it is up
    async with _client(app, "10.1.2.3", token="wrong-token", http_host="console.example") as wrong:
        assert (await wrong.get("/api/health")).status_code == 401
    async with _client(app, "10.1.2.3", token=TOKEN, http_host="console.example") as good:
        assert (await good.get("/api/health")).status_code == 200
    # a rotated Secret applies without a restart
    secret_file.write_text("rotated-" + TOKEN)
    async with _client(app, "10.1.2.3", token=TOKEN, http_host="console.example") as stale:
        assert (await stale.get("/api/health")).status_code == 401


async def test_a_foreign_host_name_on_loopback_is_refused() -> None:
    # DNS rebinding: a page of evil.example resolving to 127.0.0.1 must not read the API.
    async with _client(_app(ConsoleSettings()), "127.0.0.1", http_host="evil.example:8470") as c:
        r = await c.get("/api/health")
        assert r.status_code == 403 and "loopback" in r.json()["detail"]


@pytest.mark.parametrize("configured", ["", TOKEN])
async def test_writes_need_the_token_even_from_loopback(configured: str) -> None:
    decided: list[tuple[str, str, DecisionRequest, str]] = []
    app = _app(ConsoleSettings(token=configured, operator="ops-on-call"), decided)
    body = {"nonce": "n1", "decision": "resume", "note": "looked at it"}
    async with _client(app, "127.0.0.1") as anonymous:
        r = await anonymous.post("/api/runs/wf-1/steps/fetch/decision", json=body)
        assert r.status_code in (401, 403)
        assert ("disabled" in r.json()["detail"]) == (not configured)
    async with _client(app, "127.0.0.1", token="nope") as wrong:
        assert (await wrong.post("/api/runs/wf-1/steps/fetch/decision", json=body)).status_code in (
            401,
            403,
        )
    assert decided == []
    if configured:
        async with _client(app, "127.0.0.1", token=TOKEN) as operator:
            r = await operator.post("/api/runs/wf-1/steps/fetch/decision", json=body)
            assert r.status_code == 200, r.text
            assert r.json() == {"nonce": "n1", "decision": "resume", "operator": "ops-on-call"}
            # a decision names the pause it decides
            r = await operator.post(
                "/api/runs/wf-1/steps/fetch/decision", json={"decision": "resume"}
            )
            assert r.status_code == 422
        ((wf, step, req, who),) = decided
        assert (wf, step, req.nonce, req.decision, req.note, who) == (
            "wf-1",
            "fetch",
            "n1",
            "resume",
            "looked at it",
            "ops-on-call",
        )


async def test_the_openapi_document_describes_the_read_api() -> None:
    async with _client(_app(ConsoleSettings()), "127.0.0.1") as c:
        doc = (await c.get("/api/openapi.json")).json()
    paths = set(doc["paths"])
    assert {
        "/api/runs",
        "/api/runs/{workflow_id}",
        "/api/runs/{workflow_id}/steps/{step_id}",
        "/api/mesh",
        "/api/kpis",
        "/api/escalations",
        "/api/runs/{workflow_id}/steps/{step_id}/decision",
    } <= paths
    assert set(doc["paths"]["/api/runs/{workflow_id}/steps/{step_id}/decision"]) == {"post"}
    assert all(
        set(methods) == {"get"}
        for p, methods in doc["paths"].items()
        if not p.endswith("/decision")
    )
