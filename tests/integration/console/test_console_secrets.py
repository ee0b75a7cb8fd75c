"""No secret reaches any HTTP response of the console, after a real run with planted secrets.

Run A's mission and tasks carry planted credential shapes, the agents hold the EHR's client
secret, the identity step discovers an access token (a secret variable, gossiped, checkpointed):
every page, asset, API answer (each run, each step, the mesh, KPIs, escalations, the OpenAPI
document) and the first events of the stream are fetched and searched for each of them, and for
the console's own bearer token and the mesh's data key.
"""

from __future__ import annotations

import json
import os

import httpx
import pytest

from mesh.runtime import secret_key
from mesh.security import DATA_KEY_ENV, data_cipher
from tests.integration.console.scenario import CONSOLE_TOKEN, NEEDLES, Scenario

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _responses(sc: Scenario) -> dict[str, bytes]:
    got: dict[str, bytes] = {}
    with httpx.Client(base_url=sc.url, timeout=30) as http:

        def fetch(path: str) -> httpx.Response:
            r = http.get(path)
            got[path] = r.content
            got[f"{path} (headers)"] = repr(sorted(r.headers.items())).encode()
            return r

        for path in (
            "/",
            "/runs",
            "/mesh",
            "/dashboard",
            "/escalations",
            "/static/console.js",
            "/static/console.css",
            "/api/openapi.json",
            "/api/health",
            "/api/kpis",
            "/api/escalations",
            "/api/mesh",
            "/api/runs",
            "/api/runs?status=succeeded",
            "/api/runs?q=patient",
        ):
            assert fetch(path).status_code == 200, path
        for wf in (sc.run_a, sc.run_b):
            run = fetch(f"/api/runs/{wf}").json()
            fetch(f"/runs/{wf}")
            fetch(f"/api/mesh?workflow_id={wf}")
            for step in run["steps"]:
                assert fetch(f"/api/runs/{wf}/steps/{step['id']}").status_code == 200
        with http.stream("GET", "/api/stream") as events:
            first = b""
            for chunk in events.iter_bytes():
                first += chunk
                if b"event: changed" in first:
                    break
            got["/api/stream"] = first
    return got


def test_no_secret_reaches_any_http_response(scenario: Scenario) -> None:
    sc = scenario
    token = sc.run(_opened_token(sc))
    needles = {
        **NEEDLES,
        "access token (secret variable)": token,
        "console bearer token": CONSOLE_TOKEN,
        "data key": os.environ[DATA_KEY_ENV],
    }
    responses = _responses(sc)
    assert len(responses) >= 50
    # The secrets are where a leak would come from: the step pages show the token's variable (masked),
    # the scratchpads quote the mission (redacted).
    step = json.loads(responses[f"/api/runs/{sc.run_a}/steps/fetch"])
    assert any(v["name"] == "auth_token" and v["secret"] for v in step["variables"])
    assert "Vault dump" in step["scratchpad"] and "[REDACTED]" in step["scratchpad"]
    hits = [
        f"{what} in {path}"
        for path, body in responses.items()
        for what, needle in needles.items()
        if needle.encode() in body or json.dumps(needle)[1:-1].encode() in body
    ]
    assert hits == []


async def _opened_token(sc: Scenario) -> str:
    sealed = (await sc.cluster.store.read(secret_key(sc.run_a, "auth_token"))).data
    return str(data_cipher().open(sealed, context=("secret", sc.run_a, "auth_token")))
