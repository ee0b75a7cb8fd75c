"""Kafka and Redis together: install, up, down, status, restarts for chaos tests, test leases."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

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
from mesh.errors import UsageError
from mesh.security import ensure_data_key_file

__all__ = [
    "SERVICE_NAMES",
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


SERVICE_NAMES: tuple[str, ...] = ("redis", "kafka")
"""Every local service, in start order: Redis starts in milliseconds, Kafka in seconds."""


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class DevStatus:
    """Status of every local service."""

    kafka: ServiceStatus
    """The broker (node 1 of a cluster)."""

    redis: ServiceStatus
    """Redis."""

    kafka_peers: tuple[ServiceStatus, ...] = ()
    """The other nodes of a Kafka cluster (``kafka_nodes > 1``), by node id."""

    @property
    def services(self) -> tuple[ServiceStatus, ...]:
        """Every service (every Kafka node), in start order."""
        return (self.redis, self.kafka, *self.kafka_peers)

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
        self._kafka_peers = tuple(KafkaService(self.config, node) for node in self.config.kafka_node_ids[1:])
        self.redis = RedisService(self.config)
        self._thread_lock = threading.RLock()
        self._lock_depth = 0
        self._lock_stack = contextlib.ExitStack()

    # -- addresses -------------------------------------------------------------------------------

    @property
    def kafka_bootstrap(self) -> str:
        """Bootstrap addresses of the broker(s), comma separated."""
        return self.config.kafka_bootstrap

    @property
    def kafka_nodes(self) -> tuple[KafkaService, ...]:
        """Every Kafka node, node 1 first (one for a single broker)."""
        return (self.kafka, *self._kafka_peers)

    @property
    def redis_url(self) -> str:
        """URL of Redis."""
        return self.config.redis_url

    # -- whole set -------------------------------------------------------------------------------

    def ensure_installed(
        self, *, services: Sequence[str] = SERVICE_NAMES, progress: Progress = _quiet
    ) -> InstallReport:
        """Resolve the Kafka jars (JDK and Maven installed if missing) and install ``redis-server``."""
        names = self._check_names(services)
        started = time.monotonic()
        maven_ran = False
        redis_server = find_redis_server() or ""
        if "kafka" in names:
            ensure_tools(progress=progress, state_dir=self.config.root)
            maven_ran = ensure_kafka_jars(self.config, progress=progress)
        if "redis" in names:
            redis_server = ensure_redis_binary(self.config, progress=progress)
        return InstallReport(maven_ran, redis_server, time.monotonic() - started)

    def up(
        self, *, services: Sequence[str] = SERVICE_NAMES, progress: Progress = _quiet
    ) -> UpReport:
        """Install what is missing, then start each of ``services`` that does not run yet.

        If one fails, the ones this call started are stopped again before the error is raised,
        so nothing is left half-running.

        Raises:
            mesh.dev.PortInUseError: a port is held by a process ``mesh dev`` did not start.
            mesh.dev.DevServiceError: a service failed to start; the message has its log tail.
            mesh.dev.DevInstallError: software could not be installed.
        """
        names = self._check_names(services)
        began = time.monotonic()
        if not self._installed(names):
            self.ensure_installed(services=names, progress=progress)
        started: list[str] = []
        already: list[str] = []
        with self._locked():
            try:
                for name in names:
                    for service in self._members(name):
                        if service.pid() is None:
                            progress(f"starting {service.name} on {service.address}")
                    if self._start(name):
                        started.append(name)
                    else:
                        already.append(name)
            except BaseException:
                for name in reversed(started):
                    self._stop(name)
                raise
            # Started by hand now, so no test session's lease may stop it later.
            self._discard_autostarted(started)
            # Agents run against these services seal secrets at rest with this key (zero setup).
            ensure_data_key_file(self.config.root)
            current = self.status()
        return UpReport(tuple(started), tuple(already), current, time.monotonic() - began)

    def down(self) -> DownReport:
        """Stop the services this state directory started (others are never signalled)."""
        began = time.monotonic()
        with self._locked():
            stopped = [name for name in reversed(SERVICE_NAMES) if self._stop(name)]
            others = self._other_kafka_nodes()
            stopped += [node.name for node, ran in zip(others, _stop_together(others), strict=True) if ran]
            self._discard_autostarted(SERVICE_NAMES)
        return DownReport(tuple(stopped), time.monotonic() - began)

    def status(self) -> DevStatus:
        """Status of every service; changes nothing."""
        return DevStatus(
            kafka=self.kafka.status(),
            redis=self.redis.status(),
            kafka_peers=tuple(node.status() for node in self._kafka_peers),
        )

    # -- one service, for chaos tests: data survives every stop -----------------------------------

    def start_kafka(self) -> bool:
        """Start the broker or every node of the cluster (jars must be installed); True if any was down."""
        with self._locked():
            return self._start("kafka")

    def stop_kafka(self, *, kill: bool = False) -> bool:
        """Stop the broker(s) with SIGTERM (controlled shutdown) or SIGKILL; True if any ran."""
        with self._locked():
            return self._stop("kafka", kill=kill)

    def restart_kafka(self, *, kill: bool = False) -> None:
        """Stop (SIGTERM, or SIGKILL when ``kill``) and start the broker(s), keeping their data."""
        with self._locked():
            self._stop("kafka", kill=kill)
            self._start("kafka")

    def kafka_node(self, node: int) -> KafkaService:
        """Kafka node ``node`` (1-based)."""
        if node not in self.config.kafka_node_ids:
            raise UsageError(f"kafka node {node} is not in 1..{self.config.kafka_nodes}")
        return self.kafka_nodes[node - 1]

    def stop_kafka_node(self, node: int, *, kill: bool = False) -> bool:
        """Stop one node of the cluster (SIGTERM, or SIGKILL when ``kill``); True if it ran."""
        with self._locked():
            return self.kafka_node(node).stop(kill=kill)

    def start_kafka_node(self, node: int) -> bool:
        """Start one node again (it rejoins the quorum with its data); True if it was down."""
        with self._locked():
            return self.kafka_node(node).start()

    def kafka_controller(self) -> int | None:
        """Node id of the active KRaft controller, as the live nodes last recorded it (None: unknown).

        Each voter writes the quorum's leader and epoch to its ``quorum-state`` file; the highest
        epoch among running nodes wins, so a stale record of a dead leader is outvoted.
        """
        states = [s for node in self.kafka_nodes if node.pid() is not None and (s := node.quorum_state())]
        if not states:
            return None
        return max(states, key=lambda state: state[1])[0]

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
    def lease(
        self, *, services: Sequence[str] = SERVICE_NAMES, keep_running: bool = False
    ) -> Iterator[UpReport]:
        """Bring ``services`` up for the ``with`` body, shared with other holders.

        A service a lease started is stopped when the last live lease on it is released, so
        several test sessions on one machine use the same services without pulling them from
        under each other. A service started by someone else (``mesh dev up``) is never stopped;
        with ``keep_running`` neither is one this lease starts.
        """
        names = self._check_names(services)
        leases = self.config.root / "leases"
        mine = [leases / f"{name}.{os.getpid()}" for name in names]
        with self._locked():
            report = self.up(services=names)
            leases.mkdir(parents=True, exist_ok=True)
            for path in mine:
                path.write_text(f"{os.getpid()}\n")
            if report.started and not keep_running:
                self._record_autostarted(report.started)
        try:
            yield report
        finally:
            with self._locked():
                for path in mine:
                    path.unlink(missing_ok=True)
                for name in reversed(names):
                    if not self.lease_holders(name) and self._take_autostarted(name):
                        self._stop(name)

    def lease_holders(self, name: str) -> list[int]:
        """Pids of live processes holding a lease on service ``name`` (dead holders are dropped)."""
        leases = self.config.root / "leases"
        if not leases.is_dir():
            return []
        live = []
        for entry in leases.glob(f"{name}.*"):
            pid = read_pidfile(entry)
            if pid is not None and is_alive(pid):
                live.append(pid)
            else:
                # A session that died without releasing (SIGKILL, power loss) holds nothing.
                entry.unlink(missing_ok=True)
        return sorted(live)

    # Which services a lease started (and the last lease out must stop): leases/autostarted.

    def _autostarted(self) -> set[str]:
        path = self.config.root / "leases" / "autostarted"
        return set(path.read_text().split()) if path.exists() else set()

    def _write_autostarted(self, names: set[str]) -> None:
        path = self.config.root / "leases" / "autostarted"
        if names:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(" ".join(sorted(names)) + "\n")
        else:
            path.unlink(missing_ok=True)

    def _record_autostarted(self, names: Sequence[str]) -> None:
        self._write_autostarted(self._autostarted() | set(names))

    def _discard_autostarted(self, names: Sequence[str]) -> None:
        known = self._autostarted()
        if known & set(names):
            self._write_autostarted(known - set(names))

    def _take_autostarted(self, name: str) -> bool:
        known = self._autostarted()
        if name not in known:
            return False
        self._write_autostarted(known - {name})
        return True

    # -- internals -------------------------------------------------------------------------------

    def _installed(self, names: Sequence[str]) -> bool:
        # The fast path of `up` on a warm machine: no subprocess, only file checks.
        kafka_ok = kafka_jars_ready(self.config) and shutil.which("java") is not None
        redis_ok = find_redis_server() is not None
        return (kafka_ok or "kafka" not in names) and (redis_ok or "redis" not in names)


    def _other_kafka_nodes(self) -> list[KafkaService]:
        # Nodes this state directory runs under another node count (`up --kafka-nodes 3`, then a
        # plain `down`): `down` stops everything the directory started.
        other = _cluster_config(self.config)
        if other is None:
            return []
        mine = {node.workdir for node in self.kafka_nodes}
        return [n for k in other.kafka_node_ids if (n := KafkaService(other, k)).workdir not in mine]

    @staticmethod
    def running_kafka_nodes(config: DevConfig) -> int | None:
        """Node count of a Kafka cluster that runs from ``config``'s state directory, or None.

        So ``mesh dev status`` / ``down`` / ``up`` without ``--kafka-nodes`` see the cluster an
        earlier ``up --kafka-nodes 3`` started instead of a single broker that is not there.
        """
        other = _cluster_config(config)
        if other is None:
            return None
        running = any(KafkaService(other, k).pid() is not None for k in other.kafka_node_ids)
        return other.kafka_nodes if running else None

    @staticmethod
    def _check_names(services: Sequence[str]) -> tuple[str, ...]:
        unknown = set(services) - set(SERVICE_NAMES)
        if unknown or not services:
            raise UsageError(f"services must be a non-empty subset of {SERVICE_NAMES}, got {services}")
        return tuple(name for name in SERVICE_NAMES if name in services)

    def _members(self, name: str) -> tuple[LocalService, ...]:
        return self.kafka_nodes if name == "kafka" else (self.redis,)

    def _start(self, name: str) -> bool:
        members = self._members(name)
        if len(members) == 1:
            return members[0].start()
        # The voters of a KRaft quorum become ready only together: launch all, then wait.
        launched: list[tuple[LocalService, tuple[int, int]]] = []
        try:
            for member in members:
                handle = member.launch()
                if handle is not None:
                    launched.append((member, handle))
            for member, handle in launched:
                member.await_launched(handle)
        except BaseException:
            for member, _ in launched:
                member.stop(kill=True)
            raise
        return bool(launched)

    def _stop(self, name: str, *, kill: bool = False) -> bool:
        return any(_stop_together(self._members(name), kill=kill))

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


def _cluster_config(config: DevConfig) -> DevConfig | None:
    """``config`` with the node count of the cluster directories (``kafka-<k>``) in its state dir."""
    ids = [int(d.name[6:]) for d in config.root.glob("kafka-*") if d.name[6:].isdigit() and d.is_dir()]
    if not ids:
        return None
    return config.model_copy(update={"kafka_nodes": max(*ids, 2)})


def _stop_together(members: Sequence[LocalService], *, kill: bool = False) -> list[bool]:
    """Stop services all at once; whether each ran.

    The nodes of a KRaft cluster must go together: one by one, the last ones wait in controlled
    shutdown for a quorum that has already gone.
    """
    if len(members) <= 1:
        return [m.stop(kill=kill) for m in members]
    with ThreadPoolExecutor(max_workers=len(members), thread_name_prefix="mesh-dev-stop") as pool:
        return list(pool.map(lambda member: member.stop(kill=kill), members))


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
