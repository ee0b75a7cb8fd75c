"""Gossip, quorum and signature benchmarks, printed as tables.

Run ``python -m bench.gossip`` (add ``--quick`` for a smoke run). Sections:

1. envelope sign + verify cost per message (Ed25519 over the msgpack body);
2. in-memory dissemination: time and messages until 16 peers hold a write, with and without
   drops (anti-entropy repairs the drops);
3. compression of deltas: raw msgpack vs zlib (the codec's choice) vs zstandard.

``--kafka`` is reserved for the 16-process run over mesh/bus (one process per peer, real
broker); it plugs in as another ``Section`` once the Kafka bus lands.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
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


# -- entry point -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks and print their tables."""
    parser = argparse.ArgumentParser(prog="python -m bench.gossip", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    parser.add_argument("--peers", type=int, default=16, help="peers in the dissemination run")
    parser.add_argument("--kafka", action="store_true", help="16 processes over a real Kafka (not yet available)")
    args = parser.parse_args(argv)
    if args.kafka:
        print("--kafka: the multi-process run over mesh/bus is not implemented yet", file=sys.stderr)
        return 2
    messages, repeats = (200, 3) if args.quick else (2000, 10)
    for table in (bench_signatures(messages), bench_dissemination(args.peers, repeats), bench_compression()):
        print(table.render())
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
