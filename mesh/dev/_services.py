"""Kafka and Redis together: install, up, down, status, restarts for chaos tests, test leases."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mesh.dev._config import DevConfig
from mesh.dev._install import (
    Progress,
    ensure_kafka_jars,
    ensure_redis_binary,
    ensure_tools,
    find_redis_server,
    kafka_jars_ready,
)
from mesh.dev._kafka import KafkaService
from mesh.dev._process import file_lock, is_alive, read_pidfile
from mesh.dev._redis import RedisService
from mesh.dev._service import LocalService, ServiceStatus

__all__ = [
    "DevServices",
    "DevStatus",
    "DownReport",
    "InstallReport",
    "UpReport",
    "down",
    "ensure_installed",
    "status",
    "up",
]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class DevStatus:
    """Status of every local service."""

    kafka: ServiceStatus
    """The broker."""

    redis: ServiceStatus
    """Redis."""

    @property
    def services(self) -> tuple[ServiceStatus, ...]:
        """Both, in start order."""
        return (self.redis, self.kafka)

    @property
    def all_running(self) -> bool:
        """Whether every service runs."""
        return all(s.running for s in self.services)


@dataclass(frozen=True)
class InstallReport:
    """What :meth:`DevServices.ensure_installed` did."""

    maven_ran: bool
    """Whether the Kafka jars had to be resolved (False: the cache was complete)."""

    redis_server: str
    """Path of the ``redis-server`` binary."""

    elapsed_s: float
    """Wall time of the whole step, in seconds."""


@dataclass(frozen=True)
class UpReport:
    """What :meth:`DevServices.up` did."""

    started: tuple[str, ...]
    """Services this call started."""

    already_running: tuple[str, ...]
    """Services that ran before the call and were left alone."""

    status: DevStatus
    """Status after the call."""

    elapsed_s: float
    """Wall time of the call, install check included, in seconds."""


@dataclass(frozen=True)
class DownReport:
    """What :meth:`DevServices.down` did."""

    stopped: tuple[str, ...]
    """Services this call stopped."""

    elapsed_s: float
    """Wall time of the call, in seconds."""


class DevServices:
    """The local Kafka and Redis of one state directory.

    Every method is blocking and safe to call from several threads and processes at once: they
    take an exclusive file lock in the state directory, so two test sessions starting together
    start the services once. From async code call them through ``asyncio.to_thread``.
    """

    def __init__(self, config: DevConfig | None = None) -> None:
        self.config = config if config is not None else DevConfig()
        self.kafka = KafkaService(self.config)
        self.redis = RedisService(self.config)
        self._thread_lock = threading.RLock()
        self._lock_depth = 0
        self._lock_stack = contextlib.ExitStack()

    # -- addresses -------------------------------------------------------------------------------

    @property
    def kafka_bootstrap(self) -> str:
        """Bootstrap address of the broker."""
        return self.config.kafka_bootstrap

    @property
    def redis_url(self) -> str:
        """URL of Redis."""
        return self.config.redis_url

    # -- whole set -------------------------------------------------------------------------------

    def ensure_installed(self, *, progress: Progress = _quiet) -> InstallReport:
        """Resolve the Kafka jars and install ``redis-server`` (and a JDK, Maven) if missing."""
        started = time.monotonic()
        ensure_tools(progress=progress, state_dir=self.config.root)
        maven_ran = ensure_kafka_jars(self.config, progress=progress)
        redis_server = ensure_redis_binary(self.config, progress=progress)
        return InstallReport(maven_ran, redis_server, time.monotonic() - started)

    def up(self, *, progress: Progress = _quiet) -> UpReport:
        """Install what is missing, then start each service that does not run yet.

        If one fails, the ones this call started are stopped again before the error is raised,
        so nothing is left half-running.

        Raises:
            mesh.dev.PortInUseError: a port is held by a process ``mesh dev`` did not start.
            mesh.dev.DevServiceError: a service failed to start; the message has its log tail.
            mesh.dev.DevInstallError: software could not be installed.
        """
        began = time.monotonic()
        if not self._installed():
            self.ensure_installed(progress=progress)
        started: list[str] = []
        already: list[str] = []
        with self._locked():
            try:
                for service in self._in_start_order():
                    progress(f"starting {service.name} on {service.address}")
                    if service.start():
                        started.append(service.name)
                    else:
                        already.append(service.name)
            except BaseException:
                for name in reversed(started):
                    self._service(name).stop()
                raise
            current = self.status()
        return UpReport(tuple(started), tuple(already), current, time.monotonic() - began)

    def down(self) -> DownReport:
        """Stop the services this state directory started (others are never signalled)."""
        began = time.monotonic()
        with self._locked():
            stopped = [s.name for s in reversed(self._in_start_order()) if s.stop()]
        return DownReport(tuple(stopped), time.monotonic() - began)

    def status(self) -> DevStatus:
        """Status of both services; changes nothing."""
        return DevStatus(kafka=self.kafka.status(), redis=self.redis.status())

    # -- one service, for chaos tests: data survives every stop -----------------------------------

    def start_kafka(self) -> bool:
        """Start the broker (jars must be installed); True if it was not running."""
        with self._locked():
            return self.kafka.start()

    def stop_kafka(self, *, kill: bool = False) -> bool:
        """Stop the broker with SIGTERM (controlled shutdown) or SIGKILL; True if it ran."""
        with self._locked():
            return self.kafka.stop(kill=kill)

    def restart_kafka(self, *, kill: bool = False) -> None:
        """Stop (SIGTERM, or SIGKILL when ``kill``) and start the broker, keeping its data."""
        with self._locked():
            self.kafka.stop(kill=kill)
            self.kafka.start()

    def start_redis(self) -> bool:
        """Start Redis; True if it was not running."""
        with self._locked():
            return self.redis.start()

    def stop_redis(self, *, kill: bool = False) -> bool:
        """Stop Redis with SIGTERM (AOF flushed) or SIGKILL (loses what fsync had not written)."""
        with self._locked():
            return self.redis.stop(kill=kill)

    def restart_redis(self, *, kill: bool = False) -> None:
        """Stop (SIGTERM, or SIGKILL when ``kill``) and start Redis, keeping its AOF data."""
        with self._locked():
            self.redis.stop(kill=kill)
            self.redis.start()

    # -- leases: shared services for concurrent test sessions ---------------------------------

    @contextlib.contextmanager
    def lease(self, *, keep_running: bool = False) -> Iterator[UpReport]:
        """Bring the services up for the ``with`` body, shared with other holders.

        Services a lease started are stopped when the last live lease is released, so several
        test sessions on one machine can use the same services without pulling them from
        under each other. Services started by someone else (``mesh dev up``) are never stopped;
        with ``keep_running`` the services this lease starts are left running as well.
        """
        leases = self.config.root / "leases"
        me = leases / str(os.getpid())
        with self._locked():
            report = self.up()
            leases.mkdir(parents=True, exist_ok=True)
            me.write_text(f"{os.getpid()}\n")
            if report.started and not keep_running:
                self._record_autostarted(report.started)
        try:
            yield report
        finally:
            with self._locked():
                me.unlink(missing_ok=True)
                if not self._live_leases(leases):
                    for name in reversed(self._take_autostarted()):
                        self._service(name).stop()

    def _record_autostarted(self, names: tuple[str, ...]) -> None:
        path = self.config.root / "leases" / "autostarted"
        known = set(path.read_text().split()) if path.exists() else set()
        path.write_text(" ".join(sorted(known | set(names))) + "\n")

    def _take_autostarted(self) -> list[str]:
        path = self.config.root / "leases" / "autostarted"
        if not path.exists():
            return []
        names = path.read_text().split()
        path.unlink()
        order = [s.name for s in self._in_start_order()]
        return [n for n in order if n in names]

    @staticmethod
    def _live_leases(leases: Path) -> list[int]:
        live = []
        for entry in leases.iterdir():
            if not entry.name.isdigit():
                continue
            pid = read_pidfile(entry)
            if pid is not None and is_alive(pid):
                live.append(pid)
            else:
                # A session that died without releasing (SIGKILL, power loss) holds nothing.
                entry.unlink(missing_ok=True)
        return live

    # -- internals -------------------------------------------------------------------------------

    def _installed(self) -> bool:
        # The fast path of `up` on a warm machine: no subprocess, only file checks.
        return (
            kafka_jars_ready(self.config)
            and shutil.which("java") is not None
            and find_redis_server() is not None
        )

    def _in_start_order(self) -> list[LocalService]:
        # Redis first: it starts in milliseconds, Kafka takes seconds.
        return [self.redis, self.kafka]

    def _service(self, name: str) -> LocalService:
        return {"kafka": self.kafka, "redis": self.redis}[name]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # flock is per open file: a second flock from this process would deadlock, so the file
        # lock is taken once per outermost call and nested calls only count depth.
        with self._thread_lock:
            if self._lock_depth == 0:
                self._lock_stack.enter_context(file_lock(self.config.root / "dev.lock"))
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0:
                    self._lock_stack.close()


def ensure_installed(config: DevConfig | None = None, *, progress: Progress = _quiet) -> InstallReport:
    """Install the services' software without starting anything (see :class:`DevServices`)."""
    return DevServices(config).ensure_installed(progress=progress)


def up(config: DevConfig | None = None, *, progress: Progress = _quiet) -> UpReport:
    """Start the local services that do not run yet (see :meth:`DevServices.up`)."""
    return DevServices(config).up(progress=progress)


def down(config: DevConfig | None = None) -> DownReport:
    """Stop the local services ``mesh dev`` started (see :meth:`DevServices.down`)."""
    return DevServices(config).down()


def status(config: DevConfig | None = None) -> DevStatus:
    """Status of the local services (see :meth:`DevServices.status`)."""
    return DevServices(config).status()
