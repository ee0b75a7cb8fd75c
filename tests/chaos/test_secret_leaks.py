"""Invariant 9 on a real run: planted secrets reach no sink, and none is at rest in plaintext.

Agent processes on real Kafka and Redis run the reconciliation workflow against the mock EHR,
with spans exported over OTLP/HTTP to a real receiver. Secrets of many shapes are planted where a
real deployment has them: the EHR client secret (agents' environment), the access token the
identity step discovers (a secret variable), the workflow's mission and step tasks (text that
flows into prompts, scratchpads, spans and logs), and a hostile record on the workflow log (dead
letters, logs). Then every sink is read raw: agent logs, every span received, the trace-event
topic, scratchpads, every Redis key of the run (SCAN, each type), every file under the state
directory (blob copies, journals) and the dead letters. Zero hits; and the files are private.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis

from agents.mock_ehr import EhrConfig, start_mock_ehr_process
from agents.specs import reconciliation_spec
from mesh.bus import SubscriptionOptions
from mesh.runtime import secret_key
from mesh.security import data_cipher
from protocols import DeadLetter, Envelope, EnvelopeCodec, TraceEvent
from tests.chaos.cluster import Cluster
from tests.unit.telemetry.test_telemetry_otlp_export import OtlpReceiver

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

CLIENT_SECRET = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
PLANTED = {
    "authorization header": "Authorization: Bearer " + "bT9kZXYtYmVhcmVyLXRva2VuLTAwMQ",
    "anthropic key": "sk-ant-api03-" + "K9qLw3Zr8pTnVb2XyU7mJd4F-hGs1aQe6",
    "openai key": "sk-proj-" + "Zx81Lq0PmR4nT6vW2yB9cD3fG5hJ7kK1",
    "github token": "ghp_" + "0123456789abcdefghijABCDEFGHIJ012345",
    "github pat": "github_pat_" + "11ABCDEFG0123456789_abcdefghijKLMNOPQRSTuvwxyz0123456789",
    "aws access key": "AKIA" + "IOSFODNN7EXAMPLX",
    "aws secret key": "aws_secret_access_key=" + "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "slack token": "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "google key": "AIza" + "SyA-1234567890abcdefghijklmnopqrstu",
    "stripe key": CLIENT_SECRET,
    "url password": "postgres://reporter:" + "Tr0ub4dor-and-3" + "@db.internal:5432/ehr",
    "json password": json.dumps({"user": "ann", "password": "correct horse battery staple 9"}),
    "jwt": "eyJhbGciOiJIUzI1NiJ9." + "eyJzdWIiOiJwbGFudGVkIn0" + ".c2lnbmF0dXJlLXBsYW50ZWQtMDAx",
    "pem private key": "-----BEGIN PRIVATE KEY-----\n" + "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7PLANTED00"
                       + "\n-----END PRIVATE KEY-----",
}
# What must never appear: the secret part of each shape (the parts a redactor may keep, such as
# "Authorization: Bearer" or the user of a URL, are not secrets).
NEEDLES = {
    "authorization header": "bT9kZXYtYmVhcmVyLXRva2VuLTAwMQ",
    "anthropic key": "K9qLw3Zr8pTnVb2XyU7mJd4F-hGs1aQe6",
    "openai key": "Zx81Lq0PmR4nT6vW2yB9cD3fG5hJ7kK1",
    "github token": "0123456789abcdefghijABCDEFGHIJ012345",
    "github pat": "11ABCDEFG0123456789_abcdefghijKLMNOPQRSTuvwxyz0123456789",
    "aws access key": "AKIAIOSFODNN7EXAMPLX",
    "aws secret key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "slack token": "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "google key": "SyA-1234567890abcdefghijklmnopqrstu",
    "stripe key (EHR client secret)": "4eC39HqLyjWDarjtT1zdp7dc",
    "url password": "Tr0ub4dor-and-3",
    "json password": "correct horse battery staple 9",
    "jwt": "eyJzdWIiOiJwbGFudGVkIn0",
    "pem private key": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7PLANTED00",
}
PLANTED_TEXT = " | ".join(PLANTED.values())


@pytest.fixture
async def cluster(tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, kafka_bootstrap, redis_url, patients=4, turn_delay_s=0.05)
    try:
        yield c
    finally:
        await c.aclose()


def _hits(name: str, data: bytes | str, needles: dict[str, str]) -> list[str]:
    blob = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    forms = {}
    for what, needle in needles.items():
        for form in (needle, json.dumps(needle)[1:-1]):
            forms[form] = what
    return [f"{what} in {name}" for form, what in forms.items() if form.encode() in blob]


def _read_tree(root: Path) -> dict[Path, tuple[bytes, int, int]]:
    """Every file under ``root``: (bytes, its permission bits, its directory's)."""
    return {p: (p.read_bytes(), stat.S_IMODE(p.stat().st_mode), stat.S_IMODE(p.parent.stat().st_mode))
            for p in root.rglob("*") if p.is_file() and p.name != "audit.jsonl"}


async def _redis_dump(url: str, prefix: str) -> dict[str, bytes]:
    """Every key under ``prefix``, read raw whatever its type."""
    client = aioredis.Redis.from_url(url)
    out: dict[str, bytes] = {}
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=500):
            kind = (await client.type(key)).decode()
            value: Any
            if kind == "string":
                value = await client.get(key)
            elif kind == "hash":
                value = await client.hgetall(key)  # type: ignore[misc]
            elif kind == "set":
                value = await client.smembers(key)  # type: ignore[misc]
            elif kind == "list":
                value = await client.lrange(key, 0, -1)  # type: ignore[misc]
            elif kind == "zset":
                value = await client.zrange(key, 0, -1, withscores=True)
            else:
                value = kind
            out[key.decode()] = msgpack.packb(value, use_bin_type=True, default=repr)
    finally:
        await client.aclose()
    return out


