"""Installing the services' software: Kafka jars through Maven, Redis (and a JDK) through apt."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

from mesh.dev._config import DevConfig
from mesh.dev._errors import DevInstallError
from mesh.dev._process import file_lock, log_tail

__all__ = [
    "Progress",
    "ensure_kafka_jars",
    "ensure_redis_binary",
    "ensure_tools",
    "find_redis_server",
    "kafka_jars_ready",
]

Progress = Callable[[str], None]
"""Receives one-line progress messages of long steps (Maven downloads, apt-get)."""

_MARKER = ".mesh-complete"


def _quiet(_: str) -> None:
    return None


def _pom_text() -> str:
    return resources.files("mesh.dev").joinpath("kafka/pom.xml").read_text()


def _marker_text(config: DevConfig) -> str:
    digest = hashlib.sha256(_pom_text().encode()).hexdigest()[:16]
    return f"kafka_version={config.kafka_version} pom_sha256={digest}\n"


def kafka_jars_ready(config: DevConfig) -> bool:
    """Whether the jar cache holds a complete resolve of this Kafka version and pom."""
    marker = config.kafka_libs_dir / _MARKER
    try:
        return marker.read_text() == _marker_text(config)
    except FileNotFoundError:
        return False


def ensure_kafka_jars(config: DevConfig, *, progress: Progress = _quiet) -> bool:
    """Resolve the broker's runtime jars into ``config.kafka_libs_dir`` unless already there.

    Returns True if Maven ran. Maven's own cache (``~/.m2``) makes a repeat resolve cheap; the
    marker file makes a repeat call free.
    """
    if kafka_jars_ready(config):
        return False
    ensure_tools(progress=progress)
    libs = config.kafka_libs_dir
    build_dir = libs.parent / "build"
    with file_lock(libs.parent / "install.lock"):
        if kafka_jars_ready(config):  # another process finished while we waited
            return False
        build_dir.mkdir(parents=True, exist_ok=True)
        # Maven runs on a copy: the package may sit read-only in site-packages.
        (build_dir / "pom.xml").write_text(_pom_text())
        staging = libs.with_name(f".{libs.name}.{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        maven_log = build_dir / "maven.log"
        argv = [
            "mvn",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(build_dir / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
            f"-Dkafka.version={config.kafka_version}",
        ]
        progress(f"resolving Kafka {config.kafka_version} jars with Maven (log: {maven_log})")
        _run_streaming(argv, cwd=build_dir, log_path=maven_log, progress=progress, what="maven")
        jars = sorted(staging.glob("*.jar"))
        if not any(j.name.startswith("kafka_2.13-") for j in jars):
            raise DevInstallError(f"Maven finished but {staging} holds no kafka_2.13 jar; see {maven_log}")
        (staging / _MARKER).write_text(_marker_text(config))
        if libs.exists():
            shutil.rmtree(libs)
        staging.rename(libs)
        progress(f"{len(jars)} jars in {libs}")
    return True


def _run_streaming(
    argv: Sequence[str], *, cwd: Path, log_path: Path, progress: Progress, what: str
) -> None:
    started = time.monotonic()
    downloads = 0
    last_report = started
    with log_path.open("w") as log:
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
        except FileNotFoundError as exc:
            raise DevInstallError(f"{argv[0]} not found: {exc}") from exc
        assert proc.stdout is not None
        with proc:
            for line in proc.stdout:
                log.write(line)
                if "Downloaded from" in line:
                    downloads += 1
                now = time.monotonic()
                if now - last_report >= 2.0:
                    last_report = now
                    detail = f", {downloads} files downloaded" if downloads else ""
                    progress(f"{what}: {now - started:.0f} s{detail}")
            code = proc.wait()
    if code != 0:
        raise DevInstallError(
            f"{what} failed (exit {code}): {' '.join(argv)}\n"
            f"--- last lines of {log_path} ---\n{log_tail(log_path)}"
        )


def find_redis_server() -> str | None:
    """Path of the ``redis-server`` binary, or None (Debian puts it in /usr/bin)."""
    found = shutil.which("redis-server")
    if found:
        return found
    for candidate in ("/usr/bin/redis-server", "/usr/local/bin/redis-server", "/usr/sbin/redis-server"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _apt_install(packages: Sequence[str], *, state_dir: Path, progress: Progress) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise DevInstallError(
            f"{', '.join(packages)} missing and this is not a root Debian shell; install it with: "
            f"sudo apt-get install -y {' '.join(packages)}"
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "apt.log"
    progress(f"apt-get install {' '.join(packages)} (log: {log_path})")
    # The package lists on a fresh machine are empty or stale: update first, once.
    _run_streaming(
        ["apt-get", "update", "-q"], cwd=state_dir, log_path=log_path, progress=progress, what="apt-get update"
    )
    _run_streaming(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        cwd=state_dir,
        log_path=log_path.with_name("apt-install.log"),
        progress=progress,
        what="apt-get install",
    )


def ensure_redis_binary(config: DevConfig, *, progress: Progress = _quiet) -> str:
    """Path of ``redis-server``, installed with apt-get (as root) when it is missing."""
    found = find_redis_server()
    if found:
        return found
    _apt_install(["redis-server"], state_dir=config.root, progress=progress)
    found = find_redis_server()
    if not found:
        raise DevInstallError("apt-get installed redis-server but no redis-server binary was found")
    return found


def ensure_tools(*, progress: Progress = _quiet, state_dir: Path | None = None) -> None:
    """Make sure ``java`` (17+) and ``mvn`` are on PATH, installing them with apt-get as root."""
    missing = []
    if shutil.which("java") is None:
        missing.append("default-jre-headless")
    if shutil.which("mvn") is None:
        missing.append("maven")
    if missing:
        _apt_install(missing, state_dir=state_dir or DevConfig().root, progress=progress)
    version = _java_major_version()
    if version is not None and version < 17:
        raise DevInstallError(f"Kafka 4 needs Java 17 or newer; `java` is version {version}")


def _java_major_version() -> int | None:
    try:
        out = subprocess.run(
            ["java", "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    # e.g. 'openjdk version "17.0.15" 2025-04-15' or 'java version "1.8.0_392"'
    for line in out.splitlines():
        if "version" in line and '"' in line:
            number = line.split('"')[1]
            parts = number.split(".")
            try:
                return int(parts[1]) if parts[0] == "1" else int(parts[0])
            except (IndexError, ValueError):
                return None
    return None
