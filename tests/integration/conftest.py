"""Clients for integration tests; the services themselves come from ``tests/conftest.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient


@pytest.fixture
async def redis_client(redis_url: str, key_prefix: str) -> AsyncIterator[aioredis.Redis]:
    """An async Redis client; keep keys under ``key_prefix`` (deleted after the test)."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def kafka_admin(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started aiokafka admin client; name topics ``f"{topic_prefix}..."`` (deleted after the test)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="mesh-test-admin")
    await admin.start()
    yield admin
    await admin.close()



# Replicated Redis (a Cluster, a Sentinel set) on free ports: fixtures in tests/redis_ha.py.
from tests.redis_ha import make_redis_cluster, make_redis_sentinel, redis_cluster  # noqa: E402, F401
