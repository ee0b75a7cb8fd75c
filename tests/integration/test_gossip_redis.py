"""Context maps and the keyring persisted in a real Redis."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from mesh.errors import StoreUnavailable
from mesh.gossip import ContextMap, RedisContextMapStore
from mesh.security import Keyring, RedisKeyringStore, generate_keypair

pytestmark = pytest.mark.integration


async def test_context_map_round_trips_through_redis(redis_client: aioredis.Redis, key_prefix: str) -> None:
    store = RedisContextMapStore(redis_client, prefix=key_prefix)
    cmap = ContextMap("wf-redis", "agent-1")
    cmap.set("token", "secret-value", secret=True, priority=0)
    cmap.add("ids", "o-1", "o-2")
    cmap.delete("gone")
    size = await store.save(cmap)
    assert size == len(cmap.to_bytes())
    assert await redis_client.exists(f"{key_prefix}ctx:wf-redis:agent-1") == 1
    loaded = await store.load("wf-redis", "agent-1")
    assert loaded == cmap
    assert loaded is not None and loaded.get("token").secret  # type: ignore[union-attr]
    assert await store.load("wf-redis", "nobody") is None
    await store.delete("wf-redis", "agent-1")
    assert await store.load("wf-redis", "agent-1") is None


async def test_keyring_is_shared_through_redis(redis_client: aioredis.Redis, key_prefix: str) -> None:
    shared = RedisKeyringStore(redis_client, prefix=key_prefix)
    pairs = [generate_keypair(f"agent-{i}") for i in range(3)]
    for pair in pairs:
        await shared.publish(pair.agent_id, pair.public_key)
    keyring = await shared.load()
    assert keyring.to_dict() == Keyring({p.agent_id: p.public_key for p in pairs}).to_dict()


async def test_unreachable_redis_is_a_store_error() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        with pytest.raises(StoreUnavailable):
            await RedisContextMapStore(client).save(ContextMap("wf", "a"))
        with pytest.raises(StoreUnavailable):
            await RedisKeyringStore(client).load()
    finally:
        await client.aclose()
