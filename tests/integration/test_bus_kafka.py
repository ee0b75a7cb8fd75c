"""The Bus contract and failover against a real Kafka broker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mesh.bus import Bus, KafkaBus, SubscriptionOptions
from protocols import Topics
from tests.contracts.bus_contract import BusContract, MakeBus, drain, failed

pytestmark = pytest.mark.integration


class TestKafkaBus(BusContract):
    @pytest.fixture
    async def make_bus(self, kafka_bootstrap: str) -> AsyncIterator[MakeBus]:
        made: list[KafkaBus] = []

        async def make(topics: Topics) -> Bus:
            bus = KafkaBus(kafka_bootstrap, topics=topics, partitions=3, client_id=f"test-{len(made)}")
            await bus.start()
            made.append(bus)
            return bus

        yield make
        for bus in made:
            await bus.aclose()


async def test_sigkilled_member_partitions_move_without_losing_messages(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics(prefix=f"kill{os.getpid()}{int(time.time())}")
    bus = KafkaBus(kafka_bootstrap, topics=topics, partitions=4, client_id="survivor")
    await bus.start()
    log = tmp_path / "processed.log"
    log.touch()
    member = subprocess.Popen(  # noqa: ASYNC220 - the victim must be a separate OS process
        [sys.executable, str(Path(__file__).with_name("group_member.py")), kafka_bootstrap,
         topics.prefix, "g", "victim", str(log), "0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert member.stdout is not None
        assert member.stdout.readline().strip() == b"joined"
        n = 200
        for i in range(n):
            await bus.publish(topics.workflow_events, failed(i, wf=f"wf-{i % 17}"))
        # Let the victim process part of the stream, then SIGKILL it mid-batch.
        deadline = time.monotonic() + 30
        while len(log.read_text().splitlines()) < 20:
            assert time.monotonic() < deadline, "victim processed nothing"
            await asyncio.sleep(0.05)
        member.send_signal(signal.SIGKILL)
        member.wait(timeout=10)
        killed_at = time.monotonic()
        done_by_victim = {int(line.split()[0]) for line in log.read_text().splitlines()}

        survivor = await bus.subscribe(
            [topics.workflow_events], group="g", member="survivor",
            options=SubscriptionOptions(session_timeout_ms=6000, heartbeat_interval_ms=500),
        )
        remaining = set(range(n)) - done_by_victim
        seen: set[int] = set()
        deadline = time.monotonic() + 60
        while not remaining <= seen:
            assert time.monotonic() < deadline, f"lost: {sorted(remaining - seen)[:10]}"
            for d in await survivor.poll(timeout_ms=200):
                seen.add(d.envelope.payload["turns"])
                await survivor.commit(d)
        failover_s = time.monotonic() - killed_at
        # At-least-once: every message the victim did not finish reached the survivor; at most the
        # victim's in-flight message (processed, not yet committed) is seen twice.
        assert remaining <= seen
        assert len(seen & done_by_victim) <= 1
        assert failover_s < 30
    finally:
        if member.poll() is None:
            member.kill()
            member.wait(timeout=10)
        if member.stdout is not None:
            member.stdout.close()
        await bus.aclose()


async def test_consumer_survives_a_stream_of_bad_input(kafka_bootstrap: str) -> None:
    topics = Topics(prefix=f"bad{os.getpid()}{int(time.time())}")
    bus = KafkaBus(kafka_bootstrap, topics=topics, partitions=1)
    await bus.start()
    try:
        sub = await bus.subscribe([topics.workflow_events], group="g")
        dlq = await bus.subscribe([topics.dead_letter], group="d")
        for i, raw in enumerate([b"", b"\x93\x01", b"\xff" * 10, None]):
            await bus.publish_raw(topics.workflow_events, raw, key=f"k{i}")
            await bus.publish(topics.workflow_events, failed(i, wf=f"k{i}"))
        got = await drain(sub, 4)
        assert sorted(d.envelope.payload["turns"] for d in got) == [0, 1, 2, 3]
        letters = await drain(dlq, 4)
        assert {d.envelope.payload["reason"] for d in letters} <= {"malformed", "structure"}
    finally:
        await bus.aclose()