async def test_planted_secrets_reach_no_sink_and_nothing_is_at_rest_in_plaintext(
    cluster: Cluster, tmp_path: Path
) -> None:
    with OtlpReceiver() as receiver:
        # Agents: spans to the receiver (flushed often), the EHR client secret in their environment.
        cluster.agents.env.update({
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "NO_PROXY": "127.0.0.1,localhost",
            "OTEL_BSP_SCHEDULE_DELAY": "200", "MOCK_EHR_CLIENT_SECRET": CLIENT_SECRET,
        })
        cluster.ehr.stop()
        cluster.ehr = start_mock_ehr_process(tmp_path / "audit.jsonl",
                                             config=EhrConfig(patients=4, client_secret=CLIENT_SECRET))
        ready = cluster.agents.wait_ready
        cluster.agents.wait_ready = functools.partial(ready, timeout_s=240)  # type: ignore[method-assign]
        await cluster.start([("identity", "identity-a"), ("fetch", "fetch-a"), ("validate", "validate-a"),
                             ("report", "report-a")])
        topics = cluster.topics
        opts = SubscriptionOptions(session_timeout_ms=10000, heartbeat_interval_ms=1000)
        dlq = await cluster.bus.subscribe([topics.dead_letter], group=f"{cluster.prefix}.dlq", options=opts)
        trace = await cluster.bus.subscribe([topics.trace_events], group=f"{cluster.prefix}.trace", options=opts)

        base = reconciliation_spec(patients=4, page_size=2)
        steps = tuple(s.model_copy(update={"task": f"{s.task} (credentials for the record: {PLANTED_TEXT})"})
                      for s in base.steps)
        spec = base.model_copy(update={"mission": f"{base.mission} Vault dump: {PLANTED_TEXT}", "steps": steps})
        wf = await cluster.submit(spec)
        # Hostile records carrying every shape on the workflow log while the workflow runs: raw
        # garbage, and a signed envelope whose schema error quotes the offending value.
        garbage = msgpack.packb({"kind": "workflow.step_completed", "payload": PLANTED_TEXT, "headers": PLANTED},
                                use_bin_type=True)
        schema = EnvelopeCodec().encode(cluster.trust.sign(Envelope(
            kind="workflow.step_completed", sender="chaos-test", payload={"turns": PLANTED_TEXT}, workflow_id=wf)))
        for raw in (garbage, schema):
            await cluster.bus.publish_raw(topics.workflow_events, raw, key=wf)
        await cluster.wait_until(lambda: cluster.views[wf].finished is not None, timeout_s=180,
                                 what="the workflow to finish")
        assert cluster.views[wf].finished.status == "succeeded", cluster.describe()  # type: ignore[union-attr]

        # The access token the identity step discovered: a secret variable, stored by reference, sealed.
        sealed = (await cluster.store.read(secret_key(wf, "auth_token"))).data
        token = data_cipher().open(sealed, context=("secret", wf, "auth_token"))
        needles = {**NEEDLES, "auth token (secret variable)": token}
        assert len(needles) >= 10

        letters: list[DeadLetter] = []
        events: list[TraceEvent] = []
        deadline = asyncio.get_running_loop().time() + 30
        while not letters and asyncio.get_running_loop().time() < deadline:
            letters += [d.envelope.payload_model(DeadLetter) for d in await dlq.poll(timeout_ms=200)]
        for _ in range(10):
            events += [d.envelope.payload_model(TraceEvent) for d in await trace.poll(timeout_ms=200)]
        await dlq.aclose()
        await trace.aclose()
        await asyncio.to_thread(cluster.agents.stop_all)  # SIGTERM: agents flush their last spans
        spans = [span for request in receiver.traces for rs in request.resource_spans
                 for ss in rs.scope_spans for span in ss.spans]

    hits: list[str] = []
    # Spans as received on the wire (every attribute, event and status), trace events, dead letters.
    for i, request in enumerate(receiver.traces):
        hits += _hits(f"OTLP request {i}", request.SerializeToString(), needles)
    for event in events:
        hits += _hits(f"trace event {event.name}", repr(event.model_dump()), needles)
    for letter in letters:
        hits += _hits(f"dead letter {letter.reason}", repr(letter.model_dump()), needles)
    # Raw Redis: every key of this run, whatever its type (checkpoints, secrets, gossip maps, keyring).
    dump = await _redis_dump(cluster.redis_url, cluster.prefix)
    for key, value in dump.items():
        hits += _hits(f"redis {key}", value, needles)
    # Every file: agent logs, scratchpads, blob copies of checkpoints, journals, keys.
    files = await asyncio.to_thread(_read_tree, tmp_path)
    for path, (data, _mode, _dir_mode) in files.items():
        hits += _hits(str(path.relative_to(tmp_path)), data, needles)
    assert not hits, hits

    # The checks looked at real data: every sink was written to, and the planted text did enter.
    assert spans and events and letters, (len(spans), len(events), len(letters))
    assert any(k.startswith(f"{cluster.prefix}:ckpt:") for k in dump), sorted(dump)[:20]
    logs = [p for p in files if p.suffix == ".log"]
    pads = [p for p in files if p.suffix == ".md"]
    blobs = [p for p in files if p.suffix == ".msgpack"]
    assert logs and pads and blobs, (logs, pads, blobs)
    assert any(b"[REDACTED]" in files[p][0] for p in pads)
    assert all(d.raw for d in letters)
    # Files the mesh wrote under its state directory are private.
    private = [*blobs, *pads, *(p for p in files if p.suffix == ".journal" or p.name == "data.key")]
    for path in private:
        _data, mode, dir_mode = files[path]
        assert (mode, dir_mode) == (0o600, 0o700), f"{path} is {oct(mode)} in a {oct(dir_mode)} directory"
    assert os.environ.get("MESH_DATA_KEY")  # the session's key sealed all of the above
