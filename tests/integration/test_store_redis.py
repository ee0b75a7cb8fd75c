"""Store contracts against a real Redis: checkpoints (also behind the journal), keyring, maps, votes,
dead-letter claims and the rate limiter."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mesh.errors import StoreAccessDenied, StoreUnavailable
from mesh.store import (
    JournalingStateStore,
    RedisConnection,
    RedisContextMapStore,
    RedisDeadLetterClaims,
    RedisKeyringStore,
    RedisRateLimiter,
    RedisStateStore,
    RedisStores,
    RedisVoteLedger,
)
from tests.contracts.context_map_contract import ContextMapStoreContract
from tests.contracts.dead_letter_claims_contract import DeadLetterClaimsContract
from tests.contracts.keyring_contract import KeyringStoreContract
from tests.contracts.rate_limiter_contract import MakeLimiter, RateLimiterContract
from tests.contracts.store_contract import StateStoreContract
from tests.contracts.vote_ledger_contract import VoteLedgerContract

pytestmark = pytest.mark.integration


class TestRedisStateStore(StateStoreContract):
    @pytest.fixture
    async def store(self, redis_url: str) -> AsyncIterator[RedisStateStore]:
        s = RedisStateStore.from_url(redis_url, key_prefix=f"test:{uuid.uuid4().hex[:8]}:", keep_versions=5)
        yield s
        await s.delete_prefix()
        await s.aclose()


class TestJournalingStateStoreOverRedis(StateStoreContract):
    @pytest.fixture
    async def store(self, redis_url: str, tmp_path: Path) -> AsyncIterator[JournalingStateStore]:
        inner = RedisStateStore.from_url(redis_url, key_prefix=f"test:{uuid.uuid4().hex[:8]}:", keep_versions=5)
        s = JournalingStateStore(inner, tmp_path / "journal", agent_id="a")
        s.keep_versions = 5  # type: ignore[attr-defined]  # read by the trimming test: the inner store's
        s.start()
        yield s
        await s.aclose()
        await inner.delete_prefix()
        await inner.aclose()


@pytest.fixture
async def stores(redis_url: str, key_prefix: str) -> AsyncIterator[RedisStores]:
    s = RedisStores(RedisConnection(url=redis_url), prefix=key_prefix)
    yield s
    await s.aclose()


class TestRedisKeyringStore(KeyringStoreContract):
    @pytest.fixture
    def keyring_store(self, stores: RedisStores) -> RedisKeyringStore:
        return stores.keyring


class TestRedisContextMapStore(ContextMapStoreContract):
    @pytest.fixture
    def maps(self, stores: RedisStores) -> RedisContextMapStore:
        return stores.context_maps


class TestRedisVoteLedger(VoteLedgerContract):
    @pytest.fixture
    def ledger(self, stores: RedisStores) -> RedisVoteLedger:
        return stores.vote_ledger("v0", ttl_s=60)


class TestRedisDeadLetterClaims(DeadLetterClaimsContract):
    @pytest.fixture
    def claims(self, stores: RedisStores) -> RedisDeadLetterClaims:
        return stores.dead_letter_claims(ttl_s=60)


class TestRedisRateLimiter(RateLimiterContract):
    @pytest.fixture
    async def make_limiter(self, stores: RedisStores) -> AsyncIterator[MakeLimiter]:
        made: list[RedisRateLimiter] = []
        await stores.ping()  # connected (a cluster client maps the slots first): waits are the limiter's

        def make(**options: Any) -> RedisRateLimiter:
            made.append(stores.rate_limiter(**options))
            return made[-1]

        yield make
        for limiter in made:  # its two keys share a hash tag (one slot: one DEL), outside the key prefix
            await stores.client.delete(limiter.calls_key, limiter.hold_key)


async def test_one_error_policy_for_every_redis_adapter() -> None:
    # Every adapter maps an unreachable server to StoreUnavailable, through the one redis_call.
    stores = RedisStores(RedisConnection(url="redis://127.0.0.1:1/0"), socket_timeout_s=0.5)
    try:
        with pytest.raises(StoreUnavailable, match="Redis unreachable"):
            await stores.keyring.records()
        with pytest.raises(StoreUnavailable, match="Redis unreachable"):
            await stores.context_maps.save("wf", "a", b"x")
        with pytest.raises(StoreUnavailable, match="Redis unreachable"):
            await stores.vote_ledger("v0").endorse("wf", "s", 1, "h")
        # Two seams degrade instead: a duplicate dead letter beats a lost one, and a reasoner
        # call goes through unpaced (the provider's own limits still apply).
        assert await stores.dead_letter_claims().claim("t", 0, 1) is True
        limiter = stores.rate_limiter(rpm=1)
        tickets = [await limiter.acquire(10) for _ in range(2)]
        assert [t.member for t in tickets] == ["", ""] and all(t.waited_s < 5 for t in tickets)
        await limiter.settle(tickets[0], 20)
        await limiter.hold(1.0)
    finally:
        await stores.aclose()


async def test_keys_keep_their_layout(stores: RedisStores, redis_url: str, key_prefix: str) -> None:
    # The console reads these keys directly: ctx:{wf}:<replica> and votes:<voter>:{wf}.
    import redis.asyncio as aioredis

    await stores.context_maps.save("wf-1", "agent-1", b"map")
    await stores.vote_ledger("v0").record_ballot("wf-1", "p", "accept", "ok")
    await stores.keyring.publish("agent-1", "record")
    assert await stores.dead_letter_claims(ttl_s=60).claim("wf-events", 2, 17)
    limiter = stores.rate_limiter(rpm=5)
    await limiter.acquire(10)
    await limiter.hold(5.0)
    async with aioredis.Redis.from_url(redis_url) as raw:
        assert await raw.get(f"{key_prefix}ctx:{{wf-1}}:agent-1") == b"map"
        assert await raw.smembers(f"{key_prefix}ctxidx:agent-1") == {b"wf-1"}
        assert await raw.hget(f"{key_prefix}votes:v0:{{wf-1}}", "ballot:p") == b"accept\nok"
        assert await raw.hget(f"{key_prefix}keyring", "agent-1") == b"record"
        assert await raw.get(f"{key_prefix}dlq:wf-events:2:17") == b"1"
        assert 0 < await raw.ttl(f"{key_prefix}dlq:wf-events:2:17") <= 60
        # The limiter's keys share one hash tag (one slot); "mesh" and "mesh:" name the same ones.
        tag = "{" + key_prefix.removesuffix(":") + ":llm}"
        assert (limiter.calls_key, limiter.hold_key) == (f"{tag}:calls", f"{tag}:hold")
        assert RedisRateLimiter(raw, prefix=key_prefix.removesuffix(":")).calls_key == limiter.calls_key
        assert await raw.zcard(limiter.calls_key) == 1
        assert int(await raw.get(limiter.hold_key)) > 0
        await raw.delete(limiter.calls_key, limiter.hold_key)


async def test_refused_credentials_are_access_denied_for_every_adapter(redis_url: str) -> None:
    stores = RedisStores(RedisConnection(url=redis_url, username="nobody", password="wrong"), socket_timeout_s=2)
    try:
        with pytest.raises(StoreAccessDenied):
            await stores.keyring.publish("a", "r")
        with pytest.raises(StoreAccessDenied):
            await stores.context_maps.workflows("a")
    finally:
        await stores.aclose()


async def test_unreachable_redis_is_a_store_error() -> None:
    store = RedisStateStore.from_url("redis://127.0.0.1:1/0", socket_timeout_s=0.5)
    with pytest.raises(StoreUnavailable, match="Redis unreachable"):
        await store.write("k", b"x", epoch=1)
    await store.aclose()


async def test_clients_send_no_client_setinfo_that_redis_7_0_refuses(redis_url: str) -> None:
    # Redis < 7.2 answers CLIENT SETINFO with an error; redis-py sends it on every new connection,
    # and on a connection made while the server restarted that error surfaced as the reply to the
    # next command (a campaign's report step failed with "unknown subcommand 'SETINFO'"). The
    # server counts every error reply it sends (INFO errorstats): a new client must add none.
    import redis

    from mesh.store.redis import RedisConnection

    def errors() -> int:
        with redis.Redis.from_url(redis_url, lib_name=None, lib_version=None) as r:
            return sum(int(v["count"]) for k, v in r.info("errorstats").items() if k.startswith("errorstat_"))

    before = errors()
    for _ in range(3):
        client = RedisConnection(url=redis_url).client()
        try:
            await client.set("mesh-identity-probe", b"1")
        finally:
            await client.aclose()
    assert errors() == before
