"""Detached processes, pidfiles and ownership checks (Linux ``/proc``), ports, log tails, locks."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from mesh.backoff import ExponentialBackoff

__all__ = [
    "ProcessInfo",
    "file_lock",
    "is_alive",
    "log_size",
    "log_tail",
    "owned_pid",
    "port_accepts",
    "port_is_free",
    "process_info",
    "read_pidfile",
    "spawn_detached",
    "terminate",
    "write_pidfile",
]


class ProcessInfo:
    """What ``/proc`` says about a live process: its executable name, cwd and command line."""

    __slots__ = ("cmdline", "cwd", "exe_name", "pid")

    def __init__(self, pid: int, exe_name: str, cwd: Path | None, cmdline: tuple[str, ...]) -> None:
        self.pid = pid
        self.exe_name = exe_name
        self.cwd = cwd
        self.cmdline = cmdline


def read_pidfile(path: Path) -> int | None:
    """The pid in ``path``, or None when the file is missing, empty or not a positive number."""
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not text.isdigit() or int(text) <= 0:
        return None
    return int(text)


def write_pidfile(path: Path, pid: int) -> None:
    """Write ``pid`` atomically, so a concurrent reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(path)


def is_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie counts as dead: it serves nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # Field 3, after the parenthesised command name (which may itself hold spaces or parens).
    state = stat.rsplit(")", 1)[1].split()[0]
    if state in ("Z", "X"):
        # A multi-threaded process (the JVM) shows a zombie leader while its other threads
        # still exit; its sockets close only when the last one is gone.
        try:
            if len(os.listdir(f"/proc/{pid}/task")) > 1:
                return True
        except OSError:
            pass
        _reap(pid)
        return False
    return True


def _reap(pid: int) -> None:
    # Collect our own dead child so it stops being a zombie; not our child -> nothing to do.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def process_info(pid: int) -> ProcessInfo | None:
    """``/proc`` facts about a live ``pid``, or None if it is gone or unreadable."""
    if not is_alive(pid):
        return None
    proc = Path(f"/proc/{pid}")
    try:
        raw = (proc / "cmdline").read_bytes()
        exe_name = (proc / "comm").read_text().strip()
    except OSError:
        return None
    try:
        cwd: Path | None = Path(os.readlink(proc / "cwd"))
    except OSError:
        cwd = None
    cmdline = tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    return ProcessInfo(pid, exe_name, cwd, cmdline)


def owned_pid(pidfile: Path, *, cwd: Path, exe_names: Sequence[str]) -> int | None:
    """The pid in ``pidfile`` if that process is alive and is the one we started, else None.

    A pid is ours when the process runs one of ``exe_names`` with ``cwd`` as its working
    directory: the launcher starts every service inside its own state directory, so a recycled
    pid (or someone else's Kafka) fails the check and is never signalled.
    """
    pid = read_pidfile(pidfile)
    if pid is None:
        return None
    info = process_info(pid)
    if info is None or info.cwd is None:
        return None
    # Redis rewrites its argv into a title ("/usr/bin/redis-server 127.0.0.1:16379"), so the
    # program is the first word of the first argument.
    program = Path(info.cmdline[0].split(" ")[0]).name if info.cmdline else ""
    if info.exe_name not in exe_names and program not in exe_names:
        return None
    if info.cwd.resolve() != cwd.resolve():
        return None
    return pid


def spawn_detached(
    argv: Sequence[str],
    *,
    cwd: Path,
    log_path: Path,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start ``argv`` in its own session, output appended to ``log_path``; return its pid.

    The process is not our child for long: a tiny shell starts it in the background, prints its
    pid and exits, so it outlives this Python process, never becomes our zombie, and a Ctrl-C in
    the terminal that ran ``mesh dev up`` does not reach it.
    """
    launcher = 'log="$1"; shift; "$@" >>"$log" 2>&1 </dev/null & echo $!'
    done = subprocess.run(
        ["/bin/sh", "-c", launcher, "sh", str(log_path), *argv],
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,
    )
    return int(done.stdout.strip())


def terminate(pid: int, *, timeout_s: float, kill: bool = False) -> bool:
    """Stop ``pid``: SIGTERM (or SIGKILL when ``kill``), then SIGKILL after ``timeout_s``.

    Returns True if it had to escalate to SIGKILL after a SIGTERM.
    """
    sig = signal.SIGKILL if kill else signal.SIGTERM
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    if _wait_gone(pid, timeout_s):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, 10.0)
    return not kill


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    backoff = ExponentialBackoff(base_s=0.02, cap_s=0.2, jitter=0.0).start()
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        backoff.sleep_blocking()
    return True


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could bind ``host:port`` now (the check servers do, SO_REUSEADDR on)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def port_accepts(host: str, port: int, *, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def log_size(path: Path) -> int:
    """Current size of a log file in bytes (0 if missing): where the next start's output begins."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def log_tail(path: Path, lines: int = 20, *, since_offset: int = 0) -> str:
    """The last ``lines`` lines of a log file, written after byte ``since_offset`` ("" if none)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            # Logs grow large; a tail needs only the end of the file.
            f.seek(max(since_offset, size - 64 * 1024, 0) if since_offset <= size else 0)
            data = f.read()
    except FileNotFoundError:
        return ""
    text = data.decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def file_lock(path: Path, *, timeout_s: float = 300.0) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``: concurrent ``up``/``down`` run one at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"could not lock {path} within {timeout_s} s") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)
