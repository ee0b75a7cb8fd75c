"""One local service: start it detached, wait until it answers, stop it, say how it is."""

from __future__ import annotations

import abc
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from mesh.backoff import ExponentialBackoff
from mesh.dev._config import DevConfig
from mesh.dev._errors import DevServiceError, PortInUseError
from mesh.dev._process import (
    is_alive,
    log_size,
    log_tail,
    owned_pid,
    port_is_free,
    read_pidfile,
    spawn_detached,
    terminate,
    write_pidfile,
)

__all__ = ["LocalService", "ServiceStatus"]

_LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class ServiceStatus:
    """How one local service is doing, as ``mesh dev status`` prints it."""

    name: str
    """``kafka`` or ``redis``."""

    running: bool
    """Whether a process this state directory started is alive."""

    pid: int | None
    """Its pid when running."""

    address: str
    """Where clients connect (``host:port`` for Kafka, a ``redis://`` URL for Redis)."""

    log_path: Path
    """The service's log file."""

    data_dir: Path
    """Where the service keeps its data (kept across restarts)."""

    note: str = ""
    """Anything odd, e.g. a stale pidfile or a port held by a process we did not start."""


class LocalService(abc.ABC):
    """Lifecycle shared by the local services; subclasses say how to prepare, launch and probe.

    Not thread-safe and not process-safe on its own: :class:`mesh.dev.DevServices` serializes
    calls with a file lock.
    """

    name: str
    exe_names: tuple[str, ...]

    def __init__(self, config: DevConfig) -> None:
        self.config = config
        self.last_stop_escalated = False
        """Whether the last :meth:`stop` had to SIGKILL a process that ignored SIGTERM."""

    # -- what a subclass provides --------------------------------------------------------------

    @property
    @abc.abstractmethod
    def pidfile(self) -> Path:
        """Pidfile of the process this state directory started."""

    @property
    @abc.abstractmethod
    def workdir(self) -> Path:
        """Working directory of the process; it is also how we recognise the process as ours."""

    @property
    @abc.abstractmethod
    def log_path(self) -> Path:
        """Log file of the service."""

    @property
    @abc.abstractmethod
    def data_dir(self) -> Path:
        """Directory of the service's data."""

    @property
    @abc.abstractmethod
    def address(self) -> str:
        """Where clients connect."""

    @property
    @abc.abstractmethod
    def ports(self) -> tuple[int, ...]:
        """Every port the service binds."""

    @abc.abstractmethod
    def prepare(self, log_offset: int) -> None:
        """Write config files and initialize storage before a launch."""

    @abc.abstractmethod
    def argv(self) -> list[str]:
        """Command line of the service."""

    @abc.abstractmethod
    def probe(self) -> bool:
        """One readiness check with a real request; True when the service serves clients."""

    # -- lifecycle -----------------------------------------------------------------------------

    def pid(self) -> int | None:
        """Pid of the running service we started, or None."""
        return owned_pid(self.pidfile, cwd=self.workdir, exe_names=self.exe_names)

    def status(self) -> ServiceStatus:
        """Current status; never changes anything."""
        pid = self.pid()
        note = ""
        if pid is None:
            stale = read_pidfile(self.pidfile)
            if stale is not None:
                note = f"stale pidfile (pid {stale} is gone or not ours)"
            busy = [p for p in self.ports if not port_is_free(self.config.host, p)]
            if busy:
                note = (note + "; " if note else "") + (
                    f"port {', '.join(map(str, busy))} in use by a process mesh dev did not start"
                )
        return ServiceStatus(
            name=self.name,
            running=pid is not None,
            pid=pid,
            address=self.address,
            log_path=self.log_path,
            data_dir=self.data_dir,
            note=note,
        )

    def start(self) -> bool:
        """Start the service unless ours already runs; True if this call started it.

        Raises:
            PortInUseError: a port is held by a process we did not start.
            DevServiceError: the process exited or did not answer in time; the message has the
                tail of its log and nothing is left running.
        """
        launched = self.launch()
        if launched is None:
            return False
        self.await_launched(launched)
        return True

    def launch(self) -> tuple[int, int] | None:
        """Spawn the service without waiting for it; ``(pid, log offset)``, or None if ours runs.

        For services that only become ready together (the voters of a KRaft quorum): launch
        each, then :meth:`await_launched` each.

        Raises:
            PortInUseError: a port is held by a process we did not start.
        """
        if self.pid() is not None:
            return None
        self._forget_stale_pidfile()
        for port in self.ports:
            if not port_is_free(self.config.host, port):
                raise PortInUseError(
                    f"{self.name}: port {self.config.host}:{port} is already in use by a process "
                    f"`mesh dev` did not start; stop it or choose other ports "
                    f"(--{self.name}-port / MESH_DEV_{self.name.upper()}_PORT)",
                    service=self.name,
                    port=port,
                )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = log_size(self.log_path)
        with self.log_path.open("a") as log:
            log.write(f"=== mesh dev: starting {self.name} at {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n")
        self.prepare(offset)
        pid = spawn_detached(self.argv(), cwd=self.workdir, log_path=self.log_path)
        write_pidfile(self.pidfile, pid)
        return pid, offset

    def await_launched(self, launched: tuple[int, int]) -> None:
        """Wait until a :meth:`launch`-ed process is ready; on failure it is stopped and raised."""
        pid, offset = launched
        try:
            self._await_ready(pid, offset)
        except BaseException:
            # Never leave a half-started process behind, whatever interrupted the wait.
            terminate(pid, timeout_s=self.config.stop_timeout_s)
            with contextlib.suppress(FileNotFoundError):
                self.pidfile.unlink()
            raise

    def _await_ready(self, pid: int, log_offset: int) -> None:
        deadline = time.monotonic() + self.config.start_timeout_s
        backoff = ExponentialBackoff(base_s=0.05, cap_s=0.5, jitter=0.0, factor=1.5).start()
        while True:
            if not is_alive(pid):
                raise DevServiceError(
                    f"{self.name} exited during start",
                    service=self.name,
                    log_path=self.log_path,
                    log_tail=self.tail(log_offset),
                )
            if self.probe():
                return
            if time.monotonic() >= deadline:
                raise DevServiceError(
                    f"{self.name} did not answer within {self.config.start_timeout_s:g} s",
                    service=self.name,
                    log_path=self.log_path,
                    log_tail=self.tail(log_offset),
                )
            backoff.sleep_blocking()

    def stop(self, *, kill: bool = False) -> bool:
        """Stop the service we started (SIGTERM, or SIGKILL when ``kill``); True if it ran.

        Data stays on disk, so :meth:`start` brings the same service back.
        """
        pid = self.pid()
        if pid is None:
            self._forget_stale_pidfile()
            return False
        self.last_stop_escalated = terminate(pid, timeout_s=self.config.stop_timeout_s, kill=kill)
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()
        return True

    def tail(self, since_offset: int = 0) -> str:
        """The last lines of the service's log (only those written after ``since_offset``)."""
        return log_tail(self.log_path, _LOG_TAIL_LINES, since_offset=since_offset)

    def _forget_stale_pidfile(self) -> None:
        # A pidfile naming a dead or foreign process is left over from a crash or a reboot.
        pid = read_pidfile(self.pidfile)
        if pid is not None and self.pid() is None:
            with contextlib.suppress(FileNotFoundError):
                self.pidfile.unlink()
