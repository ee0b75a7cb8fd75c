"""Structural limits and the spec parser: refused before recursion, configurable, iterative DAG checks."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import (
    Envelope,
    EnvelopeCodec,
    EnvelopeDecodeError,
    LimitExceeded,
    Limits,
    WorkflowSpec,
    WorkflowSpecError,
    WorkflowSubmitted,
    check_structure,
    load_workflow_spec,
    parse_workflow_spec,
    set_limits,
)
from protocols.workflow import _find_cycle


@pytest.fixture(autouse=True)
def _reset_limits() -> object:
    yield
    set_limits(None)


def _chain(n: int) -> dict:  # type: ignore[type-arg]
    return {"name": "c", "steps": [{"id": f"s{i}", "role": "r", "depends_on": [f"s{i - 1}"] if i else []} for i in range(n)]}


def test_the_issue_reproductions_are_our_errors() -> None:
    with pytest.raises(EnvelopeDecodeError) as info:
        EnvelopeCodec().decode(b"\x91" * 1000 + b"\xc0")
    assert info.value.reason == "too_deep"
    spec = WorkflowSpec.parse(_chain(1000))  # the default limit admits it, iteratively
    assert spec.topological_order()[-1] == "s999" and len(spec.ancestors("s999")) == 999
    with pytest.raises(WorkflowSpecError) as err:
        parse_workflow_spec(json.dumps(_chain(1001)), fmt="json", source="big.json")
    assert err.value.reason == "too_many_steps" and "big.json" in str(err.value)
    # The same chain inside a WorkflowSubmitted on the wire: refused by the codec, not a crash.
    env = Envelope(kind=WorkflowSubmitted.KIND, sender="c", workflow_id="w", payload={"spec": _chain(1001)})
    with pytest.raises(EnvelopeDecodeError) as info:
        EnvelopeCodec().decode(EnvelopeCodec().encode(env))
    assert info.value.reason == "schema" and "1001 steps" in str(info.value)


def test_limits_come_from_the_environment_and_bad_values_are_named() -> None:
    limits = Limits.from_env({"MESH_MAX_NESTING_DEPTH": "8", "MESH_MAX_SPEC_STEPS": "3"})
    assert limits.max_depth == 8 and limits.max_steps == 3 and limits.max_dependencies == 256
    with pytest.raises(ValueError, match="MESH_MAX_SPEC_STEPS"):
        Limits.from_env({"MESH_MAX_SPEC_STEPS": "many"})
    with pytest.raises(ValueError, match="at least 1"):
        Limits.from_env({"MESH_MAX_VALUE_NODES": "0"})
    set_limits(limits)
    with pytest.raises(WorkflowSpecError, match="more than the limit of 3"):
        WorkflowSpec.parse(_chain(4))
    with pytest.raises(EnvelopeDecodeError, match="deeper than 8"):
        EnvelopeCodec().decode(b"\x91" * 9 + b"\xc0")


def test_fan_in_and_size_limits() -> None:
    steps = [{"id": f"s{i}", "role": "r"} for i in range(300)]
    steps.append({"id": "sink", "role": "r", "depends_on": [f"s{i}" for i in range(300)]})
    with pytest.raises(WorkflowSpecError) as err:
        WorkflowSpec.parse({"name": "f", "steps": steps})
    assert err.value.reason == "fan_in"
    with pytest.raises(LimitExceeded) as exc:
        check_structure([[0] * 1000] * 1000, what="v")
    assert exc.value.reason == "too_large"


@pytest.mark.parametrize("text", [
    "[" * 20000 + "]" * 20000,
    "a: " + "{b: " * 5000 + "1" + "}" * 5000,
    "\n".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9 if i else ["1"] * 9) + "]" for i in range(12)),
    "!!python/object/apply:os.system ['true']",
    "name: x\nsteps: [{id: a, role: r, depends_on: [b]}, {id: b, role: r, depends_on: [a]}]",
])
def test_hostile_yaml_is_a_spec_error(text: str) -> None:
    with pytest.raises(WorkflowSpecError):
        parse_workflow_spec(text, source="evil.yaml")


def test_binary_files_are_a_spec_error(tmp_path: Path) -> None:
    for name, data in [("a.yaml", bytes(range(256))), ("b.json", b"\xff\xfe{}"), ("c.yaml", b"name: x\x00")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(WorkflowSpecError) as err:
            load_workflow_spec(tmp_path / name)
        assert err.value.reason == "encoding" and name in str(err.value)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 60), edges=st.lists(st.tuples(st.integers(0, 59), st.integers(0, 59)), max_size=150))
def test_iterative_cycle_check_agrees_with_kahn(n: int, edges: list[tuple[int, int]]) -> None:
    deps: dict[str, list[str]] = {f"s{i}": [] for i in range(n)}
    for a, b in edges:
        if a < n and b < n and a != b and f"s{b}" not in deps[f"s{a}"]:
            deps[f"s{a}"].append(f"s{b}")
    frozen = {k: tuple(v) for k, v in deps.items()}
    cycle = _find_cycle(frozen)
    indegree = {k: 0 for k in frozen}
    for v in frozen.values():
        for d in v:
            indegree[d] += 1
    ready = [k for k, d in indegree.items() if d == 0]
    removed = 0
    while ready:
        k = ready.pop()
        removed += 1
        for d in frozen[k]:
            indegree[d] -= 1
            if indegree[d] == 0:
                ready.append(d)
    assert (cycle == []) == (removed == n)
    for i, node in enumerate(cycle):  # a reported cycle is a real one
        assert cycle[(i + 1) % len(cycle)] in frozen[node]
    if not cycle:
        spec = WorkflowSpec.parse({"name": "g", "steps": [{"id": k, "role": "r", "depends_on": list(v)} for k, v in frozen.items()]})
        order = spec.topological_order()
        position = {k: i for i, k in enumerate(order)}
        assert sorted(order) == sorted(frozen)
        assert all(position[d] < position[k] for k, v in frozen.items() for d in v)


def test_a_long_cycle_is_found_without_recursion() -> None:
    n = 1000
    steps = [{"id": f"s{i}", "role": "r", "depends_on": [f"s{(i + 1) % n}"]} for i in range(n)]
    random.Random(1).shuffle(steps)
    with pytest.raises(WorkflowSpecError, match="dependency cycle"):
        WorkflowSpec.parse({"name": "c", "steps": steps})
