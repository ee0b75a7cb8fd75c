"""Invariants 5 and 7 on real agent processes: no record stops an agent; one dead letter each.

Malformed bytes, an oversized message, an unknown kind, a schema violation, an unsigned envelope,
one signed by a key that is not in the keyring (forged), one whose fields were changed after
signing, and a generated hostile corpus (tests/fuzz/hostile.py: nesting thousands deep, step
chains past the limit, cycles, fan-in, truncated msgpack, wrong types, random bytes, bit flips,
tombstones) all go to the workflow log in the middle of a running workflow. Every role's group
reads every one of them; each is dead-lettered exactly once (the Redis claim), with its reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest

from agents.mock_ehr import summarize_audit_log
from agents.specs import reconciliation_spec
from mesh.bus import SubscriptionOptions
from mesh.security import EnvelopeSigner, generate_keypair
from protocols import DeadLetter, Envelope, EnvelopeCodec, StepCompleted
from tests.chaos.cluster import Cluster
from tests.fuzz.hostile import hostile_corpus

# What a dead letter keeps of a record in agents running with MESH_MAX_ENVELOPE_BYTES=262144.
_RAW_CAP = min(64 * 1024, 262_144 // 2 - 4096)

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
    seed = int(os.environ.get("MESH_HOSTILE_SEED", random.randrange(2**32)))
    corpus = hostile_corpus(random.Random(seed), workflow_id=wf, sign=cluster.trust.sign, size=60)
    expected_reason = {_digest(raw): reason for reason, raw in bad.items() if reason != "not-owner"}
    expected = Counter(_digest(raw) for reason, raw in bad.items() if reason != "not-owner")
    expected.update(_digest(raw) for _label, raw in corpus)
    for raw in [*bad.values(), *(raw for _label, raw in corpus)]:
        # Same key as the workflow, so the bad records sit in its partition, between its events.
        await cluster.bus.publish_raw(log, raw, key=wf)
    await cluster.wait_until(lambda: cluster.views[wf].finished is not None, timeout_s=180,
                             what="the workflow to finish")
    view = cluster.views[wf]
    assert view.finished is not None and view.finished.status == "succeeded"
    # The forged "fetch completed with no records" was not believed: validate checked 6 patients.
    assert "Patients checked: 6" in view.completed["report"].outputs["report"]
    agents = ("identity-a", "fetch-a", "validate-a", "report-a")
    seen: Counter[str] = Counter()
    reasons: dict[str, list[str]] = {}
    loop = asyncio.get_running_loop()
    deadline, quiet_until = loop.time() + 60, None
    # Every role's group reads the log; each record must still be dead-lettered exactly once:
    # wait for all of them, then a few seconds more to catch any duplicate.
    while loop.time() < deadline and (quiet_until is None or loop.time() < quiet_until):
        for d in await dlq.poll(timeout_ms=200):
            letter = d.envelope.payload_model(DeadLetter)
            if letter.source_topic == log and letter.key == wf.encode() and letter.consumer in agents:
                assert letter.reason and letter.error, letter
                seen[_digest(letter.raw)] += 1
                reasons.setdefault(_digest(letter.raw), []).append(letter.reason)
            await dlq.commit(d)
        if quiet_until is None and +seen >= +expected and set(seen) >= set(expected):
            quiet_until = loop.time() + 5
    await dlq.aclose()
    missing = expected - seen
    duplicated = {h: n for h, n in seen.items() if n > expected.get(h, 0)}
    assert not missing, f"seed {seed}: {sum(missing.values())} bad record(s) never dead-lettered"
    assert not duplicated, f"seed {seed}: dead-lettered more than once: {duplicated}"
    for digest, reason in expected_reason.items():
        want = "forged" if reason == "forged-tampered" else reason
        assert reasons[digest] == [want], (reason, reasons[digest])
    for agent_id in agents:
        assert cluster.agents.alive(agent_id), f"{agent_id} died on bad input (seed {seed})"
    audit = summarize_audit_log(cluster.ehr.audit_log)
    assert audit.duplicate_effects == 0, audit


def _digest(raw: bytes | None) -> str:
    return hashlib.sha256((raw or b"")[:_RAW_CAP]).hexdigest()
