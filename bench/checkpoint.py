"""Checkpoint write latency against Redis: ours (msgpack + one fenced Lua call) vs the naive way.

Run ``python -m bench.checkpoint`` (``--quick`` for fewer samples, ``--check`` to exit 1 when a
target is missed). For step states of about 4, 20 and 100 KB it times, interleaved write by write
so both see the same machine load:

* ours: ``StepState.to_bytes()`` (msgpack) + ``RedisStateStore.write(..., epoch=, owner=,
  workflow_id=)``: one round trip running the fencing Lua script (fence check, new version,
  old version trimmed, workflow index);
* naive: ``json.dumps(dataclasses.asdict(state))`` + ``SET`` + the same bytes written to a local
  file with ``write``, ``flush`` and ``os.fsync``, as an agent that wants durability on its own
  would do per turn;
* for information: naive without the fsync (JSON + ``SET``); ours' store call alone (bytes
  ready); ours with a msgpack ``default`` hook in place of ``dataclasses.asdict`` (byte-identical
  output, checked), so the table shows where the time goes.

Durability is not equal and the header says so: Redis's ``appendfsync`` decides whether an
acknowledged checkpoint survives an OS crash (``always``) or may lose up to a second
(``everysec``); the naive fsync'd file survives it.

Targets: ours p95 <= 2 ms at 20 KB; ours >= 5x faster than naive at 20 KB, comparing p50.

A second table (``--turns``, on by default; ``--no-turns`` skips it) shows checkpoint size and
write time as a step's turn count grows, at 10, 100, 500 and 1,000 turns, side by side:

* bounded (today's layout, ``mesh.runtime.history``): the checkpoint keeps the last 20 turn
  records plus a digest; ``HistoryArchiver`` uploads older ones in sealed segments of 20 to a
  ``FileBlobStore`` (fsync on) in the background, as the runtime does;
* unbounded (the layout before it): every turn record stays in the checkpoint.

Each timed write adds a turn, as a running step does: the unbounded state drops its oldest record
so it stays at N records (what a step at turn N writes); the bounded one archives as the runtime
does. The step's outputs and memory are kept small and fixed, so the table isolates the history.
Targets: bounded state < 100 KB at 1,000 turns (the seed's KPI); bounded p95 at 1,000 turns
within 2x of its p95 at 10 turns (flat).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import msgpack
import redis.asyncio as aioredis

from bench.common import (
    Stats,
    Target,
    command_line,
    console,
    exit_code,
    print_header,
    print_table,
    print_targets,
    ratio,
    run_id,
    services,
)
from mesh.runtime import ContextVariable, HistoryArchiver, HistoryOptions, StepState, TurnRecord
from mesh.runtime.variables import CHECKPOINT_FIELDS
from mesh.security import DataCipher, generate_data_key
from mesh.store import FileBlobStore, RedisStateStore, step_key

__all__ = [
    "SIZES_KB",
    "TURN_COUNTS",
    "fast_state_bytes",
    "fs_type",
    "fsync_write",
    "main",
    "make_state",
    "naive_bytes",
    "turn_record",
    "turns_state",
]

SIZES_KB: tuple[int, ...] = (4, 20, 100)
TARGET_P95_MS = 2.0
TARGET_SPEEDUP = 5.0
TARGET_SIZE_KB = 20
TURN_COUNTS: tuple[int, ...] = (10, 100, 500, 1000)
TARGET_STATE_KB_AT_1000 = 100
TARGET_FLAT_P95 = 2.0
HISTORY = HistoryOptions(window=20, segment=20)

_ACTIONS = ("list_patients", "fetch_patient", "publish_records", "check_record", "file_reconciliation")
_WORDS = (
    "patient record fetched page ok medication allergy code formulary mismatch token refreshed "
    "amoxicillin penicillin ibuprofen lisinopril metformin dob missing duplicate mrn filed"
).split()


def _record(rng: random.Random, i: int) -> dict[str, object]:
    return {
        "id": f"p-{i:05d}",
        "mrn": f"MRN{rng.randrange(10**6):06d}",
        "name": rng.choice(("Ada Park", "Bo Chen", "Cy Diaz", "Di Evans")),
        "dob": f"19{rng.randrange(40, 99)}-0{rng.randrange(1, 9)}-1{rng.randrange(0, 9)}",
        "medications": [{"code": f"RX{rng.randrange(1000):04d}", "name": rng.choice(_WORDS)} for _ in range(3)],
        "allergies": [rng.choice(_WORDS) for _ in range(2)],
    }


def make_state(size_bytes: int, *, seed: int = 0) -> StepState:
    """A realistic fetch-step state whose msgpack form is about ``size_bytes`` (never less).

    Each turn adds a ``TurnRecord`` (action, masked params, one-line summary, injections) and the
    patient record it fetched to the outputs, as the reconciliation fetch step does.
    """
    rng = random.Random(seed)
    state = StepState(
        workflow_id="patient-reconciliation-1a2b3c4d",
        step_id="fetch",
        role="fetch",
        variables={
            "auth_token": ContextVariable("auth_token", "tok-" + "a1b2c3d4" * 8, secret=True, priority=0, origin="identity"),
            "ehr_base_url": ContextVariable("ehr_base_url", "http://127.0.0.1:8089", origin="workflow"),
            "ehr_client_id": ContextVariable("ehr_client_id", "mesh-agent", origin="workflow"),
        },
        summaries={"identity": "2 turns (authenticate x1, publish_token x1); outputs: token_expires_at"},
        owner="fetch-1",
        epoch=3,
    )
    records: list[dict[str, object]] = []
    state.outputs["records"] = records
    turn = 0
    while len(state.to_bytes()) < size_bytes:
        turn += 1
        action = _ACTIONS[turn % len(_ACTIONS)]
        summary = f"{action} ok: " + " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 20)))
        state.history.append(
            TurnRecord(
                turn=turn,
                action=action,
                params={"page": turn, "page_size": 5, "token": "[REDACTED]", "base_url": "http://127.0.0.1:8089"},
                outcome="ok",
                summary=summary,
                injected=["token (filled)", "base_url (filled)"],
                duration_ms=round(rng.uniform(2, 40), 3),
            )
        )
        records.append(_record(rng, turn))
        state.memory = {"next_page": turn + 1, "fetched": turn}
        state.recent = [f"{action}:{{page:{t}}}" for t in range(max(1, turn - 5), turn + 1)]
        state.turn = turn
    return state


def turn_record(rng: random.Random, turn: int) -> TurnRecord:
    """One realistic turn record of the fetch step (masked params, a one-line summary)."""
    action = _ACTIONS[turn % len(_ACTIONS)]
    return TurnRecord(
        turn=turn,
        action=action,
        params={"page": turn, "page_size": 5, "token": "[REDACTED]", "base_url": "http://127.0.0.1:8089"},
        outcome="ok" if turn % 11 else "failed",
        summary=f"{action} ok: " + " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 20))),
        injected=["token (filled)", "base_url (filled)"],
        duration_ms=round(rng.uniform(2, 40), 3),
    )


def turns_state(turns: int, *, seed: int = 0) -> StepState:
    """A fetch-step state after ``turns`` turns, every record kept (the unbounded layout).

    Outputs and memory are small and fixed: only the history grows with the turn count.
    """
    rng = random.Random(seed)
    state = StepState(
        workflow_id="patient-reconciliation-1a2b3c4d",
        step_id=f"fetch-{turns}",
        role="fetch",
        variables={
            "auth_token": ContextVariable("auth_token", "tok-" + "a1b2c3d4" * 8, secret=True, priority=0, origin="identity"),
            "ehr_base_url": ContextVariable("ehr_base_url", "http://127.0.0.1:8089", origin="workflow"),
        },
        summaries={"identity": "2 turns (authenticate x1, publish_token x1); outputs: token_expires_at"},
        outputs={"records_file": "s3://bucket/records.json", "count": 5},
        owner="fetch-1",
        epoch=3,
    )
    for t in range(1, turns + 1):
        state.history.append(turn_record(rng, t))
    state.turn = turns
    state.memory = {"next_page": turns + 1, "fetched": turns}
    return state


async def _bounded_state(turns: int, archiver: HistoryArchiver, *, seed: int = 0) -> StepState:
    """The same step after ``turns`` turns with the runtime's bounded history (uploads done)."""
    rng = random.Random(seed)
    state = turns_state(0, seed=seed)
    state.step_id = f"fetch-{turns}-bounded"
    for t in range(1, turns + 1):
        state.history.append(turn_record(rng, t))
        state.turn = t
        await archiver.before_write(state)
        if t % HISTORY.segment == 0:
            await archiver.drain()
    await archiver.drain()
    await archiver.before_write(state)
    return state


