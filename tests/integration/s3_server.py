"""A real S3-compatible server for tests: s3proxy (org.gaul:s3proxy, Apache-2.0) on a filesystem backend.

The jar is the one ``.ci/tools.d/32-s3proxy.sh`` caches (``MESH_S3PROXY_JAR``). Without it the
tests skip, saying how to get it; with ``MESH_REQUIRE_S3=1`` (set by that script in CI) they fail.
Each server gets a free port, its own data directory and its own credentials, and runs with
signature checks on (``aws-v2-or-v4``), so a wrong secret is refused as S3 refuses it.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["S3Server", "s3proxy_jar"]

JAR_ENV = "MESH_S3PROXY_JAR"
REQUIRE_ENV = "MESH_REQUIRE_S3"


def s3proxy_jar() -> Path:
    """The s3proxy jar, or skip (fail under ``MESH_REQUIRE_S3=1``) saying how to get it."""
    jar = os.environ.get(JAR_ENV, "")
    if jar and Path(jar).is_file():
        return Path(jar)
    message = f"no s3proxy jar ({JAR_ENV}={jar or 'unset'}); run: source .ci/tools.d/32-s3proxy.sh"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    """One s3proxy process on 127.0.0.1."""

    jar: Path
    root: Path
    port: int = field(default_factory=_free_port)
    access_key: str = "mesh-test"
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90.0) -> None:
        """Start it and wait until it accepts connections."""
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        conf = self.root / "s3proxy.conf"
        conf.write_text(
            f"s3proxy.endpoint={self.endpoint}\n"
            "s3proxy.authorization=aws-v2-or-v4\n"
            f"s3proxy.identity={self.access_key}\n"
            f"s3proxy.credential={self.secret_key}\n"
            "jclouds.provider=filesystem\n"
            f"jclouds.filesystem.basedir={data}\n"
        )
        conf.chmod(0o600)
        log = (self.root / "s3proxy.log").open("ab")
        self.proc = subprocess.Popen(
            [
                "java",
                "-Xmx256m",
                "-XX:TieredStopAtLevel=1",
                "-jar",
                str(self.jar),
                "--properties",
                str(conf),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"s3proxy exited with {self.proc.returncode}; see {self.root / 's3proxy.log'}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"s3proxy did not listen on {self.port} within {timeout_s} s")

    def kill(self) -> None:
        """SIGKILL the server (a crash) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()
