"""One dead letter per bad record across consumer groups, on real Kafka and Redis.

The claim contract (exactly one winner among concurrent claimers, per record) is
``tests/contracts/dead_letter_claims_contract.py``, run on Redis in ``test_store_redis.py``. Here:
what only Redis claims do (expire, grant when Redis is away), and several consumer groups of a
real Kafka topic that read the same generated hostile records, with exactly one dead letter per
record coming out.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter

import pytest
import redis.asyncio as aioredis

from mesh.bus import KafkaBus, RedisDeadLetterClaims, SubscriptionOptions
from mesh.security import EnvelopeSigner, generate_keypair
from mesh.store import RedisConnection
from protocols import DeadLetter, Topics
from tests.fuzz.hostile import hostile_corpus

pytestmark = pytest.mark.integration


async def test_a_claim_expires_after_its_ttl(redis_url: str, key_prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        claims = RedisDeadLetterClaims(client, prefix=key_prefix, ttl_s=1)
        assert await claims.claim("t", 0, 1) and not await claims.claim("t", 0, 1)
        await asyncio.sleep(1.2)
        assert await claims.claim("t", 0, 1)  # forgotten: the log has long moved past it
    finally:
        await client.aclose()


async def test_unreachable_redis_grants_the_claim() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        assert await RedisDeadLetterClaims(client).claim("t", 0, 1)  # a duplicate beats a lost letter
    finally:
        await client.aclose()


async def test_refused_credentials_grant_the_claim(redis_url: str) -> None:
    claims = RedisDeadLetterClaims.connect(
        RedisConnection(url=redis_url, username="nobody", password="wrong"), socket_timeout_s=2
    )
    try:
        assert await claims.claim("t", 0, 1)
    finally:
        await claims.aclose()



async def test_groups_on_kafka_dead_letter_each_bad_record_once(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, key_prefix: str,
) -> None:
    topics = Topics(prefix=topic_prefix)
    redis = aioredis.Redis.from_url(redis_url)
    buses = [KafkaBus(kafka_bootstrap, topics=topics, client_id=f"c{i}", partitions=2,
                      dead_letters=RedisDeadLetterClaims(redis, prefix=key_prefix)) for i in range(3)]
    reader_bus = KafkaBus(kafka_bootstrap, topics=topics, client_id="reader", partitions=2)
    signer = EnvelopeSigner("chaos-test", generate_keypair("chaos-test").private_key)
    corpus = hostile_corpus(random.Random(7), workflow_id="wf", sign=signer.sign, size=30)
    # Records a reader without a signature check would accept are not bad here: keep the refused.
    from protocols import EnvelopeCodec, EnvelopeDecodeError

    bad = []
    for _label, raw in corpus:
        try:
            EnvelopeCodec().decode(raw or b"")
        except EnvelopeDecodeError:
            bad.append(raw)
    assert len(bad) >= 15
    opts = SubscriptionOptions(session_timeout_ms=10000, heartbeat_interval_ms=1000)
    try:
        for bus in [*buses, reader_bus]:
            await bus.start()
        subs = [await bus.subscribe([topics.workflow_events], group=f"{topic_prefix}.g{i}", options=opts)
                for i, bus in enumerate(buses)]
        dlq = await reader_bus.subscribe([topics.dead_letter], group=f"{topic_prefix}.dlq", options=opts)
        for raw in bad:
            await reader_bus.publish_raw(topics.workflow_events, raw, key="wf")
        loop = asyncio.get_running_loop()
        seen: Counter[str] = Counter()
        deadline = loop.time() + 40
        quiet_until: float | None = None
        while loop.time() < deadline and (quiet_until is None or loop.time() < quiet_until):
            for sub in subs:
                assert await sub.poll(timeout_ms=50) == []
            for d in await dlq.poll(timeout_ms=50):
                letter = d.envelope.payload_model(DeadLetter)
                seen[hashlib.sha256(letter.raw).hexdigest()] += 1
            if quiet_until is None and sum(seen.values()) >= len(bad):
                quiet_until = loop.time() + 3
        expected = Counter(hashlib.sha256((raw or b"")[:65536]).hexdigest() for raw in bad)  # the letter keeps 64 KiB
        assert seen == expected, f"{sum(seen.values())} letters for {len(bad)} bad records in 3 groups"
    finally:
        for bus in [*buses, reader_bus]:
            await bus.aclose()
        await redis.aclose()

