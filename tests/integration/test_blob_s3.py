"""The S3 blob store against a real S3-compatible server (s3proxy, see ``s3_server.py``): the blob
contract suite, credentials, a server crash, and the settings that select it."""

from __future__ import annotations

import asyncio
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


async def test_selected_by_settings(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
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
    # The AWS_* variables (what the Helm chart maps a Kubernetes Secret onto) work as well.
    monkeypatch.delenv("MESH_S3_ACCESS_KEY_ID")
    monkeypatch.delenv("MESH_S3_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    store = blob_store_from_settings(MeshSettings())
    try:
        assert await store.get("wf/a/1") == b"via settings"
        assert await asyncio.wait_for(store.list("wf/"), 10) == ["wf/a/1"]
    finally:
        await store.aclose()
