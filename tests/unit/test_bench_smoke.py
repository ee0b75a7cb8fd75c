"""The service benchmarks import cleanly and their pure helpers compute the right figures (no services)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import bus, checkpoint, common, runtime, throughput
from mesh.runtime import StepState
from mesh.store import InMemoryStateStore
from protocols import EnvelopeCodec, TraceEvent

# -- bench.common ----------------------------------------------------------------------------------


def test_percentile_interpolates_between_ranks() -> None:
    samples = [4.0, 1.0, 3.0, 2.0]
    assert common.percentile(samples, 0) == 1.0
    assert common.percentile(samples, 50) == 2.5
    assert common.percentile(samples, 100) == 4.0
    assert common.percentile(list(range(101)), 95) == 95.0
    assert common.percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        common.percentile([], 50)
    with pytest.raises(ValueError):
        common.percentile([1.0], 101)


def test_stats_summarize_samples() -> None:
    stats = common.Stats.of([float(x) for x in range(1, 101)])
    assert (stats.n, stats.min, stats.max) == (100, 1.0, 100.0)
    assert stats.mean == 50.5
    assert stats.p50 == 50.5
    assert stats.p95 == pytest.approx(95.05)
    assert stats.p99 == pytest.approx(99.01)


def test_ratio_and_targets() -> None:
    assert common.ratio(10.0, 2.0) == 5.0
    assert common.ratio(1.0, 0.0) == math.inf
    ok, missed = common.Target("a", True, "1 ms"), common.Target("b", False, "9 ms")
    assert common.render_targets([ok, missed]) == ["PASS  a: 1 ms", "FAIL  b: 9 ms"]
    assert common.exit_code([ok, missed], check=True) == 1
    assert common.exit_code([ok, missed], check=False) == 0
    assert common.exit_code([ok], check=True) == 0


def test_fmt_and_command_line() -> None:
    assert common.fmt(1234) == "1,234"
    assert common.fmt(0.1234) == "0.12"
    assert common.fmt(12.34) == "12.3"
    assert common.fmt(1234.5) == "1,234"  # banker's rounding: the table shows whole numbers
    assert common.fmt(float("nan")) == "-"
    assert common.fmt("x") == "x"
    assert common.command_line("bench.bus", ["--quick", "a b"]) == "python -m bench.bus --quick 'a b'"
    assert common.run_id("bus").startswith("bench-bus-") and common.run_id("bus") != common.run_id("bus")


# -- bench.checkpoint ------------------------------------------------------------------------------


def test_make_state_reaches_the_size_and_round_trips() -> None:
    state = checkpoint.make_state(4 * 1024, seed=1)
    data = state.to_bytes()
    assert 4 * 1024 <= len(data) < 6 * 1024
    assert state.turn == len(state.history) > 0
    again = StepState.from_bytes(data)
    assert again.history == state.history and again.outputs == state.outputs
    naive = json.loads(checkpoint.naive_bytes(state))
    assert len(naive["history"]) == state.turn and naive["variables"]["auth_token"]["secret"] is True


def test_fsync_write_and_fs_type(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    checkpoint.fsync_write(target, b"{}")
    assert target.read_bytes() == b"{}"
    assert isinstance(checkpoint.fs_type(tmp_path), str) and checkpoint.fs_type(tmp_path)


# -- bench.bus -------------------------------------------------------------------------------------


def test_bench_envelope_carries_its_send_time_through_the_codec() -> None:
    codec = EnvelopeCodec()
    env = codec.decode(codec.encode(bus.bench_envelope(42, 123_456_789_000)))
    attrs = env.payload_model(TraceEvent).attributes
    assert (attrs["seq"], attrs["sent_ns"]) == (42, 123_456_789_000)


def test_raw_value_matches_envelope_size_and_round_trips() -> None:
    size = bus.envelope_size()
    value = bus.raw_value(7, 99, size)
    assert len(value) == size
    assert bus.parse_raw(value) == (7, 99)


# -- bench.runtime ---------------------------------------------------------------------------------


def test_turn_overheads_subtract_the_reasoner_and_skip_the_first_turn() -> None:
    progress_ns = [0, 3_000_000, 5_000_000]  # turns 1..3 published at 0, 3 and 5 ms
    reasoner_ms = [9.0, 1.0, 0.5]
    assert runtime.turn_overheads_ms(progress_ns, reasoner_ms) == [2.0, 1.5]
    with pytest.raises(ValueError):
        runtime.turn_overheads_ms(progress_ns, [1.0])


def test_session_timeout_and_workflow_latency_helpers() -> None:
    assert runtime.effective_session_timeout_ms(3000, 6000) == 6000
    assert runtime.effective_session_timeout_ms(3000, 1000) == 3000
    assert runtime.effective_session_timeout_ms(3000, None) == 3000
    lat = runtime.workflow_latencies_ms({"a": 1000, "b": 2000}, {"a": 1500, "c": 9})
    assert lat == [500.0]


def test_reconciliation_spec_is_sized() -> None:
    spec = runtime.reconciliation_spec(patients=2, page_size=2)
    fetch = spec.step("fetch")
    assert (fetch.params["patients"], fetch.params["page_size"]) == (2, 2)
    assert [s.id for s in spec.steps] == ["identity", "fetch", "validate", "report"]


async def test_measure_step_times_every_turn_in_memory() -> None:
    run = await runtime.measure_step(InMemoryStateStore(), "wf-smoke", 4)
    assert len(run.overhead_ms) == 3 and len(run.reasoner_ms) == 4 and len(run.write_ms) == 4
    assert all(x > 0 for x in run.overhead_ms)
    assert run.state_bytes > 0


def test_fast_state_bytes_is_byte_identical_to_to_bytes() -> None:
    state = checkpoint.make_state(2 * 1024, seed=3)
    state.variables["auth_token"].secret = False  # a secret is sealed by to_bytes, not by the fast packer
    assert checkpoint.fast_state_bytes(state) == state.to_bytes()


async def test_turns_state_and_the_bounded_state_the_bench_writes() -> None:
    from mesh.runtime import HistoryArchiver
    from mesh.store import InMemoryBlobStore

    flat = checkpoint.turns_state(100, seed=3)
    assert flat.turn == len(flat.history) == 100 and [r.turn for r in flat.history] == list(range(1, 101))
    assert StepState.from_bytes(flat.to_bytes()).history == flat.history
    blobs = InMemoryBlobStore()
    bounded = await checkpoint._bounded_state(100, HistoryArchiver(blobs, checkpoint.HISTORY), seed=3)
    window, segment = checkpoint.HISTORY.window, checkpoint.HISTORY.segment
    assert window <= len(bounded.history) < window + segment
    assert bounded.archive.through + len(bounded.history) == 100 == bounded.turn
    assert len(bounded.to_bytes()) < len(flat.to_bytes()) / 2
# -- bench.throughput ------------------------------------------------------------------------------


def test_throughput_parses_lists_and_groups_profiled_time_by_category() -> None:
    assert throughput.parse_ints("10,100, 1000") == [10, 100, 1000]
    stats = {
        ("~", 0, "<method 'sign' of 'cryptography...Ed25519PrivateKey' objects>"): (1, 1, 2.0, 2.0, {}),
        ("/x/site-packages/aiokafka/conn.py", 10, "send"): (1, 1, 1.0, 1.0, {}),
        ("/x/site-packages/redis/asyncio/client.py", 5, "execute"): (1, 1, 0.5, 0.5, {}),
        ("/w/mesh/runtime/worker.py", 1, "fold"): (1, 1, 0.25, 0.25, {}),
        ("/x/lib/python3.11/json/decoder.py", 1, "decode"): (1, 1, 0.125, 0.125, {}),
        ("~", 0, "<method 'poll' of 'select.epoll' objects>"): (1, 1, 9.0, 9.0, {}),
    }
    spent, idle = throughput.categorize(stats)
    assert idle == 9.0
    assert spent["sign + verify (Ed25519)"] == 2.0
    assert spent["Kafka client (aiokafka)"] == 1.0
    assert spent["Redis client (redis-py)"] == 0.5
    assert spent["mesh runtime (Python)"] == 0.25
    assert spent["other Python"] == 0.125
    assert sum(spent.values()) == 3.875


def test_cpu_seconds_of_this_process_grows_and_of_a_gone_one_is_zero() -> None:
    import os

    before = throughput.cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))
    assert throughput.cpu_seconds(os.getpid()) > before
    assert throughput.cpu_seconds(2**22 + 12345) == 0.0
