"""Invariant 5 on real agent processes: bad input is dead-lettered with its reason, agents go on.

Malformed bytes, an oversized message, an unknown kind, a schema violation, an unsigned envelope,
one signed by a key that is not in the keyring (forged) and one whose fields were changed after
signing all go to the workflow log in the middle of a running workflow.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest

from agents.specs import reconciliation_spec
from mesh.bus import SubscriptionOptions
from mesh.security import EnvelopeSigner, generate_keypair
from protocols import DeadLetter, Envelope, EnvelopeCodec, StepCompleted
from tests.chaos.cluster import Cluster

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]


@pytest.fixture
async def cluster(tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, kafka_bootstrap, redis_url, patients=6, turn_delay_s=0.2)
    try:
        yield c
    finally:
        await c.aclose()


async def test_bad_input_is_dead_lettered_and_the_workflow_completes(cluster: Cluster) -> None:
    await cluster.start([("identity", "identity-a"), ("fetch", "fetch-a"), ("validate", "validate-a"),
                         ("report", "report-a")])
    dlq = await cluster.bus.subscribe([cluster.topics.dead_letter], group=f"{cluster.prefix}.dlq-reader",
                                      options=SubscriptionOptions(session_timeout_ms=10000, heartbeat_interval_ms=1000))
    wf = await cluster.submit(reconciliation_spec(patients=6, page_size=2))
    await cluster.wait_until(lambda: cluster.views[wf].turns_seen.get("fetch", 0) >= 1, timeout_s=60,
                             what="fetch to start")
    log, codec = cluster.topics.workflow_events, EnvelopeCodec()
    fake_done = Envelope.of(StepCompleted(outputs={"records": {}}, turns=1), sender="fetch-a",
                            workflow_id=wf, step_id="fetch")
    mallory = EnvelopeSigner("fetch-a", generate_keypair("fetch-a").private_key)  # not the key in the keyring
    # Signed by a registered key, then its body changed on the wire, keeping the old signature.
    signed = cluster.trust.sign(fake_done.with_fields(sender="chaos-test"))
    changed_body = EnvelopeCodec.encode_body(signed.with_fields(payload={"outputs": {"records": {"X": 1}}, "turns": 1}))
    tampered = msgpack.packb([1, changed_body, signed.signature], use_bin_type=True)
    # Validly signed by a registered client, but it does not own the step: not believed either.
    not_owner = cluster.trust.sign(fake_done.with_fields(sender="chaos-test", id="not-owner-1"))
    bad: dict[str, bytes | None] = {
        "malformed": b"\x93\x01\xc4",
        "oversize": b"\x00" * 300_000,  # agents run with MESH_MAX_ENVELOPE_BYTES=262144
        "unknown_kind": codec.encode(cluster.trust.sign(Envelope(kind="no.such.kind", sender="chaos-test",
                                                                 payload={}, workflow_id=wf))),
        "schema": codec.encode(cluster.trust.sign(Envelope(kind="workflow.step_completed", sender="chaos-test",
                                                           payload={"turns": -1}, workflow_id=wf))),
        "unsigned": codec.encode(fake_done),
        "forged": codec.encode(mallory.sign(fake_done)),
        "forged-tampered": tampered,
        "not-owner": codec.encode(not_owner),
    }
    for raw in bad.values():
        # Same key as the workflow, so the bad records sit in its partition, between its events.
        await cluster.bus.publish_raw(log, raw, key=wf)
    await cluster.wait_until(lambda: cluster.views[wf].finished is not None, timeout_s=120,
                             what="the workflow to finish")
    view = cluster.views[wf]
    assert view.finished is not None and view.finished.status == "succeeded"
    # The forged "fetch completed with no records" was not believed: validate checked 6 patients.
    assert "Patients checked: 6" in view.completed["report"].outputs["report"]
    expected = {"malformed", "oversize", "unknown_kind", "schema", "unsigned", "forged"}
    agents = ("identity-a", "fetch-a", "validate-a", "report-a")
    by_agent: dict[str, set[str]] = {a: set() for a in agents}
    forged: dict[str, int] = dict.fromkeys(agents, 0)
    deadline = asyncio.get_running_loop().time() + 30
    # Every agent reads the log, so each bad record is dead-lettered by every role's member (a
    # rebalance may replay one: counts are "at least").
    while any(by_agent[a] != expected or forged[a] < 2 for a in agents) and asyncio.get_running_loop().time() < deadline:
        for d in await dlq.poll(timeout_ms=200):
            letter = d.envelope.payload_model(DeadLetter)
            if letter.key == wf.encode() and letter.consumer in by_agent:
                by_agent[letter.consumer].add(letter.reason)
                forged[letter.consumer] += letter.reason == "forged"
            await dlq.commit(d)
    for agent in agents:
        assert by_agent[agent] == expected, (agent, by_agent[agent])
        assert forged[agent] >= 2, forged  # the wrong key, and the body changed after signing
    await dlq.aclose()
    for agent_id in ("identity-a", "fetch-a", "validate-a", "report-a"):
        assert cluster.agents.alive(agent_id), f"{agent_id} died on bad input"

