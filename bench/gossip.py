"""Gossip, quorum and signature benchmarks, printed as tables.

Run ``python -m bench.gossip`` (add ``--quick`` for a smoke run). Sections:

1. envelope sign + verify cost per message (Ed25519 over the msgpack body);
2. in-memory dissemination: time and messages until 16 peers hold a write, with and without
   drops (anti-entropy repairs the drops);
3. compression of deltas: raw msgpack vs zlib (the codec's choice) vs zstandard.

``--kafka`` runs the multi-process benchmark instead: 16 agent processes (a ``GossipNode`` each,
``python -m mesh.testing.peer_process``) over a private real Kafka with a toxiproxy-fronted listener;
it measures the time until all 16 hold a new variable (p50/p99 over 20 variables) and the time
to converge after 4 of the 16 are cut off and healed, and prints PASS/FAIL targets:

    python -m bench.gossip --kafka [--agents 16] [--variables 20] [--period-ms 1000] [--check]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mesh.gossip import (
    ContextMap,
    GossipAgent,
    GossipOptions,
    HybridLogicalClock,
    MemoryGossipNetwork,
    NetworkFaults,
)
from mesh.gossip import encode_delta as encode_gossip_delta
from mesh.security import (
    EnvelopeSigner,
    EnvelopeVerifier,
    Keyring,
    VerifierOptions,
    generate_keypair,
)
from protocols import Envelope, EnvelopeCodec

WF = "wf-bench"


@dataclass(frozen=True)
class Table:
    """One printed result table."""

    title: str
    headers: Sequence[str]
    rows: Sequence[Sequence[object]]

    def render(self) -> str:
        """Fixed-width text."""
        cells = [[str(h) for h in self.headers]] + [[_fmt(c) for c in row] for row in self.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.headers))]
        line = "  ".join("-" * w for w in widths)
        out = [self.title, line]
        for i, row in enumerate(cells):
            out.append("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))))
            if i == 0:
                out.append(line)
        return "\n".join(out)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- 1. signatures ---------------------------------------------------------------------------


def _sample_context(n_vars: int, seed: int = 0) -> ContextMap:
    rng = random.Random(seed)
    cmap = ContextMap(WF, "bench", clock=HybridLogicalClock(wall_ms=lambda: 1_700_000_000_000))
    for i in range(n_vars):
        kind = i % 4
        if kind == 0:
            cmap.set(f"order_id_{i}", f"ORD-{rng.randrange(10**8):08d}", priority=1)
        elif kind == 1:
            cmap.set(f"auth_token_{i}", "eyJhbGciOi" + "".join(rng.choices("abcdef0123456789", k=80)), secret=True, priority=0)
        elif kind == 2:
            cmap.set(f"patient_{i}", {"mrn": f"MRN{rng.randrange(10**6)}", "name": "Jane Doe", "dob": "1970-01-01", "allergies": ["penicillin"]})
        else:
            cmap.add(f"ids_{i}", *(f"id-{rng.randrange(1000)}" for _ in range(5)))
    return cmap


def bench_signatures(messages: int) -> Table:
    """Sign, encode, decode and verify ``messages`` gossip envelopes one by one."""
    pair = generate_keypair("bench-a")
    signer = EnvelopeSigner("bench-a", pair.private_key)
    codec = EnvelopeCodec()
    rows = []
    for label, n_vars in (("delta, 1 variable", 1), ("delta, 10 variables", 10)):
        payload = encode_gossip_delta(_sample_context(n_vars).delta_since(0))
        verifier = EnvelopeVerifier(Keyring({"bench-a": pair.public_key}), options=VerifierOptions(max_age_ms=None))
        sign_us, verify_us, total_us = [], [], []
        size = 0
        for i in range(messages):
            env = Envelope.of(payload, sender="bench-a", workflow_id=WF, id=f"m{i}")
            t0 = time.perf_counter_ns()
            signed = signer.sign(env)
            t1 = time.perf_counter_ns()
            wire = codec.encode(signed)
            received = codec.decode(wire)
            t2 = time.perf_counter_ns()
            verifier.verify(received)
            t3 = time.perf_counter_ns()
            size = len(wire)
            sign_us.append((t1 - t0) / 1000)
            verify_us.append((t3 - t2) / 1000)
            total_us.append((t1 - t0 + t3 - t2) / 1000)
        p50 = statistics.median(total_us)
        rows.append(
            [label, size, statistics.median(sign_us), statistics.median(verify_us), p50, _pct(total_us, 0.99), 1e6 / p50]
        )
    return Table(
        f"1. Envelope sign + verify (Ed25519, {messages} messages each; verify includes the body re-encode check)",
        ["message", "bytes", "sign p50 us", "verify p50 us", "sign+verify p50 us", "p99 us", "msgs/s (1 core)"],
        rows,
    )


# -- 2. dissemination ------------------------------------------------------------------------


async def _disseminate(peers: int, faults: NetworkFaults, seed: int) -> tuple[float, int, int, int]:
    network = MemoryGossipNetwork(faults=faults, seed=seed)
    agents = []
    for i in range(peers):
        agent = GossipAgent(f"p{i:02d}", network.transport(f"p{i:02d}"), options=GossipOptions(bucket_count=16))
        network.register(agent.agent_id, agent.handle)
        agent.join(WF)
        agents.append(agent)
    t0 = time.perf_counter()
    await agents[0].set(WF, "auth_token", "tok-123", secret=True)
    await agents[0].set(WF, "order_id", "ORD-1")
    await network.pump()
    rounds = 0
    while not all(a.maps[WF] == agents[0].maps[WF] for a in agents):
        rounds += 1
        for agent in agents:
            await agent.send_digest(WF)
        await network.pump()
        if rounds > 50:
            raise RuntimeError("no convergence after 50 anti-entropy rounds")
    return (time.perf_counter() - t0) * 1000, rounds, network.sent, network.bytes_sent


def bench_dissemination(peers: int, repeats: int) -> Table:
    """Time until every peer holds a write, per network fault profile."""
    rows = []
    for label, faults in (
        ("no faults", NetworkFaults()),
        ("20% drops, 10% dups, reorder", NetworkFaults(drop_rate=0.2, duplicate_rate=0.1, reorder=True)),
        ("50% drops, reorder", NetworkFaults(drop_rate=0.5, reorder=True)),
    ):
        results = [asyncio.run(_disseminate(peers, faults, seed)) for seed in range(repeats)]
        ms = [r[0] for r in results]
        rows.append(
            [
                label,
                statistics.median(ms),
                max(ms),
                statistics.median(r[1] for r in results),
                statistics.median(r[2] for r in results),
                statistics.median(r[3] for r in results) / 1024,
            ]
        )
    return Table(
        f"2. In-memory dissemination of one write to {peers} peers ({repeats} runs; CPU time of the whole mesh in one process;"
        " add anti-entropy periods x rounds for wall time)",
        ["network", "p50 ms", "max ms", "anti-entropy rounds p50", "envelopes p50", "KiB on wire p50"],
        rows,
    )


# -- 3. compression --------------------------------------------------------------------------


def _zstd() -> Callable[[bytes], bytes] | None:
    try:
        import zstandard
    except ImportError:
        return None
    compressor = zstandard.ZstdCompressor(level=3)
    return compressor.compress


def bench_compression() -> Table:
    """Delta sizes: raw msgpack vs zlib vs zstd, and the time each takes."""
    zstd = _zstd()
    rows = []
    for n_vars in (1, 10, 100, 1000):
        raw = _sample_context(n_vars, seed=n_vars).delta_since(0).to_msgpack()
        row: list[object] = [n_vars, len(raw)]
        for compress in (lambda b: zlib.compress(b, 6), zstd):
            if compress is None:
                row += ["n/a", "n/a"]
                continue
            t0 = time.perf_counter_ns()
            for _ in range(20):
                packed = compress(raw)
            row += [f"{len(raw) / len(packed):.2f}x ({len(packed):,} B)", (time.perf_counter_ns() - t0) / 20_000]
        rows.append(row)
    return Table(
        "3. Delta compression (realistic variables: ids, secret tokens, records, sets)",
        ["variables", "msgpack bytes", "zlib-6 ratio", "zlib us", "zstd-3 ratio", "zstd us"],
        rows,
    )


# -- 4. --kafka: agent processes over a real broker -----------------------------------------


@dataclass
class _Seen:
    """When each worker first held each variable (wall ms), from the workers' ``changed`` events."""

    at: dict[str, dict[str, float]]

    def record(self, agent_id: str, names: Sequence[str], t_ms: float) -> None:
        for name in names:
            self.at.setdefault(name, {}).setdefault(agent_id, t_ms)

    def holders(self, name: str) -> int:
        return len(self.at.get(name, {}))


