"""Toxiproxy for network-cut tests: built from the Go module proxy, run on a free port, driven over REST.

Use with ``DevConfig(kafka_proxied_port=..., kafka_proxied_advertised_port=...)``: a second Kafka
listener that advertises the proxy's port, so clients that bootstrap through it stay behind it.

A proxy per cut link (clients dial the proxy's listen port, it forwards to the real service);
``cut`` disables a proxy (open connections are closed, new ones refused) and ``heal`` enables it
again. Loopback only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from mesh.dev._config import free_port
from mesh.dev._errors import DevInstallError, DevServiceError
from mesh.settings import MeshSettings

__all__ = ["TOXIPROXY_MODULE", "Toxiproxy", "ensure_toxiproxy"]

TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server@v2.9.0"
"""What ``go install`` builds (the binary is named ``server``; it is installed as ``toxiproxy-server``)."""


def _default_bin_dir() -> Path:
    return MeshSettings().state_dir.expanduser() / "bin"


def ensure_toxiproxy(bin_dir: Path | None = None, *, build_timeout_s: float = 300.0) -> Path:
    """Path of ``toxiproxy-server``: ``MESH_TOXIPROXY_SERVER``, on PATH, cached, or built with ``go install``.

    Raises ``DevInstallError`` when it is nowhere and cannot be built (no ``go``, or the build
    failed): a test that needs a real network cut must fail then, not skip.
    """
    explicit = os.environ.get("MESH_TOXIPROXY_SERVER")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise DevInstallError(f"MESH_TOXIPROXY_SERVER={explicit} is not an executable")
        return Path(explicit)
    on_path = shutil.which("toxiproxy-server")
    if on_path:
        return Path(on_path)
    target = (bin_dir or _default_bin_dir()) / "toxiproxy-server"
    if os.access(target, os.X_OK):
        return target
    go = shutil.which("go")
    if go is None:
        raise DevInstallError(f"toxiproxy-server not found and `go` is missing to build it ({TOXIPROXY_MODULE})")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="toxiproxy-build-") as gobin:
        env = {**os.environ, "GOBIN": gobin, "GOFLAGS": "-buildvcs=false"}
        done = subprocess.run(
            [go, "install", TOXIPROXY_MODULE],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=build_timeout_s,
            check=False,
        )
        built = Path(gobin) / "server"
        if done.returncode != 0 or not built.exists():
            raise DevInstallError(f"go install {TOXIPROXY_MODULE} failed (exit {done.returncode}): {done.stderr[-2000:]}")
        # Atomic: a concurrent session never runs a half-copied binary.
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        shutil.copy2(built, partial)
        partial.replace(target)
    return target


class Toxiproxy:
    """One ``toxiproxy-server`` process and its proxies (blocking calls; tiny and loopback-only)."""

    def __init__(self, binary: Path | None = None, *, host: str = "127.0.0.1", log_path: Path | None = None) -> None:
        """Prepare a server (``start`` builds it if needed and launches it on a free port)."""
        self.binary = binary
        self.host = host
        self.port = 0
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None

    @property
    def api(self) -> str:
        """Base URL of the REST API."""
        return f"http://{self.host}:{self.port}"

    def start(self, *, timeout_s: float = 10.0) -> Toxiproxy:
        """Launch the server and wait until its API answers."""
        binary = self.binary or ensure_toxiproxy()
        self.port = free_port(self.host)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self._proc = subprocess.Popen(
                [str(binary), "-host", self.host, "-port", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()  # type: ignore[union-attr]
        self._client = httpx.Client(base_url=self.api, timeout=5.0)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self._client.get("/version").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise DevServiceError(f"toxiproxy-server did not answer on {self.api}", service="toxiproxy")
            time.sleep(0.05)

    def proxy(self, name: str, upstream_port: int, *, listen_port: int | None = None) -> int:
        """Create proxy ``name`` forwarding ``listen_port`` (free if omitted) to ``upstream_port``; return the listen port."""
        port = listen_port or free_port(self.host)
        self._call(
            "POST",
            "/proxies",
            {"name": name, "listen": f"{self.host}:{port}", "upstream": f"{self.host}:{upstream_port}", "enabled": True},
        )
        return port

    def cut(self, *names: str) -> None:
        """Disable proxies: their connections are closed and new ones refused."""
        for name in names:
            self._call("POST", f"/proxies/{name}", {"enabled": False})

    def heal(self, *names: str) -> None:
        """Enable proxies again."""
        for name in names:
            self._call("POST", f"/proxies/{name}", {"enabled": True})

    def enabled(self, name: str) -> bool:
        """Whether proxy ``name`` passes traffic."""
        return bool(self._call("GET", f"/proxies/{name}")["enabled"])

    def stop(self) -> None:
        """Stop the server (its proxies go with it)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def __enter__(self) -> Toxiproxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, method: str, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
        if self._client is None:
            raise DevServiceError("toxiproxy is not started", service="toxiproxy")
        response = self._client.request(method, path, json=body)
        if response.status_code >= 300:
            raise DevServiceError(f"toxiproxy {method} {path}: {response.status_code} {response.text}", service="toxiproxy")
        data = response.json()
        return data if isinstance(data, dict) else {}
