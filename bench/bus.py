"""One-hop latency and throughput of the Kafka bus, side by side with raw aiokafka.

Run ``python -m bench.bus`` (``--quick`` for fewer samples, ``--check`` to exit 1 when a target
is missed). Against the real broker (``mesh dev`` or ``MESH_KAFKA_BOOTSTRAP``):

1. latency, one message in flight: publish an envelope carrying its send time
   (``TraceEvent`` attributes), consume it as a consumer-group member in the same process on a
   separate asyncio task, decode its payload, and take publish -> delivered; each delivery is
   committed, as agents do. Producer ``linger_ms=0``.
2. throughput: publish N envelopes concurrently (``asyncio.gather`` in batches) and consume them
   all (no per-message commits on either side); msgs/s and MB/s from the first publish to the
   last delivery.

Ours is ``mesh.bus.KafkaBus`` (msgpack envelope codec, trace headers, pydantic payload on the
consumer side); the baseline is raw ``AIOKafkaProducer``/``AIOKafkaConsumer`` with the same
settings (acks=all, idempotent, linger 0, same fetch wait, manual commits) and raw bytes of the
same size, so the ratio is the envelope and codec overhead. Latency rounds of the two alternate,
so both see the same load. Each run uses its own topics (deleted afterwards).

Target: ours one-hop p50 <= 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import sys
import time
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.common import (
    Stats,
    Target,
    broker_config,
    command_line,
    console,
    delete_topics,
    exit_code,
    print_header,
    print_table,
    print_targets,
    ratio,
    run_id,
    services,
)
from mesh.bus import KafkaBus, KafkaSubscription, SubscriptionOptions
from protocols import Envelope, EnvelopeCodec, Topics, TraceEvent

__all__ = ["bench_envelope", "envelope_size", "main", "parse_raw", "raw_value"]

TARGET_P50_MS = 5.0
_LINGER = "group.coordinator.append.linger.ms"
WF = "wf-bench-bus"
_RAW_HEAD = struct.Struct(">qq")
_DETAIL = "fetch_patient ok: page 3 of 10, 5 records, 0 retries; " * 3

OnMessage = Callable[[int, int], None]
"""Called by a consumer task with (seq, sent_ns) of each message, right after it is decoded."""


def bench_envelope(seq: int, sent_ns: int) -> Envelope:
    """A trace-event envelope carrying its sequence number and send time (``perf_counter_ns``)."""
    event = TraceEvent(name="bench.hop", attributes={"seq": seq, "sent_ns": sent_ns, "detail": _DETAIL})
    return Envelope.of(event, sender="bench", workflow_id=WF, step_id="fetch")


def envelope_size() -> int:
    """Bytes of one encoded benchmark envelope on the wire (value only, headers aside)."""
    return len(EnvelopeCodec().encode(bench_envelope(0, time.perf_counter_ns())))


def raw_value(seq: int, sent_ns: int, size: int) -> bytes:
    """Raw bytes for the baseline: the same two numbers, padded to ``size`` bytes."""
    head = _RAW_HEAD.pack(seq, sent_ns)
    return head + b"x" * max(0, size - len(head))


def parse_raw(value: bytes) -> tuple[int, int]:
    """(seq, sent_ns) back from ``raw_value``."""
    seq, sent_ns = _RAW_HEAD.unpack_from(value)
    return seq, sent_ns


# -- the two sides -------------------------------------------------------------------------------


class _Ours:
    """KafkaBus producer + one KafkaSubscription consumer task."""

    def __init__(self, bootstrap: str, topic: str, group: str, *, commit: bool) -> None:
        self.topic, self.group, self.commit = topic, group, commit
        self.label = "ours: KafkaBus envelopes" + (", commit each" if commit else "")
        self.bus = KafkaBus(bootstrap, client_id=f"{group}-p", create_topics=[], linger_ms=0)
        self.sub: KafkaSubscription | None = None
        self.task: asyncio.Task[None] | None = None
        self.on_message: OnMessage = lambda seq, sent: None
        self.commit_ms: list[float] = []

    async def start(self) -> None:
        await self.bus.start()
        self.sub = await self.bus.subscribe([self.topic], group=self.group, options=SubscriptionOptions())
        self.task = asyncio.create_task(self._consume())

    async def publish(self, seq: int, sent_ns: int) -> None:
        await self.bus.publish(self.topic, bench_envelope(seq, sent_ns))

    async def _consume(self) -> None:
        assert self.sub is not None
        while True:
            for d in await self.sub.poll(timeout_ms=100):
                attrs = d.envelope.payload_model(TraceEvent).attributes
                self.on_message(int(attrs["seq"]), int(attrs["sent_ns"]))
                if self.commit:
                    t0 = time.perf_counter()
                    await self.sub.commit(d)
                    self.commit_ms.append((time.perf_counter() - t0) * 1000)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.bus.aclose()


class _Raw:
    """Raw aiokafka producer and consumer, configured like KafkaBus and KafkaSubscription."""

    def __init__(self, bootstrap: str, topic: str, group: str, *, commit: bool, size: int) -> None:
        self.topic, self.group, self.commit, self.size = topic, group, commit, size
        self.label = "baseline: raw aiokafka bytes" + (", commit each" if commit else "")
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, client_id=f"{group}-p", acks="all", enable_idempotence=True,
            linger_ms=0, max_request_size=EnvelopeCodec().max_bytes + 4096, request_timeout_ms=30000,
        )
        opts = SubscriptionOptions()
        self.consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=group, client_id=f"{group}-c",
            enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=opts.session_timeout_ms, heartbeat_interval_ms=opts.heartbeat_interval_ms,
            max_poll_interval_ms=opts.max_poll_interval_ms, max_poll_records=opts.max_poll_records,
            rebalance_timeout_ms=max(opts.session_timeout_ms, 10000), fetch_max_wait_ms=100,
            metadata_max_age_ms=5000,
        )
        self.task: asyncio.Task[None] | None = None
        self.on_message: OnMessage = lambda seq, sent: None
        self.commit_ms: list[float] = []

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()
        self.task = asyncio.create_task(self._consume())

    async def publish(self, seq: int, sent_ns: int) -> None:
        await self.producer.send_and_wait(self.topic, raw_value(seq, sent_ns, self.size), key=WF.encode())

    async def _consume(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100, max_records=500)
            for tp, records in batches.items():
                for rec in records:
                    self.on_message(*parse_raw(rec.value or b""))
                    if self.commit:
                        t0 = time.perf_counter()
                        await self.consumer.commit({tp: rec.offset + 1})
                        self.commit_ms.append((time.perf_counter() - t0) * 1000)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.consumer.stop()
        await self.producer.stop()


Side = _Ours | _Raw


# -- measurements --------------------------------------------------------------------------------


async def _one_hop(side: Side, seq: int, *, timeout_s: float) -> tuple[float, float]:
    """Publish one message and wait for its delivery: (ack ms, delivered ms)."""
    loop = asyncio.get_running_loop()
    delivered: asyncio.Future[int] = loop.create_future()

    def on_message(got: int, _sent: int) -> None:
        if got == seq and not delivered.done():
            delivered.set_result(time.perf_counter_ns())

    side.on_message = on_message
    t0 = time.perf_counter_ns()
    await side.publish(seq, t0)
    acked = time.perf_counter_ns()
    recv = await asyncio.wait_for(delivered, timeout_s)
    return (acked - t0) / 1e6, (recv - t0) / 1e6


async def _latency(
    bootstrap: str, prefix: str, n: int, warmup: int, rounds: int
) -> tuple[list[list[object]], float]:
    size = envelope_size()
    # Without commits: the hop itself. With a commit after each delivery (as agents do): the
    # consumer task is busy committing when the next message lands, so the hop includes it.
    pairs: list[tuple[Side, Side]] = [
        (
            _Ours(bootstrap, f"{prefix}.lat-ours{suffix}", f"{prefix}.lat-ours{suffix}", commit=commit),
            _Raw(bootstrap, f"{prefix}.lat-raw{suffix}", f"{prefix}.lat-raw{suffix}", commit=commit, size=size),
        )
        for suffix, commit in (("", False), ("-c", True))
    ]
    sides = [side for pair in pairs for side in pair]
    acks: dict[str, list[float]] = {s.label: [] for s in sides}
    hops: dict[str, list[float]] = {s.label: [] for s in sides}
    for side in sides:
        await side.start()
    try:
        seq = 0
        for side in sides:  # the first delivery waits for the group join; warm every side up
            for i in range(warmup):
                seq += 1
                await _one_hop(side, seq, timeout_s=60.0 if i == 0 else 10.0)
            side.commit_ms.clear()
        per_round = max(1, n // rounds)
        for r in range(rounds):
            for side in sides if r % 2 == 0 else reversed(sides):
                for _ in range(per_round):
                    seq += 1
                    ack_ms, hop_ms = await _one_hop(side, seq, timeout_s=10.0)
                    acks[side.label].append(ack_ms)
                    hops[side.label].append(hop_ms)
    finally:
        for side in sides:
            await side.stop()
    rows: list[list[object]] = []
    for ours, raw in pairs:
        raw_p50 = Stats.of(hops[raw.label]).p50
        for side in (ours, raw):
            h, a = Stats.of(hops[side.label]), Stats.of(acks[side.label])
            commit = Stats.of(side.commit_ms).p50 if side.commit_ms else float("nan")
            rows.append([side.label, size, h.n, a.p50, commit, h.p50, h.p95, h.p99, h.mean, ratio(h.p50, raw_p50)])
    return rows, Stats.of(hops[pairs[0][0].label]).p50


async def _flood(side: Side, n: int, batch: int) -> tuple[float, float]:
    """Publish ``n`` messages in concurrent batches; (publish s, until all consumed s)."""
    await _one_hop(side, -1, timeout_s=60.0)  # joined and assigned before the clock starts
    seen = 0
    all_in = asyncio.Event()

    def on_message(seq: int, _sent: int) -> None:
        nonlocal seen
        if seq >= 0:
            seen += 1
            if seen >= n:
                all_in.set()

    side.on_message = on_message
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        await asyncio.gather(*(side.publish(i, 0) for i in range(start, min(n, start + batch))))
    published_s = time.perf_counter() - t0
    await asyncio.wait_for(all_in.wait(), 120.0)
    return published_s, time.perf_counter() - t0


async def _throughput(bootstrap: str, prefix: str, n: int, batch: int) -> list[list[object]]:
    size = envelope_size()
    rows: list[list[object]] = []
    rates: dict[str, float] = {}
    for side in (
        _Ours(bootstrap, f"{prefix}.thr-ours", f"{prefix}.thr-ours", commit=False),
        _Raw(bootstrap, f"{prefix}.thr-raw", f"{prefix}.thr-raw", commit=False, size=size),
    ):
        await side.start()
        try:
            published_s, total_s = await _flood(side, n, batch)
        finally:
            await side.stop()
        rates[side.label] = n / total_s
        rows.append([side.label, n, size, published_s, total_s, n / total_s, n * size / total_s / 1e6])
    raw_rate = rates["baseline: raw aiokafka bytes"]
    for row in rows:
        row.append(raw_rate / rates[str(row[0])])
    return rows


async def _run(
    bootstrap: str, args: argparse.Namespace
) -> tuple[list[list[object]], float, list[list[object]], str]:
    prefix = run_id("bus")
    topics = [f"{prefix}.{name}" for name in ("lat-ours", "lat-raw", "lat-ours-c", "lat-raw-c", "thr-ours", "thr-raw")]
    admin = KafkaBus(bootstrap, topics=Topics(prefix=prefix), create_topics=[])
    try:
        # One partition each: one workflow's events share a partition in the mesh too.
        await admin.ensure_topics(topics, partitions=1)
        lat_rows, p50 = await _latency(bootstrap, prefix, args.samples, warmup=20, rounds=4)
        thr_rows = await _throughput(bootstrap, prefix, args.messages, args.batch)
        linger = (await broker_config(bootstrap, [_LINGER])).get(_LINGER, "?")
    finally:
        await delete_topics(bootstrap, prefix)
    return lat_rows, p50, thr_rows, linger


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bus benchmark; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m bench.bus", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--quick", action="store_true", help="fewer samples (CI smoke)")
    parser.add_argument("--samples", type=int, default=0, help="latency samples per side (default 400, quick 80)")
    parser.add_argument("--messages", type=int, default=0, help="throughput messages per side (default 10000, quick 2000)")
    parser.add_argument("--batch", type=int, default=500, help="concurrent publishes per gather batch")
    args = parser.parse_args(argv)
    args.samples = args.samples or (80 if args.quick else 400)
    args.messages = args.messages or (2000 if args.quick else 10000)
    svc = services(need=("kafka",))
    lat_rows, p50, thr_rows, linger = asyncio.run(_run(svc.kafka_bootstrap, args))
    cmd = command_line("bench.bus", argv)
    print_header(
        "bench.bus: Kafka one-hop latency and throughput", "bench.bus", argv,
        f"broker {svc.kafka_bootstrap} ({svc.source}); producer acks=all, idempotent, linger_ms=0; "
        "consumer: a consumer-group member in the same process, on its own asyncio task; one partition per topic",
    )
    print_table(
        "1. one-hop latency, one message in flight (ms, publish -> delivered and decoded)",
        ["method", "bytes", "samples", "publish ack p50", "commit p50", "hop p50", "hop p95", "hop p99", "hop mean",
         "x raw (p50)"],
        lat_rows, command=cmd,
        caption=f"commit each: the consumer commits every delivery before polling again (as agents do); the broker's "
        f"group.coordinator.append.linger.ms is {linger}, which a commit waits out",
    )
    print_table(
        f"2. throughput: {args.messages:,} messages published in gather batches of {args.batch} and consumed (no commits)",
        ["method", "messages", "bytes", "publish s", "total s", "msgs/s", "MB/s", "x raw (time)"],
        thr_rows, command=cmd,
        caption="x raw = how many times longer than raw aiokafka for the same count (the envelope/codec overhead)",
    )
    targets = [
        Target(f"ours one-hop p50 <= {TARGET_P50_MS:g} ms (no commit in the path)", p50 <= TARGET_P50_MS, f"{p50:.2f} ms")
    ]
    print_targets(targets)
    console.print()
    return exit_code(targets, check=args.check)


if __name__ == "__main__":
    sys.exit(main())