async def _write_turn(
    store: RedisStateStore,
    state: StepState,
    key: str,
    epoch: int,
    rng: random.Random,
    *,
    archiver: HistoryArchiver | None,
    slide: bool,
    cipher: DataCipher,
) -> tuple[float, int]:
    """One turn's checkpoint: add a turn record, (bounded) let the archiver trim, serialize, write.

    Returns (serialization ms, bytes written). ``slide`` drops the oldest record so the state
    stays at the same turn count (the unbounded layout; the bounded one before it archives).
    """
    state.turn += 1
    state.history.append(turn_record(rng, state.turn))
    if slide:
        del state.history[0]
    t0 = time.perf_counter()
    if archiver is not None:
        await archiver.before_write(state)  # the runtime's path: never waits on the blob store
    data = state.to_bytes(cipher)
    ser = (time.perf_counter() - t0) * 1000
    await store.write(key, data, epoch=epoch, owner="bench", workflow_id=state.workflow_id)
    return ser, len(data)


async def _measure_turns(
    redis_url: str, blob_dir: Path, turn_counts: Sequence[int], samples: int, warmup: int
) -> tuple[list[list[object]], dict[str, float]]:
    prefix = run_id("ckpt-turns")
    client = aioredis.Redis.from_url(redis_url)
    store = RedisStateStore(client, key_prefix=f"{prefix}:")
    blobs = FileBlobStore(blob_dir / prefix)
    # A key of the run's own: the bench needs no configured data key (secrets are still sealed).
    cipher = DataCipher.from_text(generate_data_key(), source="bench key")
    archiver = HistoryArchiver(blobs, HISTORY, cipher)
    rows: list[list[object]] = []
    figures: dict[str, float] = {}
    try:
        for n in turn_counts:
            rng = random.Random(n)
            flat = turns_state(n, seed=n)
            bounded = await _bounded_state(n, archiver, seed=n)
            keys = {
                "unbounded": step_key(flat.workflow_id, flat.step_id),
                "bounded": step_key(bounded.workflow_id, bounded.step_id),
            }
            epochs = {name: await store.claim(key, "bench") for name, key in keys.items()}
            slide = n < HISTORY.window + HISTORY.segment  # nothing to archive yet: same layout

            writes: dict[str, Callable[[], Awaitable[tuple[float, int]]]] = {
                "bounded": functools.partial(
                    _write_turn, store, bounded, keys["bounded"], epochs["bounded"], rng,
                    archiver=archiver, slide=slide, cipher=cipher,
                ),
                "unbounded": functools.partial(
                    _write_turn, store, flat, keys["unbounded"], epochs["unbounded"], rng, archiver=None, slide=True,
                    cipher=cipher,
                ),
            }
            times: dict[str, list[float]] = {m: [] for m in writes}
            ser: dict[str, list[float]] = {m: [] for m in writes}
            sizes: dict[str, list[int]] = {m: [] for m in writes}
            order = list(writes)
            for i in range(warmup + samples):
                order.reverse()
                for name in order:
                    t0 = time.perf_counter()
                    ser_ms, size = await writes[name]()
                    elapsed = (time.perf_counter() - t0) * 1000
                    if i >= warmup:
                        times[name].append(elapsed)
                        ser[name].append(ser_ms)
                        sizes[name].append(size)
            await archiver.drain()
            stats = {m: Stats.of(t) for m, t in times.items()}
            for name, label in (("bounded", "bounded: last 20 turns + digest"),
                                ("unbounded", "unbounded: every turn record")):
                st = stats[name]
                state = bounded if name == "bounded" else flat
                rows.append([
                    f"{n:,}", label, len(state.history), max(sizes[name]) / 1024, Stats.of(ser[name]).p50,
                    st.p50, st.p95, st.p99,
                    ratio(max(sizes["unbounded"]), max(sizes[name])), ratio(stats["unbounded"].p95, st.p95),
                ])
            figures[f"bounded_kb_{n}"] = max(sizes["bounded"]) / 1024
            figures[f"unbounded_kb_{n}"] = max(sizes["unbounded"]) / 1024
            figures[f"bounded_p95_{n}"] = stats["bounded"].p95
            figures[f"unbounded_p95_{n}"] = stats["unbounded"].p95
            figures[f"segments_{n}"] = bounded.archive.segments
        names = await blobs.list("turns/")
        figures["archived_blobs"] = len(names)
        total = 0
        for name in names:
            total += len(await blobs.get(name))
        figures["archived_kb"] = total / 1024
    finally:
        await store.delete_prefix()
        await store.aclose()
    return rows, figures


