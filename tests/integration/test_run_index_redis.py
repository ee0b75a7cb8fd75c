"""RunIndex contract against a real Redis, plus its documented key layout."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from mesh.errors import StoreUnavailable
from mesh.store import RedisRunIndex, RunIndex, RunSummary
from tests.contracts.run_index_contract import IndexFactory, RunIndexContract

pytestmark = pytest.mark.integration


class TestRedisRunIndex(RunIndexContract):
    @pytest.fixture
    async def index(self, redis_url: str, key_prefix: str) -> AsyncIterator[RunIndex]:
        idx = RedisRunIndex.from_url(redis_url, key_prefix=key_prefix)
        yield idx
        await idx.aclose()

    @pytest.fixture
    def index_factory(self, redis_url: str, key_prefix: str) -> IndexFactory:
        async def make() -> RunIndex:
            return RedisRunIndex.from_url(redis_url, key_prefix=f"{key_prefix}{uuid.uuid4().hex[:8]}:")

        return make


async def test_schema_is_as_documented(redis_url: str, key_prefix: str) -> None:
    idx = RedisRunIndex.from_url(redis_url, key_prefix=key_prefix)
    summary = RunSummary(workflow_id="wf-9", name="n", status="running", events=3, updated_ms=1234)
    await idx.record(summary)
    raw = aioredis.Redis.from_url(redis_url)
    try:
        fields = await raw.hgetall(f"{key_prefix}run:{{wf-9}}")  # type: ignore[misc]
        assert fields[b"events"] == b"3" and fields[b"status"] == b"running" and fields[b"updated_ms"] == b"1234"
        assert RunSummary.from_json(fields[b"doc"]) == summary
        assert await raw.zscore(f"{key_prefix}runs", "wf-9") == 1234
        await idx.expire("wf-9", 100)
        assert 0 < await raw.ttl(f"{key_prefix}run:{{wf-9}}") <= 100
    finally:
        await raw.aclose()
        await idx.aclose()


async def test_unreachable_redis_is_a_store_error() -> None:
    idx = RedisRunIndex.from_url("redis://127.0.0.1:1/0", socket_timeout_s=0.5)
    with pytest.raises(StoreUnavailable, match="Redis unreachable"):
        await idx.get("wf")
    await idx.aclose()
