"""Context maps and the keyring persisted in a real Redis."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from mesh.errors import StoreUnavailable
from mesh.gossip import ContextMap, ContextMapArchive
from mesh.security import (
    DataCipher,
    KeyDirectory,
    Keyring,
    SealedValueError,
    generate_data_key,
    generate_keypair,
)
from mesh.store import RedisContextMapStore, RedisKeyringStore

pytestmark = pytest.mark.integration


async def test_context_map_round_trips_through_redis(redis_client: aioredis.Redis, key_prefix: str) -> None:
    raw = RedisContextMapStore(redis_client, prefix=key_prefix)
    store = ContextMapArchive(raw, cipher=DataCipher.from_text(generate_data_key()))
    cmap = ContextMap("wf-redis", "agent-1")
    cmap.set("token", "secret-value", secret=True, priority=0)
    cmap.add("ids", "o-1", "o-2")
    cmap.delete("gone")
    size = await store.save(cmap)
    assert size == len(await redis_client.get(raw.key("wf-redis", "agent-1")))
    loaded = await store.load("wf-redis", "agent-1")
    assert loaded == cmap
    assert loaded is not None and loaded.get("token").secret  # type: ignore[union-attr]
    assert await store.load("wf-redis", "nobody") is None
    assert await store.workflows("agent-1") == ["wf-redis"]
    await store.retire("wf-redis", "agent-1", ttl_s=0)
    assert await store.workflows("agent-1") == []



async def test_secret_entries_are_sealed_in_redis_and_bound_to_their_map(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    cipher = DataCipher.from_text(generate_data_key())
    redis_maps = RedisContextMapStore(redis_client, prefix=key_prefix)
    store = ContextMapArchive(redis_maps, cipher=cipher)
    cmap = ContextMap("wf-sealed", "agent-1")
    cmap.set("auth_token", "tok-0123456789-plaintext", secret=True, priority=0)
    cmap.add("api_keys", "key-aaaaaaaaaaaaaaaa", "key-bbbbbbbbbbbbbbbb", secret=True)
    cmap.set("order_id", "o-visible-1")
    await store.save(cmap)
    raw = await redis_client.get(redis_maps.key("wf-sealed", "agent-1"))
    for secret in (b"tok-0123456789-plaintext", b"key-aaaaaaaaaaaaaaaa", b"key-bbbbbbbbbbbbbbbb"):
        assert secret not in raw
    assert b"o-visible-1" in raw  # only secrets are sealed
    assert await store.load("wf-sealed", "agent-1") == cmap
    # Another key does not open it; nor does the same bytes moved under another workflow.
    with pytest.raises(SealedValueError, match="does not hold"):
        await ContextMapArchive(redis_maps, cipher=DataCipher.from_text(generate_data_key())).load("wf-sealed", "agent-1")
    moved = raw.replace(b"wf-sealed", b"wf-stolen")
    await redis_client.set(redis_maps.key("wf-stolen", "agent-1"), moved)
    with pytest.raises(SealedValueError, match="copied from another workflow"):
        await store.load("wf-stolen", "agent-1")

async def test_keyring_is_shared_through_redis(redis_client: aioredis.Redis, key_prefix: str) -> None:
    shared = KeyDirectory(RedisKeyringStore(redis_client, prefix=key_prefix))
    pairs = [generate_keypair(f"agent-{i}") for i in range(3)]
    for pair in pairs:
        await shared.publish(pair.agent_id, pair.public_key)
    keyring = await shared.load()
    assert keyring.to_dict() == Keyring({p.agent_id: p.public_key for p in pairs}).to_dict()


async def test_unreachable_redis_is_a_store_error() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        with pytest.raises(StoreUnavailable):
            await RedisContextMapStore(client).save("wf", "a", ContextMap("wf", "a").to_bytes())
        with pytest.raises(StoreUnavailable):
            await KeyDirectory(RedisKeyringStore(client)).load()
    finally:
        await client.aclose()
