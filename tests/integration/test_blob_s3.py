"""The S3 blob store against a real S3-compatible server (s3proxy, see ``s3_server.py``): the blob
contract suite, credentials, a server crash, and the settings that select it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mesh.errors import StoreError, StoreUnavailable
from mesh.settings import MeshSettings
from mesh.store import blob_store_from_settings
from mesh.store.s3 import S3BlobStore
from tests.contracts.store_contract import BlobStoreContract
from tests.integration.s3_server import S3Server, s3proxy_jar


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One s3proxy for the module (a JVM start costs seconds)."""
    server = S3Server(s3proxy_jar(), tmp_path_factory.mktemp("s3proxy"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _store(s3: S3Server, **kw: object) -> S3BlobStore:
    args: dict[str, object] = {
        "prefix": f"t-{uuid.uuid4().hex[:8]}",
        "endpoint_url": s3.endpoint,
        "access_key_id": s3.access_key,
        "secret_access_key": s3.secret_key,
        "create_bucket": True,
    }
    args.update(kw)
    return S3BlobStore("mesh-test-blobs", **args)  # type: ignore[arg-type]


async def _mesh(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """Run the ``mesh`` command as a user does (a subprocess), off the event loop."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mesh", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class TestS3BlobStore(BlobStoreContract):
    @pytest.fixture
    async def blobs(self, s3: S3Server) -> AsyncIterator[S3BlobStore]:
        store = _store(s3)
        yield store
        await store.aclose()


async def test_uri_prefix_and_large_blob(s3: S3Server) -> None:
    store = _store(s3, prefix="mesh-a/")
    other = _store(s3, prefix="mesh-b")
    try:
        big = bytes(range(256)) * (6 * 4096)  # 6 MiB in one PUT
        uri = await store.put("wf/1/000001.msgpack", big)
        assert uri == "s3://mesh-test-blobs/mesh-a/wf/1/000001.msgpack"
        assert await store.get("wf/1/000001.msgpack") == big
        # Prefixes keep meshes that share a bucket apart.
        assert await other.list("") == []
        assert await store.list("wf/") == ["wf/1/000001.msgpack"]
    finally:
        await store.aclose()
        await other.aclose()


async def test_wrong_secret_is_a_clear_error_not_a_hang(s3: S3Server) -> None:
    good = _store(s3)
    await good.put("x/1", b"1")
    await good.aclose()
    bad = _store(s3, prefix=good.prefix, secret_access_key="not-the-secret", create_bucket=False)
    t0 = time.monotonic()
    try:
        with pytest.raises(StoreError, match=r"refused by S3 .*check the credentials") as info:
            await bad.get("x/1")
        assert not isinstance(info.value, StoreUnavailable)
        assert "not-the-secret" not in str(info.value) and "not-the-secret" not in repr(bad)
    finally:
        await bad.aclose()
    assert time.monotonic() - t0 < 10


async def test_missing_bucket_says_how_to_fix(s3: S3Server) -> None:
    store = _store(s3, create_bucket=False)
    store.bucket = f"absent-{uuid.uuid4().hex[:8]}"
    try:
        with pytest.raises(StoreError, match=r"does not exist .*MESH_S3_CREATE_BUCKET"):
            await store.put("a", b"x")
    finally:
        await store.aclose()


async def test_server_crash_is_transient_and_blobs_survive_restart(tmp_path: Path) -> None:
    """SIGKILL the server: writes fail as retryable ``StoreUnavailable`` within the timeouts; after a
    restart on the same data the blobs written before are all there and writes work again."""
    server = S3Server(s3proxy_jar(), tmp_path / "s3")
    server.start()
    store = _store(server, connect_timeout_s=1.0, read_timeout_s=3.0, max_attempts=2)
    try:
        for i in range(5):
            await store.put(f"wf/k/{i:06d}", f"turn {i}".encode())
        server.kill()
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable) as info:
            await store.put("wf/k/000005", b"lost")
        assert info.value.retryable
        assert time.monotonic() - t0 < 15
        server.start()
        assert await store.list("wf/k/") == [f"wf/k/{i:06d}" for i in range(5)]
        await store.put("wf/k/000005", b"turn 5")
        assert await store.get("wf/k/000005") == b"turn 5"
    finally:
        await store.aclose()
        server.stop()


async def test_selected_by_settings(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    prefix = f"settings-{uuid.uuid4().hex[:8]}"
    for name, value in {
        "MESH_BLOB_BACKEND": "s3",
        "MESH_S3_BUCKET": "mesh-test-blobs",
        "MESH_S3_PREFIX": prefix,
        "MESH_S3_ENDPOINT_URL": s3.endpoint,
        "MESH_S3_ACCESS_KEY_ID": s3.access_key,
        "MESH_S3_SECRET_ACCESS_KEY": s3.secret_key,
        "MESH_S3_CREATE_BUCKET": "1",
    }.items():
        monkeypatch.setenv(name, value)
    settings = MeshSettings()
    assert s3.secret_key not in repr(settings)
    store = blob_store_from_settings(settings)
    assert isinstance(store, S3BlobStore)
    try:
        await store.put("wf/a/1", b"via settings")
    finally:
        await store.aclose()
    # The secret from a file (a mounted Secret), then the AWS_* variables (what the Helm chart maps
    # a Kubernetes Secret onto) work as well.
    secret_file = tmp_path / "s3-secret"
    secret_file.write_text(s3.secret_key + "\n")
    monkeypatch.delenv("MESH_S3_SECRET_ACCESS_KEY")
    monkeypatch.setenv("MESH_S3_SECRET_ACCESS_KEY_FILE", str(secret_file))
    store = blob_store_from_settings(MeshSettings())
    try:
        assert await store.get("wf/a/1") == b"via settings"
    finally:
        await store.aclose()
    monkeypatch.delenv("MESH_S3_SECRET_ACCESS_KEY_FILE")
    monkeypatch.delenv("MESH_S3_ACCESS_KEY_ID")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    store = blob_store_from_settings(MeshSettings())
    try:
        assert await store.get("wf/a/1") == b"via settings"
        assert await asyncio.wait_for(store.list("wf/"), 10) == ["wf/a/1"]
    finally:
        await store.aclose()


async def test_bounded_history_on_redis_and_s3_reads_back_with_mesh_turns(
    s3: S3Server, redis_url: str, key_prefix: str
) -> None:
    """A 120-turn step over real Redis and S3: the checkpoint stays small, the turn history is in
    the bucket sealed, and ``mesh turns`` (a subprocess, as an operator runs it) reads all of it."""
    from mesh.llm import ActionSpec, Decision, ReasonerRequest, RuleReasoner
    from mesh.runtime import (
        Action,
        ActionContext,
        ActionOutcome,
        ContextVariable,
        Rehydration,
        RuntimeOptions,
        StackPromptBuilder,
        StepRunner,
        StepState,
    )
    from mesh.store import RedisStateStore, step_key
    from protocols import Envelope, WorkflowSpec

    token = "tok-s3-history-secret-0123456789"
    spec = WorkflowSpec.parse(
        {
            "name": "long",
            "mission": "Work through a queue.",
            "steps": [
                {
                    "id": "s",
                    "role": "worker",
                    "task": "work",
                    "limits": {"max_turns": 200, "spin_window": 100},
                }
            ],
        }
    )
    calls = [0]

    def policy(request: ReasonerRequest) -> Decision:
        calls[0] += 1
        return Decision(action="work", params={"item": calls[0]})

    async def work(ctx: ActionContext, params: dict[str, object]) -> ActionOutcome:
        return ActionOutcome(
            summary=f"item {params['item']} done " + "note " * 12, done=ctx.turn >= 120
        )

    async def publish(env: Envelope) -> None:
        return None

    store = RedisStateStore.from_url(redis_url, key_prefix=key_prefix)
    blobs = _store(s3)
    runner = StepRunner(
        RuleReasoner(policy=policy),
        store,
        StackPromptBuilder(window=8000, output_reserve=500),
        publish,
        agent_id="a",
        role="worker",
        blobs=blobs,
        actions={
            "work": Action(
                ActionSpec(
                    name="work",
                    description="Work.",
                    params_schema={"type": "object", "properties": {"item": {"type": "integer"}}},
                ),
                work,
            )
        },
        options=RuntimeOptions(history_window=10, history_segment=10),
    )
    try:
        state = await runner.run(
            spec,
            spec.steps[0],
            "wf-s3",
            rehydration=Rehydration(variables={"auth_token": ContextVariable("auth_token", token, secret=True)}),
        )
        await runner.drain()
        assert state.status == "completed" and state.turn == 120
        stored = StepState.from_bytes((await store.read(step_key("wf-s3", "s"))).data)
        # The window, plus at most max_backlog (4) segments waiting when turns outrun the store.
        assert len(stored.history) <= 10 + 4 * 10 + 1 and stored.archive.through >= 70
        assert len((await store.read(step_key("wf-s3", "s"))).data) < 10_000
        names = await blobs.list("turns/wf-s3/s/")
        # An upload that finished after the last checkpoint is in the bucket but not referenced.
        assert stored.archive.segments <= len(names) <= stored.archive.segments + 4
        for name in names:
            raw = await blobs.get(name)
            assert b"item 1 done" not in raw and token.encode() not in raw
    finally:
        await store.aclose()
        await blobs.aclose()
    env = {
        **os.environ,
        "MESH_REDIS_URL": redis_url,
        "MESH_TOPIC_PREFIX": key_prefix.rstrip(":"),
        "MESH_BLOB_BACKEND": "s3",
        "MESH_S3_BUCKET": blobs.bucket,
        "MESH_S3_PREFIX": blobs.prefix,
        "MESH_S3_ENDPOINT_URL": s3.endpoint,
        "MESH_S3_ACCESS_KEY_ID": s3.access_key,
        "MESH_S3_SECRET_ACCESS_KEY": s3.secret_key,
    }
    proc = await _mesh(env, "turns", "wf-s3", "s", "--json")
    assert proc.returncode == 0, proc.stderr
    turns = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [t["turn"] for t in turns] == list(range(1, 121))
    assert turns[0]["summary"].startswith("item 1 done") and turns[-1]["summary"].startswith(
        "item 120 done"
    )
    assert token not in proc.stdout + proc.stderr
    table = await _mesh(env, "turns", "wf-s3", "s", "--last", "3")
    assert table.returncode == 0, table.stderr
    assert "archived: turns 1.." in table.stdout and "item 120 done" in table.stdout
    # The bucket's objects are gone (retention deleted them): the command says which turns are lost.
    sweep = _store(s3, prefix=blobs.prefix)
    try:
        await sweep.delete_older_than(0)
    finally:
        await sweep.aclose()
    gone = await _mesh(env, "turns", "wf-s3", "s")
    assert gone.returncode != 0 and "is missing (removed by blob retention?)" in gone.stderr
