"""Every decoder of outside input, fuzzed: any input gives a value or the project's own error.

Hypothesis drives each target in bench/fuzz_targets.py with three kinds of input: arbitrary
bytes, mutations of valid inputs, and structured hostile values (deep nesting, huge chains);
its deadline bounds time per input. A short atheris (coverage-guided) pass runs each target in
a child process with libFuzzer's time and memory limits; the long run is
``python -m bench.fuzz --inputs 1000000``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import tracemalloc
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import fuzz
from bench.fuzz_targets import TARGETS, envelope_with_raw_payload, seeds
from mesh.security import EnvelopeRejected as SecurityRejected
from mesh.security import EnvelopeSigner, EnvelopeVerifier, Keyring, generate_keypair
from protocols import EnvelopeCodec, EnvelopeDecodeError
from tests.fuzz.hostile import hostile_corpus

FUZZ = settings(max_examples=int(os.environ.get("MESH_FUZZ_EXAMPLES", "50")), deadline=2000,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


_SEEDS = {name: tuple(seeds(name)) for name in TARGETS}  # fixed once: hypothesis replays draws


def _check(name: str, data: bytes) -> None:
    target = TARGETS[name]
    try:
        target.run(data)
    except target.allowed:
        pass


@st.composite
def _mutated(draw: st.DrawFn, name: str) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS[name])))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "splice"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and data:
            del data[i : i + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[i:]
        elif op == "splice":
            data[i:i] = bytes([draw(st.sampled_from([0x91, 0x81, 0xdc, 0xde, 0xc4, 0xd9, 0xdd]))]) * draw(st.integers(1, 3000))
    return bytes(data)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=40,
)


@pytest.mark.parametrize("name", sorted(TARGETS))
@FUZZ
@given(data=st.data())
def test_any_input_gives_a_value_or_our_error(name: str, data: st.DataObject) -> None:
    raw = data.draw(st.one_of(st.binary(max_size=2048), _mutated(name)), label="input")
    _check(name, raw)


@pytest.mark.parametrize("name", ["envelope", "gossip_payload", "vote_payload"])
@FUZZ
@given(value=_json_values, depth=st.integers(0, 3000), kind=st.integers(0, 255))
def test_structured_payloads_give_a_value_or_our_error(name: str, value: object, depth: int, kind: int) -> None:
    packed = msgpack.packb(value, use_bin_type=True)
    nested = b"\x91" * depth + packed
    if name == "envelope":
        _check(name, envelope_with_raw_payload("workflow.step_completed", nested))
    else:
        _check(name, bytes([kind]) + nested)


@pytest.mark.parametrize("fmt", ["json", "yaml"])
@settings(FUZZ, deadline=60_000, max_examples=30)  # PyYAML is pure Python: slow per spec
@given(value=_json_values, steps=st.integers(0, 1200), depth=st.integers(0, 5000))
def test_specs_give_a_spec_or_a_spec_error(fmt: str, value: object, steps: int, depth: int) -> None:
    if fmt == "yaml":
        steps //= 20  # the step limit itself is exercised through JSON (same checks after parsing)
    chain = [{"id": f"s{i}", "role": "r", "depends_on": [f"s{i - 1}"] if i else []} for i in range(steps)]
    spec = {"name": "x", "variables": {"v": value}, "steps": chain}
    text = json.dumps(spec)  # JSON is YAML too
    _check(f"spec_{fmt}", text.encode())
    _check(f"spec_{fmt}", ("[" * depth + "]" * depth).encode())
    _check(f"spec_{fmt}", ("{a: " * depth + "1" + "}" * depth).encode())


def test_deep_and_huge_inputs_stay_within_time_and_memory() -> None:
    # The reproductions of issue 8 and their larger cousins: bounded memory, our error type.
    codec = EnvelopeCodec()
    tracemalloc.start()
    try:
        for depth in (1000, 10_000, 100_000):
            for record in (b"\x91" * depth + b"\xc0", envelope_with_raw_payload("workflow.step_completed", b"\x91" * depth + b"\xc0")):
                with pytest.raises(EnvelopeDecodeError) as info:
                    codec.decode(record)
                assert info.value.reason in {"too_deep", "malformed"}
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024, peak


def test_every_hostile_record_is_refused_by_the_codec_or_the_verifier() -> None:
    # The live chaos test publishes this corpus onto a real log; here, the same corpus must be
    # refused at the codec or the signature check, never reach a handler, never raise anything else.
    keys = generate_keypair("chaos-test")
    signer = EnvelopeSigner("chaos-test", keys.private_key)
    verifier = EnvelopeVerifier(Keyring({"chaos-test": keys.public_key}))
    seed = random.randrange(2**32)
    corpus = hostile_corpus(random.Random(seed), workflow_id="wf-1", sign=signer.sign, size=120)
    reasons: dict[str, set[str]] = {}
    for label, raw in corpus:
        try:
            if raw is None:
                raise EnvelopeDecodeError("tombstone", reason="malformed")
            verifier.verify(EnvelopeCodec(max_bytes=262_144).decode(raw))
        except (EnvelopeDecodeError, SecurityRejected) as exc:
            reasons.setdefault(label, set()).add(exc.reason)
        else:
            pytest.fail(f"seed {seed}: hostile {label} record was accepted")
    assert reasons["deep_record"] <= {"too_deep", "malformed"}
    assert reasons["long_chain"] <= {"schema", "oversize"}
    assert reasons["long_cycle"] <= {"schema", "oversize"}
    assert reasons["wide_fan_in"] <= {"schema", "oversize"}


def test_fuzz_target_list_matches_the_runner() -> None:
    assert set(fuzz.ALL_TARGETS) == set(TARGETS)


_HAS_ATHERIS = importlib.util.find_spec("atheris") is not None


@pytest.mark.skipif(not _HAS_ATHERIS and not os.environ.get("MESH_REQUIRE_ATHERIS"),
                    reason="atheris is not installed (pip install atheris; CI installs it with .[dev])")
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_short_coverage_guided_pass(name: str, tmp_path: Path) -> None:
    result = fuzz.run_target(name, inputs=int(os.environ.get("MESH_FUZZ_INPUTS", "1500")), findings=tmp_path,
                             timeout_s=20, seed=1)
    findings = sorted(p.name for p in tmp_path.glob("*.txt"))
    detail = "\n".join((tmp_path / f).read_text()[-2000:] for f in findings[:2])
    log = (tmp_path / f"{name}.log").read_text()[-3000:] if (tmp_path / f"{name}.log").exists() else ""
    assert result.findings == 0, f"{result}\n{detail}\n{log}"
    assert result.runs >= int(os.environ.get("MESH_FUZZ_INPUTS", "1500")), f"{result}\n{log}"
