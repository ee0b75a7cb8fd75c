"""Finished workflows age out of an agent: no view kept, no gossip map held, no digest sent, on real Kafka and Redis.

Four ``AgentWorker`` members (one per role), each with its own signed ``GossipNode`` persisting maps
to the real Redis, run sequential workflows on the real broker (``bench.memory``'s harness). After the
last one finished, nothing of them is tracked, held or gossiped; with retirement switched off (the
behaviour before issue 13) every finished workflow stays and is digested every period forever.
"""

from __future__ import annotations

import pytest

from bench.memory import run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


async def test_finished_workflows_are_forgotten_and_no_longer_gossiped(kafka_bootstrap: str, redis_url: str) -> None:
    rows = await run(3, retire=True, kafka=kafka_bootstrap, redis_url=redis_url, settle_s=3.0)
    done, _rss, tracked, maps, digests, _rate = rows[-1]
    assert done == 3
    assert (tracked, maps, digests) == (0, 0, 0), f"finished workflows still held or gossiped: {rows}"


async def test_without_retirement_they_pile_up(kafka_bootstrap: str, redis_url: str) -> None:
    rows = await run(3, retire=False, kafka=kafka_bootstrap, redis_url=redis_url, settle_s=3.0)
    _done, _rss, tracked, maps, digests, _rate = rows[-1]
    assert tracked >= 3 and maps >= 3 and digests >= 3, rows