def naive_bytes(state: StepState) -> bytes:
    """What a naive agent stores: the whole state as JSON."""
    return json.dumps(dataclasses.asdict(state)).encode()


# A variable is stored without its name (its entry's key), as StepState.to_bytes does.
_FIELDS: dict[type, tuple[str, ...]] = {ContextVariable: CHECKPOINT_FIELDS}


def _dataclass_fields(obj: object) -> dict[str, object]:
    names = _FIELDS.get(type(obj))
    if names is None:
        if not dataclasses.is_dataclass(obj):
            raise TypeError(f"cannot serialize {type(obj).__name__}")
        names = _FIELDS[type(obj)] = tuple(f.name for f in dataclasses.fields(obj))
    return {name: getattr(obj, name) for name in names}


def fast_state_bytes(state: StepState) -> bytes:
    """The same bytes as ``StepState.to_bytes()`` without ``dataclasses.asdict``'s deep copy.

    msgpack calls the hook only for dataclass instances (the state, its turn records and
    variable entries) and packs everything else directly; shown as an information row because
    ``asdict`` is most of the cost of ``to_bytes``.
    """
    return msgpack.packb(state, default=_dataclass_fields, use_bin_type=True)


def fs_type(path: Path) -> str:
    """Filesystem type holding ``path`` (from /proc/mounts; ``unknown`` elsewhere)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown"
    best, kind = "", "unknown"
    target = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3 and (target == parts[1] or target.startswith(parts[1].rstrip("/") + "/")):
            if len(parts[1]) >= len(best):
                best, kind = parts[1], parts[2]
    return kind


async def _redis_config(client: aioredis.Redis, name: str) -> str:
    value = await client.config_get(name)
    raw = value.get(name.encode(), value.get(name, b"?")) if isinstance(value, dict) else b"?"
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def fsync_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and wait until the disk has it (write, flush, fsync)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


async def _measure(
    redis_url: str, naive_dir: Path, sizes_kb: Sequence[int], samples: int, warmup: int
) -> tuple[list[list[object]], dict[str, float], str]:
    prefix = run_id("ckpt")
    client = aioredis.Redis.from_url(redis_url)
    store = RedisStateStore(client, key_prefix=f"{prefix}:")
    rows: list[list[object]] = []
    figures: dict[str, float] = {}
    try:
        fsync_mode = await _redis_config(client, "appendfsync")
        aof = await _redis_config(client, "appendonly")
        header = (
            f"redis {redis_url}: appendonly {aof}, appendfsync {fsync_mode}; naive file in {naive_dir} "
            f"({fs_type(naive_dir)}); {samples} writes per size and method, interleaved, after {warmup} warm-up"
        )
        for size_kb in sizes_kb:
            state = make_state(size_kb * 1024, seed=size_kb)
            key = step_key(state.workflow_id, f"{state.step_id}-{size_kb}k")
            epoch = await store.claim(key, "bench")
            naive_key = f"{prefix}:naive:{size_kb}k"
            naive_path = naive_dir / f"state-{size_kb}k.json"

            # Each method returns the time its serialization took (ms), so the table can split
            # serialization from the store round trip.
            async def ours(state: StepState = state, key: str = key, epoch: int = epoch) -> float:
                t0 = time.perf_counter()
                data = state.to_bytes()
                ser_ms = (time.perf_counter() - t0) * 1000
                await store.write(key, data, epoch=epoch, owner="bench", workflow_id=state.workflow_id)
                return ser_ms

            packed = state.to_bytes()
            if fast_state_bytes(state) != packed:
                raise RuntimeError("fast_state_bytes differs from StepState.to_bytes")

            async def ours_fast(state: StepState = state, key: str = key, epoch: int = epoch) -> float:
                t0 = time.perf_counter()
                data = fast_state_bytes(state)
                ser_ms = (time.perf_counter() - t0) * 1000
                await store.write(key, data, epoch=epoch, owner="bench", workflow_id=state.workflow_id)
                return ser_ms

            async def ours_store_only(
                state: StepState = state, key: str = key, epoch: int = epoch, packed: bytes = packed
            ) -> float:
                await store.write(key, packed, epoch=epoch, owner="bench", workflow_id=state.workflow_id)
                return 0.0

            async def naive(state: StepState = state, key: str = naive_key, path: Path = naive_path) -> float:
                t0 = time.perf_counter()
                data = naive_bytes(state)
                ser_ms = (time.perf_counter() - t0) * 1000
                await client.set(key, data)
                fsync_write(path, data)  # blocking on purpose: what a naive agent does
                return ser_ms

            async def naive_nofsync(state: StepState = state, key: str = naive_key) -> float:
                t0 = time.perf_counter()
                data = naive_bytes(state)
                ser_ms = (time.perf_counter() - t0) * 1000
                await client.set(key, data)
                return ser_ms

            methods: dict[str, Callable[[], Awaitable[float]]] = {
                "ours": ours, "naive": naive, "naive_nofsync": naive_nofsync,
                "ours_store_only": ours_store_only, "ours_fast": ours_fast,
            }
            times: dict[str, list[float]] = {name: [] for name in methods}
            ser: dict[str, list[float]] = {name: [] for name in methods}
            order = list(methods)
            for i in range(warmup + samples):
                state.turn += 1  # a new turn per write, as in a running step
                order.reverse()  # alternate who goes first
                for name in order:
                    t0 = time.perf_counter()
                    ser_ms = await methods[name]()
                    elapsed_ms = (time.perf_counter() - t0) * 1000
                    if i >= warmup:
                        times[name].append(elapsed_ms)
                        ser[name].append(ser_ms)
            stats = {name: Stats.of(t) for name, t in times.items()}
            ours_size, naive_size = len(state.to_bytes()), len(naive_bytes(state))
            for name, label, size in (
                ("ours", "ours: to_bytes (msgpack) + fenced Lua write", ours_size),
                ("naive", "naive: JSON + SET + fsync'd file", naive_size),
                ("naive_nofsync", "(info) naive without fsync: JSON + SET", naive_size),
                ("ours_store_only", "(info) ours, store call only (bytes ready)", ours_size),
                ("ours_fast", "(info) ours, msgpack hook instead of asdict", ours_size),
            ):
                st = stats[name]
                rows.append([
                    f"{size_kb} KB", label, size / 1024, Stats.of(ser[name]).p50, st.p50, st.p95, st.p99,
                    st.mean, ratio(st.p50, stats["ours"].p50),
                ])
            figures[f"ours_p95_{size_kb}"] = stats["ours"].p95
            figures[f"speedup_p50_{size_kb}"] = ratio(stats["naive"].p50, stats["ours"].p50)
            figures[f"speedup_mean_{size_kb}"] = ratio(stats["naive"].mean, stats["ours"].mean)
            figures[f"fast_p95_{size_kb}"] = stats["ours_fast"].p95
            figures[f"fast_speedup_p50_{size_kb}"] = ratio(stats["naive"].p50, stats["ours_fast"].p50)
    finally:
        await store.delete_prefix()
        await store.aclose()
    return rows, figures, header


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checkpoint benchmark; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m bench.checkpoint", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--quick", action="store_true", help="fewer samples (CI smoke)")
    parser.add_argument("--samples", type=int, default=0, help="writes per size and method (default 400, quick 60)")
    parser.add_argument("--turns", action=argparse.BooleanOptionalAction, default=True,
                        help="also the bounded vs unbounded history table at 10..1,000 turns (default on)")
    parser.add_argument("--only-turns", action="store_true", help="only the history table")
    args = parser.parse_args(argv)
    samples = args.samples or (60 if args.quick else 400)
    svc = services(need=("redis",))
    targets: list[Target] = []
    # Next to the benchmark's other files on the same disk as the state dir; removed afterwards.
    with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp:
        if not args.only_turns:
            rows, figures, header = asyncio.run(
                _measure(svc.redis_url, Path(tmp), SIZES_KB, samples, warmup=10 if args.quick else 30)
            )
            print_header("bench.checkpoint: checkpoint write latency", "bench.checkpoint", argv, header)
            print_table(
                "checkpoint write latency per turn (ms; serialization included)",
                ["state", "method", "stored KB", "serialize p50 ms", "p50 ms", "p95 ms", "p99 ms", "mean ms", "x ours (p50)"],
                rows,
                command=command_line("bench.checkpoint", argv),
                caption="x ours = p50 of the row / p50 of ours (above 1: slower than ours); serialization is inside p50..mean",
            )
            t = TARGET_SIZE_KB
            targets += [
                Target(f"ours p95 <= {TARGET_P95_MS:g} ms at {t} KB", figures[f"ours_p95_{t}"] <= TARGET_P95_MS,
                       f"{figures[f'ours_p95_{t}']:.2f} ms"),
                Target(f"ours >= {TARGET_SPEEDUP:g}x faster than naive at {t} KB (p50)",
                       figures[f"speedup_p50_{t}"] >= TARGET_SPEEDUP,
                       f"{figures[f'speedup_p50_{t}']:.1f}x by p50 ({figures[f'speedup_mean_{t}']:.1f}x by mean)"),
            ]
            console.print(
                f"(info) with a msgpack default hook instead of dataclasses.asdict in to_bytes (same bytes): "
                f"p95 {figures[f'fast_p95_{t}']:.2f} ms at {t} KB, {figures[f'fast_speedup_p50_{t}']:.1f}x faster than naive by p50"
            )
        if args.turns or args.only_turns:
            turn_samples = args.samples or (40 if args.quick else 200)
            rows, figures = asyncio.run(
                _measure_turns(svc.redis_url, Path(tmp), TURN_COUNTS, turn_samples, warmup=5 if args.quick else 20)
            )
            if args.only_turns:
                print_header("bench.checkpoint: checkpoint size and write time by turn count", "bench.checkpoint", argv,
                             f"redis {svc.redis_url}; {turn_samples} writes per turn count and layout, interleaved")
            print_table(
                f"checkpoint size and write time as turns grow ({turn_samples} writes each, Redis; ms)",
                ["turns", "layout", "records held", "state KB", "serialize p50 ms", "p50 ms", "p95 ms", "p99 ms",
                 "x size (unbounded/row)", "x p95 (unbounded/row)"],
                rows,
                command=command_line("bench.checkpoint", argv),
                caption=(f"bounded: window {HISTORY.window}, segments of {HISTORY.segment} sealed to a FileBlobStore "
                         f"(fsync) in the background: {figures['archived_blobs']:.0f} segment blobs, "
                         f"{figures['archived_kb']:.0f} KB in all; state KB = largest checkpoint written"),
            )
            last, first = TURN_COUNTS[-1], TURN_COUNTS[0]
            targets += [
                Target(f"bounded state < {TARGET_STATE_KB_AT_1000} KB at {last:,} turns",
                       figures[f"bounded_kb_{last}"] < TARGET_STATE_KB_AT_1000,
                       f"{figures[f'bounded_kb_{last}']:.1f} KB (unbounded {figures[f'unbounded_kb_{last}']:.1f} KB)"),
                Target(f"bounded p95 at {last:,} turns <= {TARGET_FLAT_P95:g}x its p95 at {first} turns",
                       figures[f"bounded_p95_{last}"] <= TARGET_FLAT_P95 * figures[f"bounded_p95_{first}"],
                       f"{figures[f'bounded_p95_{last}']:.2f} ms vs {figures[f'bounded_p95_{first}']:.2f} ms "
                       f"(unbounded {figures[f'unbounded_p95_{last}']:.2f} ms)"),
            ]
    print_targets(targets)
    console.print()
    return exit_code(targets, check=args.check)


if __name__ == "__main__":
    sys.exit(main())
