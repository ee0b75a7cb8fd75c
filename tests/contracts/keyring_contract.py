"""The KeyringStore contract (subclass and provide ``keyring_store``)."""

from __future__ import annotations

import asyncio

from mesh.store import KeyringStore


class KeyringStoreContract:
    """Behaviour every KeyringStore must show."""

    async def test_publish_then_records(self, keyring_store: KeyringStore) -> None:
        assert await keyring_store.records() == {}
        await keyring_store.publish("agent-1", '{"public_key": "aa"}')
        await keyring_store.publish("agent-2", '{"public_key": "bb"}')
        assert await keyring_store.records() == {
            "agent-1": '{"public_key": "aa"}',
            "agent-2": '{"public_key": "bb"}',
        }

    async def test_publish_replaces_the_agents_record(self, keyring_store: KeyringStore) -> None:
        await keyring_store.publish("agent-1", "first")
        await keyring_store.publish("agent-1", "second \u2713")
        assert await keyring_store.records() == {"agent-1": "second \u2713"}

    async def test_records_is_a_copy(self, keyring_store: KeyringStore) -> None:
        await keyring_store.publish("agent-1", "r")
        (await keyring_store.records())["agent-2"] = "not published"
        assert await keyring_store.records() == {"agent-1": "r"}

    async def test_concurrent_publishers_all_land(self, keyring_store: KeyringStore) -> None:
        await asyncio.gather(*(keyring_store.publish(f"agent-{i}", str(i)) for i in range(20)))
        assert await keyring_store.records() == {f"agent-{i}": str(i) for i in range(20)}
