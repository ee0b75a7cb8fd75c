"""Store contracts against the in-memory and filesystem implementations."""

from __future__ import annotations

import pytest

from mesh.store import FileBlobStore, InMemoryBlobStore, InMemoryStateStore
from tests.contracts.store_contract import BlobStoreContract, StateStoreContract


class TestInMemoryStateStore(StateStoreContract):
    @pytest.fixture
    def store(self) -> InMemoryStateStore:
        return InMemoryStateStore(keep_versions=5)


class TestFileBlobStore(BlobStoreContract):
    @pytest.fixture
    def blobs(self, tmp_path) -> FileBlobStore:  # type: ignore[no-untyped-def]
        return FileBlobStore(tmp_path / "blobs")


class TestInMemoryBlobStore(BlobStoreContract):
    @pytest.fixture
    def blobs(self) -> InMemoryBlobStore:
        return InMemoryBlobStore()


async def test_in_memory_blob_store_roundtrip() -> None:
    blobs = InMemoryBlobStore()
    await blobs.put("a/b", b"x")
    assert await blobs.get("a/b") == b"x"
    assert await blobs.list("a/") == ["a/b"]
