"""``mesh status`` latency: the run index (one Redis key) against replaying the workflow log.

Run ``python -m bench.status`` (``--quick`` for 10 and 100 workflows, ``--check`` to exit 1 when a
target is missed). For each size it fills a fresh topic with that many workflows (submitted, a step
started, completed: 3 events each), folds them into the run index exactly as agents do
(``WorkflowView`` -> ``run_summary`` -> ``RedisRunIndex.record``), then times what ``mesh status``
does after connecting, both ways, in the same run:

* before: ``MeshClient.status``, a throwaway consumer group reading the log from offset zero until
  the asked workflow's ``WorkflowCompleted`` (the last one submitted, so the whole log is read);
* after: ``MeshClient.summary``, one HGET of the run index.

Both sides start from a connected client; process start-up and connecting are the same for both and
are left out. An unknown workflow costs the replay plus ``--read-s`` seconds of quiet on the log
side (not measured here), and one HGET on the index side.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

from bench.common import (
    Stats,
    Target,
    command_line,
    console,
    delete_keys,
    delete_topics,
    exit_code,
    print_header,
    print_table,
    print_targets,
    ratio,
    run_id,
    services,
)
from mesh.bus import KafkaBus
from mesh.runtime.client import MeshClient
from mesh.runtime.view import WorkflowView, run_summary
from mesh.store import RedisRunIndex
from protocols import (
    Envelope,
    StepStarted,
    Topics,
    WorkflowCompleted,
    WorkflowSpec,
    WorkflowSubmitted,
    deterministic_event_id,
)

SIZES = (10, 1_000, 10_000)
QUICK_SIZES = (10, 100)
TARGET_INDEX_P95_MS = 5.0
TARGET_SPEEDUP = 100.0

SPEC = WorkflowSpec.parse({
    "name": "bench-status",
    "steps": [{"id": "a", "role": "fetch"}, {"id": "b", "role": "report", "depends_on": ["a"]}],
})


def _events(wf: str) -> list[Envelope]:
    return [
        Envelope.of(WorkflowSubmitted(spec=SPEC, submitted_by="bench"), sender="bench", workflow_id=wf,
                    id=deterministic_event_id(wf, "submitted")),
        Envelope.of(StepStarted(role="fetch", owner="fetch-1", epoch=1), sender="fetch-1", workflow_id=wf,
                    step_id="a", id=deterministic_event_id(wf, "a", "started")),
        Envelope.of(WorkflowCompleted(status="failed", steps=2), sender="fetch-1", workflow_id=wf,
                    id=deterministic_event_id(wf, "workflow", "completed")),
    ]


async def _fill(bus: KafkaBus, topics: Topics, index: RedisRunIndex, n: int) -> str:
    """Publish ``n`` workflows, then index them; return the id of the last one."""
    views = []
    pending: list[asyncio.Future[None]] = []
    for i in range(n):
        view = WorkflowView(f"wf-{i:06d}")
        for env in _events(view.workflow_id):
            pending.append(asyncio.ensure_future(bus.publish(topics.workflow_events, env)))
            view.apply(env, at_ms=int(time.time() * 1000))
        views.append(view)
        if len(pending) >= 600:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)
    for start in range(0, len(views), 16):  # a few Redis connections, not one per workflow
        await asyncio.gather(*(index.record(run_summary(v)) for v in views[start : start + 16]))
    return views[-1].workflow_id


async def _measure_size(bootstrap: str, redis_url: str, n: int, log_reps: int, index_reps: int) -> list[object]:
    prefix = run_id(f"status{n}")
    topics = Topics(prefix=prefix)
    bus = KafkaBus(bootstrap, topics=topics, client_id="bench-status", partitions=6, linger_ms=5)
    index = RedisRunIndex.from_url(redis_url, key_prefix=f"{prefix}:", socket_timeout_s=30.0)
    await bus.start()
    try:
        t0 = time.perf_counter()
        wf = await _fill(bus, topics, index, n)
        fill_s = time.perf_counter() - t0
        client = MeshClient(bus, topics=topics, client_id="bench-status", index=index)
        log_ms = []
        for _ in range(log_reps):
            t = time.perf_counter()
            view = await client.status(wf, read_s=5.0)
            log_ms.append((time.perf_counter() - t) * 1000)
            assert view.finished is not None, f"log replay did not reach {wf}'s end"
        index_ms = []
        for _ in range(index_reps):
            t = time.perf_counter()
            run, source = await client.summary(wf)
            index_ms.append((time.perf_counter() - t) * 1000)
            assert run is not None and source == "index" and run.status == "failed"
        log, idx = Stats.of(log_ms), Stats.of(index_ms)
        return [n, 3 * n, round(fill_s, 1), log.p50, log.max, idx.p50, idx.p95, ratio(log.p50, idx.p50)]
    finally:
        await index.aclose()
        await bus.aclose()
        await delete_topics(bootstrap, prefix)
        await delete_keys(redis_url, f"{prefix}:")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the status benchmark; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m bench.status", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--quick", action="store_true", help="10 and 100 workflows only (CI smoke)")
    parser.add_argument("--sizes", type=str, default="", help="comma-separated workflow counts (default 10,1000,10000)")
    parser.add_argument("--log-reps", type=int, default=3, help="log replays per size")
    parser.add_argument("--index-reps", type=int, default=200, help="index reads per size")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s] if args.sizes else list(QUICK_SIZES if args.quick else SIZES)
    svc = services()

    async def go() -> list[list[object]]:
        return [await _measure_size(svc.kafka_bootstrap, svc.redis_url, n, args.log_reps, args.index_reps)
                for n in sizes]

    rows = asyncio.run(go())
    print_header("bench.status: mesh status latency, run index vs log replay", "bench.status", argv,
                 f"services: {svc.source} (kafka {svc.kafka_bootstrap}, redis {svc.redis_url})")
    print_table(
        "mesh status of the last-submitted workflow (ms, connected client)",
        ["workflows in log", "events", "fill s", "log replay p50 ms", "log replay max ms",
         "index p50 ms", "index p95 ms", "x faster (p50)"],
        rows,
        command=command_line("bench.status", argv),
        caption=f"log replay: {args.log_reps} reps per size (a new consumer group each, from offset 0); "
                f"index: {args.index_reps} reads (one HGET)",
    )
    largest = rows[-1]
    targets = [
        Target(f"index p95 <= {TARGET_INDEX_P95_MS:g} ms at {largest[0]:,} workflows",
               float(largest[6]) <= TARGET_INDEX_P95_MS, f"{float(largest[6]):.2f} ms"),  # type: ignore[arg-type]
        Target(f"index >= {TARGET_SPEEDUP:g}x faster than log replay at {largest[0]:,} workflows (p50)",
               float(largest[7]) >= TARGET_SPEEDUP, f"{float(largest[7]):.0f}x"),  # type: ignore[arg-type]
    ]
    print_targets(targets)
    console.print()
    return exit_code(targets, check=args.check)


if __name__ == "__main__":
    sys.exit(main())
