"""The ContextMapStore contract (subclass and provide ``maps``)."""

from __future__ import annotations

import asyncio

from mesh.store import ContextMapStore


class ContextMapStoreContract:
    """Behaviour every ContextMapStore must show."""

    async def test_save_load_exact_bytes(self, maps: ContextMapStore) -> None:
        every_byte = bytes(range(256)) * 16
        await maps.save("wf-1", "agent-1", every_byte)
        assert await maps.load("wf-1", "agent-1") == every_byte
        assert await maps.load("wf-1", "agent-2") is None
        assert await maps.load("wf-never", "agent-1") is None

    async def test_save_replaces(self, maps: ContextMapStore) -> None:
        await maps.save("wf-1", "agent-1", b"one")
        await maps.save("wf-1", "agent-1", b"two")
        assert await maps.load("wf-1", "agent-1") == b"two"
        assert await maps.workflows("agent-1") == ["wf-1"]

    async def test_workflows_are_per_replica_and_sorted(self, maps: ContextMapStore) -> None:
        for wf in ("wf-c", "wf-a", "wf-b"):
            await maps.save(wf, "agent-1", wf.encode())
        await maps.save("wf-z", "agent-2", b"z")
        assert await maps.workflows("agent-1") == ["wf-a", "wf-b", "wf-c"]
        assert await maps.workflows("agent-2") == ["wf-z"]
        assert await maps.workflows("agent-3") == []

    async def test_retire_takes_the_map_out_of_the_restore_list(
        self, maps: ContextMapStore
    ) -> None:
        await maps.save("wf-done", "agent-1", b"x")
        await maps.save("wf-live", "agent-1", b"y")
        await maps.retire("wf-done", "agent-1", ttl_s=3600)
        assert await maps.workflows("agent-1") == ["wf-live"]
        assert await maps.load("wf-live", "agent-1") == b"y"
        await maps.retire("wf-never-saved", "agent-1", ttl_s=3600)  # a no-op, not an error

    async def test_braces_and_colons_in_ids_stay_apart(self, maps: ContextMapStore) -> None:
        # Ids are free text: one that looks like another's key layout must not collide with it.
        await maps.save("wf:1", "a", b"colon")
        await maps.save("wf", "1:a", b"other")
        assert await maps.load("wf:1", "a") == b"colon"
        assert await maps.load("wf", "1:a") == b"other"

    async def test_concurrent_saves_of_many_workflows(self, maps: ContextMapStore) -> None:
        await asyncio.gather(*(maps.save(f"wf-{i:02d}", "agent-1", bytes([i])) for i in range(20)))
        assert await maps.workflows("agent-1") == [f"wf-{i:02d}" for i in range(20)]
        assert await maps.load("wf-07", "agent-1") == bytes([7])
