"""CLI honesty: every mistake is one line on stderr and a non-zero exit; never a traceback.

Inputs are generated (hypothesis): random argv per command, random bytes and random YAML/JSON as
spec files, random DAG-shaped specs. Kafka and Redis point at closed ports, so a command that gets
past its own checks fails on the connection, which must also be one line (exit 3).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.cli import run
from mesh.runtime.cli import EXIT_UNAVAILABLE, EXIT_USAGE, one_line

ROOT = Path(__file__).resolve().parents[3]
SPEC = ROOT / "agents" / "workflows" / "reconciliation.yaml"
CLOSED = {"MESH_KAFKA_BOOTSTRAP": "127.0.0.1:1", "MESH_REDIS_URL": "redis://127.0.0.1:1/0"}
ALLOWED_CODES = {0, 1, 2, 3, 4, 130}


@pytest.fixture(autouse=True)
def _closed_services(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in CLOSED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MESH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("MESH_DEBUG", raising=False)


def invoke(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(argv)
    return code, out.getvalue(), err.getvalue()


def assert_honest(argv: list[str], code: int, err: str) -> None:
    assert code in ALLOWED_CODES, f"{argv!r}: exit {code}, stderr {err!r}"
    assert "Traceback" not in err, f"{argv!r}: traceback on stderr:\n{err}"
    if code != 0:
        lines = [line for line in err.splitlines() if "error:" in line]
        assert len(lines) == 1, f"{argv!r}: expected one error line, got {err!r}"
        assert lines[0].startswith("mesh"), lines
        others = [line for line in err.splitlines() if "error:" not in line and "warning:" not in line]
        assert others == [], f"{argv!r}: stray stderr lines {others!r}"


# -- generated argv ------------------------------------------------------------------------------

_OPTIONS = {
    "submit": ["--workflow-id", "--var", "--watch", "--no-check-roles", "--help"],
    "status": ["--json", "--read-s", "--help"],
    "watch": ["--timeout-s", "--poll-s", "--help"],
    "resume": ["--note", "--operator", "--set", "--help"],
    "reject": ["--note", "--operator", "--help"],
    "runs": ["--status", "--since", "--name", "--limit", "--json", "--read-s", "--help"],
    "gc": ["--blobs-older-than", "--dry-run", "--help"],
    "agent": ["run", "--role", "--turn-delay-s", "--roles-module", "--help"],
    "dev": ["status", "bogus", "--help"],
    "nosuchcommand": [],
}
_WORDS = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=30)
_TOKEN = st.one_of(
    _WORDS,
    st.sampled_from(["-", "--", "=", "-x", "--var", "NAME=", "=v", "a=b", "1e9", "-1", "nan", "NaN", "7d", "0",
                     "99999999999999999999", str(SPEC), "/nonexistent/spec.yaml", "/", "--json"]),
)


@st.composite
def argvs(draw: st.DrawFn) -> list[str]:
    command = draw(st.sampled_from(sorted(_OPTIONS)))
    tokens = draw(st.lists(st.one_of(_TOKEN, st.sampled_from(_OPTIONS[command] or ["--help"])), max_size=6))
    return [command, *tokens]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=argvs())
def test_random_argv_is_answered_honestly(argv: list[str]) -> None:
    if "dev" in argv[:1] and any(t in ("up", "down", "install") for t in argv):
        return  # never touch the shared services from a fuzz run
    if argv[:1] == ["gc"] and "--dry-run" not in argv:
        argv = [*argv, "--dry-run"]
    code, _out, err = invoke(argv)
    assert_honest(argv, code, err)


# -- generated spec files --------------------------------------------------------------------------

_SUFFIXES = st.sampled_from([".yaml", ".yml", ".json", "", ".txt"])


def submit_file(content: bytes, suffix: str) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"spec{suffix}"
        path.write_bytes(content)
        code, _out, err = invoke(["submit", str(path), "--no-check-roles"])
    assert_honest(["submit", f"<{len(content)} bytes>{suffix}"], code, err)
    return code, err


@settings(max_examples=40, deadline=None)
@given(content=st.binary(max_size=2000), suffix=_SUFFIXES)
def test_random_bytes_spec(content: bytes, suffix: str) -> None:
    code, _err = submit_file(content, suffix)
    assert code in (EXIT_USAGE, EXIT_UNAVAILABLE)


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), _WORDS)
_DATA = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_WORDS, inner, max_size=4),
                     max_leaves=30)


@settings(max_examples=40, deadline=None)
@given(data=_DATA, as_json=st.booleans())
def test_random_yaml_and_json_spec(data: object, as_json: bool) -> None:
    text = json.dumps(data) if as_json else yaml.safe_dump(data, allow_unicode=True)
    code, _err = submit_file(text.encode(), ".json" if as_json else ".yaml")
    assert code in (EXIT_USAGE, EXIT_UNAVAILABLE)


@st.composite
def dag_specs(draw: st.DrawFn) -> dict[str, object]:
    n = draw(st.integers(0, 12))
    ids = draw(st.lists(st.sampled_from([f"s{i}" for i in range(15)]), min_size=n, max_size=n))
    steps = []
    for sid in ids:
        step: dict[str, object] = {"id": sid, "role": draw(st.sampled_from(["fetch", "", "x y", 3])),
                                   "depends_on": draw(st.lists(st.sampled_from([f"s{i}" for i in range(15)]), max_size=3))}
        if draw(st.booleans()):
            step["limits"] = {"max_turns": draw(st.integers(-5, 10**12))}
        if draw(st.booleans()):
            step["task"] = draw(_WORDS)
        steps.append(step)
    spec: dict[str, object] = {"name": draw(st.sampled_from(["wf", "", "a" * 300])), "steps": steps}
    if draw(st.booleans()):
        spec["variables"] = draw(st.dictionaries(_WORDS, _SCALARS, max_size=3))
    return spec


@settings(max_examples=40, deadline=None)
@given(spec=dag_specs())
def test_random_dag_spec(spec: dict[str, object]) -> None:
    """Unknown dependencies, cycles, duplicates, bad roles and limits: one line each, or a valid spec."""
    code, err = submit_file(yaml.safe_dump(spec).encode(), ".yaml")
    if code == EXIT_USAGE:
        assert "mesh submit: error:" in err


# -- the classes of defect from issue 8 ---------------------------------------------------------------

@pytest.mark.parametrize("content, suffix, expect", [
    (b"\x00\xff\xfe\x01binary", ".yaml", "binary file"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), ".json", "binary file"),
    (b"name: x\nsteps: \xff\xfe\n", ".yaml", ":2: not UTF-8"),
    (b"[" * 5_000 + b"]" * 5_000, ".json", "nested too deeply"),
    (b"a: " + b"[" * 2_000, ".yaml", "nested too deeply"),
    (b"&a [*a]", ".yaml", "cyclic"),
    (b"a: &a {b: *a}", ".yaml", "cyclic"),
    (b"a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
     b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
     b"g: [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n", ".yaml", "values once YAML aliases are expanded"),
    (b"- just\n- a list\n", ".yaml", "must be a mapping"),
    (b"{]", ".json", "invalid JSON"),
    (b"a: [", ".yaml", "invalid YAML"),
])
def test_hostile_spec_files(content: bytes, suffix: str, expect: str) -> None:
    code, err = submit_file(content, suffix)
    assert code == EXIT_USAGE
    assert expect in err, err


def test_long_dependency_chain_is_one_line(tmp_path: Path) -> None:
    steps = [{"id": "s0", "role": "fetch"}] + [{"id": f"s{i}", "role": "fetch", "depends_on": [f"s{i - 1}"]}
                                                for i in range(1, 3000)]
    code, _err = submit_file(json.dumps({"name": "chain", "steps": steps}).encode(), ".json")
    assert code in (EXIT_USAGE, EXIT_UNAVAILABLE)  # refused by a limit, or accepted and Kafka is closed


def test_missing_directory_and_oversize(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _out, err = invoke(["submit", str(tmp_path / "nope.yaml")])
    assert code == EXIT_USAGE and "nope.yaml: no such file" in err
    code, _out, err = invoke(["submit", str(tmp_path)])
    assert code == EXIT_USAGE and "is a directory" in err
    monkeypatch.setenv("MESH_MAX_SPEC_BYTES", "100")
    code, _out, err = invoke(["submit", str(SPEC)])
    assert code == EXIT_USAGE and "over the 100-byte limit" in err


@pytest.mark.parametrize("var, expect", [
    ("novalue", "expected NAME=VALUE"), ("=x", "expected NAME=VALUE"), ("1abc=2", "not a variable name"),
    ("a b=c", "not a variable name"),
])
def test_bad_var_syntax(var: str, expect: str) -> None:
    code, _out, err = invoke(["submit", str(SPEC), "--var", "ok=1", "--var", var])
    assert code == EXIT_USAGE and "--var #2" in err and expect in err
    assert_honest(["submit", var], code, err)


def test_unreachable_services_say_which_and_where() -> None:
    code, _out, err = invoke(["submit", str(SPEC), "--no-check-roles"])
    assert code == EXIT_UNAVAILABLE and "Redis unreachable at redis://127.0.0.1:1/0 (MESH_REDIS_URL)" in err
    code, _out, err = invoke(["status", "wf-1"])
    assert code == EXIT_UNAVAILABLE and "Kafka unreachable at 127.0.0.1:1 (MESH_KAFKA_BOOTSTRAP)" in err
    assert_honest(["status"], code, err)


@given(st.text(max_size=500))
def test_one_line_is_one_printable_line(text: str) -> None:
    line = one_line(text)
    assert "\n" not in line and "\r" not in line and len(line) <= 400
    assert all(ch.isprintable() for ch in line)


def test_real_process_binary_spec_is_one_line(tmp_path: Path) -> None:
    """The installed entry point, as a user runs it: nothing but one line on stderr."""
    spec = tmp_path / "bin.yaml"
    spec.write_bytes(bytes(range(256)) * 4)
    env = {**os.environ, **CLOSED, "PYTHONPATH": str(ROOT), "MESH_STATE_DIR": str(tmp_path / "state")}
    for argv, code in ((["submit", str(spec)], EXIT_USAGE), (["status", "wf-x", "--json"], EXIT_UNAVAILABLE)):
        proc = subprocess.run([sys.executable, "-m", "mesh", *argv], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == code, (argv, proc.returncode, proc.stderr)
        assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr, (argv, proc.stderr)
