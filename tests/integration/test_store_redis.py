"""Store contract against a real Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from mesh.errors import StoreUnavailable
from mesh.store import RedisStateStore
from tests.contracts.store_contract import StateStoreContract

pytestmark = pytest.mark.integration


class TestRedisStateStore(StateStoreContract):
    @pytest.fixture
    async def store(self, redis_url: str) -> AsyncIterator[RedisStateStore]:
        s = RedisStateStore.from_url(redis_url, key_prefix=f"test:{uuid.uuid4().hex[:8]}:", keep_versions=5)
        yield s
        await s.delete_prefix()
        await s.aclose()


async def test_unreachable_redis_is_a_store_error() -> None:
    store = RedisStateStore.from_url("redis://127.0.0.1:1/0", socket_timeout_s=0.5)
    with pytest.raises(StoreUnavailable, match="Redis unreachable"):
        await store.write("k", b"x", epoch=1)
    await store.aclose()
