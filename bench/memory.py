"""Agent memory over many sequential workflows (invariant 10: cost stays flat as work grows).

Run ``python -m bench.memory`` (``--workflows 1000`` by default; ``--compare`` also runs up to
``--compare-workflows`` (200) workflows with finished-workflow retirement switched off, i.e. the
behaviour before issue 13's defect 7, which slows down as it grows).

One agent of each role (identity, fetch, validate, report), each a real ``AgentWorker`` with its
own ``Peer`` (signed gossip, digests every 500 ms, maps persisted to Redis), all in this
process on the real Kafka broker and Redis, against an in-process mock EHR; N reconciliation
workflows (2 patients, page size 2) run one after another. Printed at 0/25/50/75/100 % of N: this
process's RSS, the workflows each agent still tracks, gossip maps held, and gossip digests sent
per period; the ratio is RSS at N over RSS at N/4 (after warm-up), which should stay near 1.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from agents.mock_ehr import EhrConfig, MockEhrServer
from agents.roles import ROLES
from agents.specs import reconciliation_spec
from bench.common import delete_keys, delete_topics, print_header, print_table, run_id, services
from mesh.bus import KafkaBus, SubscriptionOptions
from mesh.gossip import ContextMapArchive, GossipNode, GossipNodeOptions, GossipOptions
from mesh.peer import Peer
from mesh.runtime import AgentWorker, MeshClient, RuntimeOptions, WorkerOptions
from mesh.runtime.agent import build_worker
from mesh.runtime.trust import AgentTrust
from mesh.security import Keyring, generate_keypair
from mesh.store import RedisContextMapStore, RedisRunIndex, RedisStateStore
from protocols import Topics, WorkflowCompleted

ROLE_NAMES = ("identity", "fetch", "validate", "report")


def rss_mb() -> float:
    """Resident set size of this process now (Linux /proc), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run(n: int, *, retire: bool, kafka: str, redis_url: str, settle_s: float = 0.0) -> list[tuple[Any, ...]]:
    """Run ``n`` sequential workflows; rows of (done, rss MB, tracked, gossip maps, digests/period)."""
    prefix = run_id("bench-mem")
    topics = Topics(prefix=prefix)
    pairs = {role: generate_keypair(f"{role}-1") for role in ROLE_NAMES}
    keyring = Keyring({p.agent_id: p.public_key for p in pairs.values()})
    buses: list[KafkaBus] = []
    closers: list[Any] = []
    workers: list[AgentWorker] = []
    nodes: list[GossipNode] = []
    tasks: list[asyncio.Task[None]] = []
    rows: list[tuple[Any, ...]] = []
    raw = aioredis.Redis.from_url(redis_url)
    with MockEhrServer(audit_log=Path(f"/tmp/{prefix}-audit.jsonl"), config=EhrConfig(patients=2)) as ehr:
        http = httpx.AsyncClient(timeout=10.0)
        try:
            for role in ROLE_NAMES:
                agent = f"{role}-1"
                bus = KafkaBus(kafka, topics=topics, client_id=agent, partitions=6)
                await bus.start()
                buses.append(bus)
                store = RedisStateStore.from_url(redis_url, key_prefix=f"{prefix}:")
                index = RedisRunIndex.from_url(redis_url, key_prefix=f"{prefix}:")
                closers += [store.aclose, index.aclose]
                peer = Peer(AgentTrust(pairs[role], keyring=keyring), bus, topics=topics,
                            store=ContextMapArchive(RedisContextMapStore(raw, prefix=f"{prefix}:")),
                            gossip_options=GossipOptions(anti_entropy_period_ms=500),
                            node_options=GossipNodeOptions(start_timeout_s=60))
                await peer.start()
                node = peer.node
                nodes.append(node)
                if not retire:
                    async def keep(_wf: str, **_kw: Any) -> None:
                        return None

                    node.retire = keep  # type: ignore[method-assign,assignment]
                w = build_worker(ROLES[role], bus, store, agent_id=agent, topics=topics,  # type: ignore[arg-type]
                                 gossip=node, index=index, resources={"http": http}, runtime=RuntimeOptions(),
                                 worker=WorkerOptions(poll_timeout_ms=50, finished_ttl_s=600))
                if not retire:
                    w._forget_workflow = lambda _wf: None  # type: ignore[method-assign,assignment]
                workers.append(w)
                joined = asyncio.Event()
                tasks.append(asyncio.create_task(w.run(on_joined=lambda _w, e=joined: e.set())))  # type: ignore[misc]
                await asyncio.wait_for(joined.wait(), 60)
            client_bus = KafkaBus(kafka, topics=topics, client_id="bench", partitions=6)
            await client_bus.start()
            buses.append(client_bus)
            client = MeshClient(client_bus, topics=topics, client_id="bench")
            finished: set[str] = set()
            reader = await client_bus.subscribe([topics.workflow_events], group=f"{prefix}.bench-reader",
                                                options=SubscriptionOptions(from_beginning=True))

            async def read() -> None:
                while True:
                    for d in await reader.poll(timeout_ms=100):
                        if d.envelope.kind == WorkflowCompleted.KIND:
                            finished.add(d.envelope.workflow_id)

            tasks.append(asyncio.create_task(read()))
            spec = reconciliation_spec(patients=2, page_size=2)
            marks = sorted({0, n // 4, n // 2, 3 * n // 4, n})
            started = time.monotonic()
            for i in range(n + 1):
                if i in marks:
                    if i == n and settle_s:
                        await asyncio.sleep(settle_s)  # let the last completion be folded everywhere
                    gc.collect()
                    before = sum(node.gossip.stats["sent_digest"] for node in nodes)
                    await asyncio.sleep(1.0)  # two digest periods
                    digests = (sum(node.gossip.stats["sent_digest"] for node in nodes) - before) / 2
                    rows.append((i, round(rss_mb(), 1), sum(len(w._tracked) for w in workers),
                                 sum(len(node.gossip.maps) for node in nodes), digests,
                                 round(i / max(time.monotonic() - started, 1e-9), 2)))
                    print(f"  {'on' if retire else 'off'}: {rows[-1]}", file=sys.stderr, flush=True)
                if i == n:
                    break
                wf = await client.submit(spec, variables={"ehr_base_url": ehr.base_url})
                deadline = time.monotonic() + 120
                while wf not in finished:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"workflow {i} ({wf}) did not finish in 120 s")
                    await asyncio.sleep(0.02)
                finished.discard(wf)
        finally:
            for w in workers:
                w.stop()
            tasks[-1].cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for node in nodes:
                await node.aclose()
            for close in closers:
                await close()
            for bus in buses:
                await bus.aclose()
            await http.aclose()
            await raw.aclose()
            await delete_topics(kafka, f"{prefix}.")
            await delete_keys(redis_url, f"{prefix}:")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--compare", action="store_true", help="also run with retirement off (the old behaviour)")
    parser.add_argument("--compare-workflows", type=int, default=200,
                        help="workflows for the --compare baseline (it slows down as it grows: 200 by default)")
    parser.add_argument("--only", choices=("on", "off"), help=argparse.SUPPRESS)  # one variant, rows as JSON
    args = parser.parse_args(argv)
    svc = services()
    if args.only:
        rows = asyncio.run(run(args.workflows, retire=args.only == "on", kafka=svc.kafka_bootstrap,
                               redis_url=svc.redis_url))
        print("ROWS " + json.dumps(rows))
        return 0
    print_header("agent memory over sequential workflows", "bench.memory", argv,
                 f"services: kafka {svc.kafka_bootstrap}, redis {svc.redis_url} ({svc.source})")
    variants = [("retire finished (now)", True, args.workflows)]
    if args.compare:
        variants.append(("keep everything (before)", False, min(args.workflows, args.compare_workflows)))
    results = {}
    counts = {}
    for name, retire, n in variants:
        # Each variant in its own process: RSS a process once reached is not given back, so a
        # second variant in the same process would start from the first one's peak.
        counts[name] = n
        env = {**os.environ, "MESH_KAFKA_BOOTSTRAP": svc.kafka_bootstrap, "MESH_REDIS_URL": svc.redis_url}
        out = subprocess.run([sys.executable, "-m", "bench.memory", "--workflows", str(n),
                              "--only", "on" if retire else "off"], env=env, check=True,
                             stdout=subprocess.PIPE, text=True).stdout
        printed = next(line for line in out.splitlines() if line.startswith("ROWS "))
        results[name] = [tuple(r) for r in json.loads(printed[5:])]
    columns = ["variant", "workflows done", "RSS MB", "workflows tracked", "gossip maps", "digests/period", "wf/s"]
    table = [(name, *row) for name, rows in results.items() for row in rows]
    print_table("agent memory (4 agents in one process)", columns, table)
    for name, rows in results.items():
        quarter = next((r for r in rows if r[0] >= counts[name] // 4 and r[0] > 0), rows[-1])
        ratio = rows[-1][1] / quarter[1] if quarter[1] else float("nan")
        print(f"{name}: RSS at {rows[-1][0]} / RSS at {quarter[0]} = {ratio:.2f}; "
              f"tracked {rows[-1][2]}, gossip maps {rows[-1][3]}, digests/period {rows[-1][4]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