async def _collect(worker: object, seen: _Seen) -> None:
    from mesh.testing import PeerProcess

    assert isinstance(worker, PeerProcess)
    while True:
        event = await worker.events.get()
        seen.record(worker.config.agent_id, event["names"], event["t_ms"])


async def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not reached within {timeout_s} s")
        await asyncio.sleep(0.005)


async def bench_kafka(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """Agent processes over a private Kafka: dissemination latency and convergence after a real cut."""
    import json
    import tempfile
    from pathlib import Path

    from bench.common import Target, command_line, exit_code, machine_line, render_targets
    from mesh.bus import KafkaBus
    from mesh.dev import DevConfig, DevServices, free_port
    from mesh.dev.toxiproxy import Toxiproxy
    from mesh.security import private_key_to_hex
    from mesh.testing import PeerProcess, PeerProcessConfig
    from protocols import Topics

    started = time.monotonic()
    n, n_cut = args.agents, args.cut
    print(f"command: {command_line('bench.gossip', argv)}")
    print(f"machine: {machine_line()}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-gossip-kafka-"))
    proxied_port, proxy_port = free_port(), free_port()
    services = DevServices(DevConfig.isolated(tmp / "services", kafka_proxied_port=proxied_port,
                                              kafka_proxied_advertised_port=proxy_port))
    toxi = Toxiproxy(log_path=tmp / "toxiproxy.log")
    workers: list[PeerProcess] = []
    collectors: list[asyncio.Task[None]] = []
    try:
        await asyncio.to_thread(services.up, services=("kafka",))
        await asyncio.to_thread(toxi.start)
        await asyncio.to_thread(toxi.proxy, "kafka", proxied_port, listen_port=proxy_port)
        cfg = services.config
        topics = Topics("bench")
        await KafkaBus(cfg.kafka_bootstrap, topics=topics, partitions=1).ensure_topics(list(topics.all()))
        pairs = [generate_keypair(f"a{i:02d}") for i in range(n)]
        keyring_json = json.dumps(Keyring({p.agent_id: p.public_key for p in pairs}).to_dict())
        minority = {p.agent_id for p in pairs[n - n_cut:]}
        for p in pairs:
            workers.append(PeerProcess(PeerProcessConfig(
                agent_id=p.agent_id,
                private_key_hex=private_key_to_hex(p.private_key),
                keyring_json=keyring_json,
                bootstrap=(cfg.kafka_proxied_bootstrap or "") if p.agent_id in minority else cfg.kafka_bootstrap,
                topic_prefix=topics.prefix,
                anti_entropy_period_ms=args.period_ms,
                watch=True,
            ), stderr_path=tmp / f"{p.agent_id}.log"))
        t0 = time.monotonic()
        await asyncio.gather(*(w.start(timeout_s=120) for w in workers))
        print(f"{n} agent processes ready in {time.monotonic() - t0:.1f} s ({n_cut} behind toxiproxy)")
        seen = _Seen({})
        collectors = [asyncio.create_task(_collect(w, seen)) for w in workers]

        # Warm-up: every agent hears every other once (consumers positioned, connections open).
        await asyncio.gather(*(w.request("set", wf=WF, name=f"ready-{w.config.agent_id}", value=1) for w in workers))
        await _wait(lambda: all(seen.holders(f"ready-{w.config.agent_id}") == n - 1 for w in workers), 60, "warm-up")

        # Dissemination: one variable at a time, written by a rotating agent.
        latencies_ms: list[float] = []
        for i in range(args.variables):
            writer = workers[i % n]
            name = f"lat-{i}"
            reply = await writer.request("set", wf=WF, name=name, value={"i": i})
            await _wait(lambda name=name: seen.holders(name) == n - 1, 30, f"{name} everywhere")
            latencies_ms.append(max(seen.at[name].values()) - reply["t_ms"])
            await asyncio.sleep(0.05)
        p50, p99 = statistics.median(latencies_ms), _pct(latencies_ms, 0.99)

        # Partition: cut the minority, write on both sides, heal, time until everyone holds everything.
        await asyncio.to_thread(toxi.cut, "kafka")
        cut_names = []
        for i, w in enumerate(workers):
            if i % 2 == 0 or w.config.agent_id in minority:
                name = f"cut-{w.config.agent_id}"
                await w.request("set", wf=WF, name=name, value=i)
                cut_names.append(name)
        await asyncio.sleep(args.cut_s)
        crossed = sum(
            1 for name in cut_names for agent in seen.at.get(name, {})
            if (agent in minority) != (name.removeprefix("cut-") in minority)
        )
        heal_ms = time.time() * 1000
        await asyncio.to_thread(toxi.heal, "kafka")
        await _wait(lambda: all(seen.holders(name) == n - 1 for name in cut_names), 60, "convergence after heal")
        converge_ms = max(max(seen.at[name].values()) for name in cut_names) - heal_ms
        digests = [(await w.request("dump", wf=WF))["digest"] for w in workers]
        equal = all(d == digests[0] for d in digests)
        stats = [await w.request("stats") for w in workers]
        sync_requests = sum(s.get("gossip.sent_sync", 0) for s in stats)
        dropped = sum(s.get("node.dropped_bus_error", 0) + s.get("node.dropped_backlog", 0) for s in stats)

        print()
        print(Table(
            f"4a. Dissemination over Kafka: one write until all {n} agent processes hold it ({args.variables} variables)",
            ["p50 ms", "p99 ms", "min ms", "max ms"],
            [[p50, p99, min(latencies_ms), max(latencies_ms)]],
        ).render())
        print()
        print(Table(
            f"4b. Partition of {n_cut}/{n} agents (toxiproxy cut of their Kafka listener for {args.cut_s:.1f} s), then heal",
            ["variables written while cut", "crossed the cut", "converged after heal ms", "anti-entropy periods",
             "replicas equal", "sync requests (whole run)", "envelopes dropped"],
            [[len(cut_names), crossed, converge_ms, converge_ms / args.period_ms, "yes" if equal else "NO", sync_requests, dropped]],
        ).render())
        targets = [
            Target(f"p99 <= 250 ms until all {n} agents hold a write", p99 <= 250, f"p99 {p99:.1f} ms (p50 {p50:.1f} ms)"),
            Target("converged within 2 anti-entropy periods after the heal", converge_ms <= 2 * args.period_ms and equal,
                   f"{converge_ms:.0f} ms = {converge_ms / args.period_ms:.2f} periods of {args.period_ms} ms"),
            Target("nothing crossed the cut while it lasted", crossed == 0, f"{crossed} deliveries across it"),
        ]
        print()
        for line in render_targets(targets):
            print(line)
        print(f"\nwall time {time.monotonic() - started:.1f} s; agent logs in {tmp}")
        return exit_code(targets, check=args.check)
    finally:
        for task in collectors:
            task.cancel()
        await asyncio.gather(*(w.aclose(timeout_s=10) for w in workers), return_exceptions=True)
        await asyncio.to_thread(toxi.stop)
        await asyncio.to_thread(services.down)



# -- entry point -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks and print their tables."""
    parser = argparse.ArgumentParser(prog="python -m bench.gossip", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    parser.add_argument("--peers", type=int, default=16, help="peers in the dissemination run")
    parser.add_argument("--kafka", action="store_true", help="agent processes over a real Kafka (see the module doc)")
    parser.add_argument("--agents", type=int, default=16, help="--kafka: agent processes")
    parser.add_argument("--cut", type=int, default=4, help="--kafka: agents on the minority side of the partition")
    parser.add_argument("--variables", type=int, default=20, help="--kafka: variables timed for dissemination")
    parser.add_argument("--period-ms", type=int, default=1000, help="--kafka: anti-entropy period")
    parser.add_argument("--cut-s", type=float, default=3.0, help="--kafka: how long the partition lasts")
    parser.add_argument("--check", action="store_true", help="--kafka: exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.kafka:
        return asyncio.run(bench_kafka(args, argv))
    messages, repeats = (200, 3) if args.quick else (2000, 10)
    for table in (bench_signatures(messages), bench_dissemination(args.peers, repeats), bench_compression()):
        print(table.render())
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
