"""A workflow that outlives its access token: the steps that use it get a fresh one and finish.

The mock EHR issues 3-second tokens and every agent waits 1.5 s between turns, so fetch (4 pages),
validate (4 patients) and report run long after identity's token expired. Before the runtime
refreshed expired secrets, fetch got ``401 token_expired`` on every turn, spun and paused for good.
Now a step whose ``auth_token`` expired (or is refused as expired) gets a fresh one through the
role's declared refresh path (the token call again, at most once, with a lookup), shares it in the
workflow's secret key and records it; every token issued after the first follows an expiry.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest

from agents.mock_ehr import EhrConfig, summarize_audit_log
from agents.specs import reconciliation_spec
from mesh.chaos._checker import check
from mesh.chaos._collect import read_audit_log
from mesh.chaos._history import History
from tests.chaos.cluster import Cluster

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(300)]

TTL_S = 3.0


@pytest.fixture
async def cluster(tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> AsyncIterator[Cluster]:
    c = Cluster(
        tmp_path,
        kafka_bootstrap,
        redis_url,
        patients=4,
        turn_delay_s=1.5,
        ehr=EhrConfig(patients=4, token_ttl_s=TTL_S),
    )
    yield c
    await c.aclose()


def _audit(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_workflow_outliving_its_token_refreshes_it_and_completes(
    cluster: Cluster, tmp_path: Path
) -> None:
    await cluster.start(
        [
            ("identity", "identity-a"),
            ("fetch", "fetch-a"),
            ("validate", "validate-a"),
            ("report", "report-a"),
        ]
    )
    wf = await cluster.submit(reconciliation_spec(patients=4, page_size=1))
    await cluster.wait_until(
        lambda: cluster.views[wf].finished is not None, timeout_s=240, what="the workflow to finish"
    )
    view = cluster.views[wf]
    assert view.finished is not None and view.finished.status == "succeeded", cluster.describe()

    audit_path = Path(cluster.ehr.audit_log)
    lines = _audit(audit_path)
    grants = [e for e in lines if e.get("path") == "/auth/token" and e.get("status") == 200]
    assert len(grants) >= 2, (
        f"the workflow outlived its token but no step refreshed it: {summarize_audit_log(audit_path)}"
    )
    # Every token after the first was asked for once the one before had expired (no spare calls).
    for before, after in itertools.pairwise(grants):
        asked_at = datetime.fromisoformat(str(after["ts"]).replace("Z", "+00:00")).timestamp()
        assert asked_at >= float(before["expires_at"]) - 0.5, (before, after)  # type: ignore[arg-type]
    # The refresh calls are keyed to the step that made them, never to identity's turn.
    assert all(str(e["idempotency_key"]).startswith(f"{wf}:") for e in grants), grants
    assert {str(e["idempotency_key"]).split(":")[1] for e in grants[1:]} <= {
        "fetch",
        "validate",
        "report",
    }

    # The campaign's checker agrees: refreshed tokens are justified, not extra_auth.
    history = History()
    history.record("log", "workflow.submitted", workflow_id=wf, steps=[])
    read_audit_log(history, audit_path)
    result = check(history)
    kinds = {a.kind for a in result.anomalies}
    assert "extra_auth" not in kinds, [a for a in result.anomalies if a.kind == "extra_auth"]
    assert result.figures.tokens_refreshed == len(grants) - 1, result.figures

    # No token reaches an agent's log in plaintext (the audit names tokens only by a hash; the
    # agents log that a refresh happened, never the value).
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*.log"))  # noqa: ASYNC240
    assert "refreshed by authenticate" in logs or "adopted the value another step refreshed" in logs
    assert "Bearer " not in logs
