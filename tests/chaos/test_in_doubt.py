"""In-doubt effects: the identity agent SIGKILLed after the token was issued and before it heard back.

The mock EHR issues (and audits) the token, then holds the reply for a few seconds; the test
SIGKILLs the identity owner inside that window, so the effect happened and no checkpoint says so.
The step recorded the call as in doubt before sending it; the successor settles it: with the token
endpoint's lookup it finds the token by its idempotency key and does not authenticate again;
without a lookup it authenticates again and reports it (``EffectInDoubt``, resolution "repeated").
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from agents.mock_ehr import EhrConfig, summarize_audit_log
from agents.specs import reconciliation_spec
from tests.chaos.cluster import Cluster

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(300)]


def _tokens_issued(audit: Path) -> int:
    if not audit.exists():
        return 0
    lines = [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]
    return sum(1 for e in lines if e.get("path") == "/auth/token" and e.get("status") == 200)


@pytest.fixture
async def make_cluster(tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> AsyncIterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(**ehr: object) -> Cluster:
        c = Cluster(tmp_path, kafka_bootstrap, redis_url, patients=2, turn_delay_s=0.0,
                    ehr=EhrConfig(patients=2, token_reply_delay_s=4.0, **ehr))  # type: ignore[arg-type]
        made.append(c)
        return c

    yield make
    for c in made:
        await c.aclose()


async def _kill_identity_after_the_token(cluster: Cluster) -> str:
    await cluster.start([("identity", "identity-a"), ("identity", "identity-b"), ("fetch", "fetch-a"),
                         ("validate", "validate-a"), ("report", "report-a")])
    wf = await cluster.submit(reconciliation_spec(patients=2, page_size=2))
    audit = Path(cluster.ehr.audit_log)
    await cluster.wait_until(lambda: _tokens_issued(audit) >= 1, timeout_s=120, what="the token to be issued")
    await cluster.wait_until(lambda: cluster.owner(wf, "identity") != "", timeout_s=2, what="the owner's StepStarted")
    victim = cluster.owner(wf, "identity")
    assert victim in ("identity-a", "identity-b"), victim
    cluster.agents.kill(victim)  # SIGKILL: the token exists, its reply is still held by the EHR
    await cluster.wait_until(lambda: cluster.views[wf].finished is not None, timeout_s=180,
                             what="the workflow to finish")
    assert cluster.owner(wf, "identity") not in ("", victim), "no successor took the identity step over"
    return wf


async def test_in_doubt_token_call_is_reconciled_by_lookup_not_repeated(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster()
    wf = await _kill_identity_after_the_token(cluster)
    view = cluster.views[wf]
    assert view.finished is not None and view.finished.status == "succeeded", cluster.describe()
    audit = summarize_audit_log(cluster.ehr.audit_log)
    assert audit.auth_calls == 1, f"the successor authenticated again: {audit}"
    assert audit.unauthorized == 0, audit
    assert [e.resolution for e in view.in_doubt.get("identity", [])] == ["reconciled"], view.in_doubt
    assert view.effects_in_doubt() == {"reconciled": 1}


async def test_in_doubt_token_call_without_lookup_is_reported_when_repeated(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(token_lookup=False)
    wf = await _kill_identity_after_the_token(cluster)
    view = cluster.views[wf]
    assert view.finished is not None and view.finished.status == "succeeded", cluster.describe()
    audit = summarize_audit_log(cluster.ehr.audit_log)
    assert audit.auth_calls == 2, audit  # repeated: the server has no way to say it was done
    events = view.in_doubt.get("identity", [])
    assert [e.resolution for e in events] == ["repeated"], f"the repeated call was not reported: {view.in_doubt}"
    assert events[0].idempotency_key == f"{wf}:identity:1:authenticate"
    await asyncio.sleep(0)
