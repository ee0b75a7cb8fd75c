"""The StateStore and BlobStore contracts (subclass and provide ``store`` / ``blobs``)."""

from __future__ import annotations

import asyncio

import pytest

from mesh.errors import CheckpointNotFound, StaleEpochError, UsageError
from mesh.store import BlobStore, StateStore, hash_tag, step_key, workflow_tag


class StateStoreContract:
    """Behaviour every StateStore must show."""

    async def test_versions_and_latest(self, store: StateStore) -> None:
        epoch = await store.claim("k", "a")
        c1 = await store.write("k", b"one", epoch=epoch, owner="a")
        c2 = await store.write("k", b"two", epoch=epoch, owner="a")
        assert (c1.version, c2.version) == (1, 2)
        latest = await store.read("k")
        assert (latest.version, latest.data, latest.epoch, latest.owner) == (2, b"two", epoch, "a")
        assert (await store.read("k", 1)).data == b"one"

    async def test_missing(self, store: StateStore) -> None:
        with pytest.raises(CheckpointNotFound, match="no checkpoint 'nope'"):
            await store.read("nope")
        await store.write("k2", b"x", epoch=await store.claim("k2", "a"))
        with pytest.raises(CheckpointNotFound, match="version 9"):
            await store.read("k2", 9)

    async def test_stale_epoch_refused_and_not_applied(self, store: StateStore) -> None:
        old = await store.claim("k", "zombie")
        await store.write("k", b"old owner", epoch=old, owner="zombie")
        new = await store.claim("k", "successor")
        assert new > old
        await store.write("k", b"new owner", epoch=new, owner="successor")
        with pytest.raises(StaleEpochError) as info:
            await store.write("k", b"zombie write", epoch=old, owner="zombie")
        assert (info.value.attempted_epoch, info.value.current_epoch) == (old, new)
        assert "refused" in str(info.value)
        assert not info.value.retryable
        latest = await store.read("k")
        assert (latest.data, latest.epoch) == (b"new owner", new)

    async def test_claim_alone_fences(self, store: StateStore) -> None:
        old = await store.claim("k", "a")
        await store.claim("k", "b")
        with pytest.raises(StaleEpochError):
            await store.write("k", b"x", epoch=old)

    async def test_concurrent_writers_one_wins_per_epoch(self, store: StateStore) -> None:
        epochs = [await store.claim("k", f"w{i}") for i in range(5)]

        async def attempt(e: int) -> bool:
            try:
                await store.write("k", str(e).encode(), epoch=e)
                return True
            except StaleEpochError:
                return False

        results = await asyncio.gather(*(attempt(e) for e in epochs))
        assert results[-1] is True
        assert (await store.read("k")).epoch == epochs[-1]

    async def test_old_versions_trimmed(self, store: StateStore) -> None:
        e = await store.claim("k", "a")
        keep = store.keep_versions  # type: ignore[attr-defined]
        for i in range(keep + 3):
            await store.write("k", str(i).encode(), epoch=e)
        with pytest.raises(CheckpointNotFound):
            await store.read("k", 1)
        assert (await store.read("k", keep + 3)).data == str(keep + 2).encode()

    async def test_expire_workflow(self, store: StateStore) -> None:
        a, b = step_key("w", "a"), step_key("w", "b")
        e = await store.claim(a, "a")
        await store.write(a, b"x", epoch=e, workflow_id="w")
        await store.write(b, b"y", epoch=e, workflow_id="w")
        assert await store.expire_workflow("w", 1) == 2
        await asyncio.sleep(1.6)
        with pytest.raises(CheckpointNotFound):
            await store.read(a)

    async def test_workflow_keys_carry_the_workflow_tag(self, store: StateStore) -> None:
        # A key listed under a workflow must share its hash tag (its Redis Cluster slot).
        assert hash_tag(step_key("w:1", "a")) == hash_tag(step_key("w:1", "b")) == hash_tag(workflow_tag("w:1"))
        with pytest.raises(UsageError, match="hash tag"):
            await store.write("wf:w:step:a", b"x", epoch=await store.claim("wf:w:step:a", "a"), workflow_id="w")


class BlobStoreContract:
    """Behaviour every BlobStore must show."""

    async def test_put_get_list(self, blobs: BlobStore) -> None:
        await blobs.put("wf/a/000001.bin", b"1")
        await blobs.put("wf/a/000002.bin", b"2")
        await blobs.put("wf/b/000001.bin", b"3")
        assert await blobs.get("wf/a/000002.bin") == b"2"
        assert await blobs.list("wf/a/") == ["wf/a/000001.bin", "wf/a/000002.bin"]
        with pytest.raises(CheckpointNotFound):
            await blobs.get("wf/zz")

    async def test_rejects_escaping_names(self, blobs: BlobStore) -> None:
        with pytest.raises(UsageError, match="invalid blob name"):
            await blobs.put("../x", b"")
        with pytest.raises(UsageError, match="invalid blob name"):
            await blobs.put("wf/../../x", b"")

    async def test_bytes_kept_exactly_and_rewrite_replaces(self, blobs: BlobStore) -> None:
        every_byte = bytes(range(256)) * 64
        await blobs.put("wf/c/raw.bin", every_byte)
        assert await blobs.get("wf/c/raw.bin") == every_byte
        await blobs.put("wf/c/raw.bin", b"second")
        assert await blobs.get("wf/c/raw.bin") == b"second"
        assert await blobs.list("wf/c/") == ["wf/c/raw.bin"]
        assert await blobs.list("nothing/") == []

    async def test_retention_deletes_only_old_blobs(self, blobs: BlobStore) -> None:
        await blobs.put("wf/r/old.bin", b"old")
        await asyncio.sleep(2.2)  # S3 reports LastModified in whole seconds
        await blobs.put("wf/r/new.bin", b"new!")
        dry = await blobs.delete_older_than(1.5, dry_run=True)
        assert (dry.deleted, dry.kept, dry.bytes_freed) == (1, 1, 3)
        assert await blobs.list("wf/r/") == ["wf/r/new.bin", "wf/r/old.bin"]
        done = await blobs.delete_older_than(1.5)
        assert (done.deleted, done.kept) == (1, 1)
        assert await blobs.list("wf/r/") == ["wf/r/new.bin"]
        with pytest.raises(CheckpointNotFound):
            await blobs.get("wf/r/old.bin")
        assert (await blobs.delete_older_than(3600)).deleted == 0
