"""Pidfiles, process ownership, detached spawning, stopping, ports, log tails, locks."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.dev._process import (
    file_lock,
    is_alive,
    log_size,
    log_tail,
    owned_pid,
    port_accepts,
    port_is_free,
    read_pidfile,
    spawn_detached,
    terminate,
    write_pidfile,
)


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[int]:
    """A detached ``sleep`` whose working directory is ``tmp_path``."""
    pid = spawn_detached(["sleep", "30"], cwd=tmp_path, log_path=tmp_path / "sleep.log")
    yield pid
    terminate(pid, timeout_s=2)


@pytest.mark.parametrize("content", ["", "abc", "-5", "0", "12 34"])
def test_read_pidfile_rejects_garbage(tmp_path: Path, content: str) -> None:
    path = tmp_path / "x.pid"
    path.write_text(content)
    assert read_pidfile(path) is None


def test_pidfile_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "x.pid"
    assert read_pidfile(path) is None
    write_pidfile(path, 4242)
    assert read_pidfile(path) == 4242
    assert [p.name for p in tmp_path.iterdir()] == ["x.pid"]  # no temp file left behind


def test_spawned_process_is_detached_and_alive(tmp_path: Path, sleeper: int) -> None:
    assert is_alive(sleeper)
    # In a session of its own: a Ctrl-C in the terminal that started it does not reach it.
    assert os.getsid(sleeper) != os.getsid(0)
    assert os.getpgid(sleeper) != os.getpgid(0)


def test_owned_pid_accepts_our_process(tmp_path: Path, sleeper: int) -> None:
    write_pidfile(tmp_path / "s.pid", sleeper)
    assert owned_pid(tmp_path / "s.pid", cwd=tmp_path, exe_names=("sleep",)) == sleeper


def test_owned_pid_rejects_a_process_in_another_directory(tmp_path: Path, sleeper: int) -> None:
    other = tmp_path / "other"
    other.mkdir()
    write_pidfile(tmp_path / "s.pid", sleeper)
    assert owned_pid(tmp_path / "s.pid", cwd=other, exe_names=("sleep",)) is None


def test_owned_pid_rejects_another_program(tmp_path: Path, sleeper: int) -> None:
    write_pidfile(tmp_path / "s.pid", sleeper)
    assert owned_pid(tmp_path / "s.pid", cwd=tmp_path, exe_names=("redis-server",)) is None


def test_owned_pid_rejects_a_recycled_pid(tmp_path: Path) -> None:
    # Our own pid stands in for "some unrelated live process": python, elsewhere.
    write_pidfile(tmp_path / "s.pid", os.getpid())
    assert owned_pid(tmp_path / "s.pid", cwd=tmp_path, exe_names=("sleep", "java")) is None


def test_owned_pid_rejects_a_dead_pid(tmp_path: Path) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    write_pidfile(tmp_path / "s.pid", proc.pid)
    assert owned_pid(tmp_path / "s.pid", cwd=tmp_path, exe_names=("true",)) is None


def test_terminate_stops_with_sigterm(sleeper: int) -> None:
    assert terminate(sleeper, timeout_s=5) is False
    assert not is_alive(sleeper)


def test_terminate_escalates_to_sigkill(tmp_path: Path) -> None:
    pid = spawn_detached(
        ["sh", "-c", "trap '' TERM; echo up; sleep 30"], cwd=tmp_path, log_path=tmp_path / "t.log"
    )
    deadline = time.monotonic() + 5
    while "up" not in log_tail(tmp_path / "t.log") and time.monotonic() < deadline:
        time.sleep(0.02)  # the trap must be installed before the signal
    assert terminate(pid, timeout_s=0.3) is True
    assert not is_alive(pid)


def test_zombie_counts_as_dead() -> None:
    proc = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{proc.pid}/stat").read_text().split(")")[1].split()[0] != "Z":
        time.sleep(0.01)
    assert not is_alive(proc.pid)
    proc.wait()


def test_port_checks() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
        assert port_accepts("127.0.0.1", port)
    assert port_is_free("127.0.0.1", port)
    assert not port_accepts("127.0.0.1", port)


def test_log_tail_returns_last_lines_since_offset(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    assert log_tail(log) == ""
    log.write_text("".join(f"old {i}\n" for i in range(5)))
    offset = log_size(log)
    with log.open("a") as f:
        f.write("".join(f"new {i}\n" for i in range(30)))
    tail = log_tail(log, 20, since_offset=offset)
    assert tail.splitlines() == [f"new {i}" for i in range(10, 30)]
    assert "old" not in log_tail(log, 100, since_offset=offset)
    assert log_tail(log, 100).startswith("old 0")


def test_file_lock_excludes_other_holders(tmp_path: Path) -> None:
    order: list[str] = []
    entered = threading.Event()

    def other() -> None:
        entered.set()
        with file_lock(tmp_path / "l.lock"):
            order.append("other")

    with file_lock(tmp_path / "l.lock"):
        thread = threading.Thread(target=other)
        thread.start()
        entered.wait()
        time.sleep(0.2)
        order.append("first")
    thread.join(5)
    assert order == ["first", "other"]


def test_file_lock_times_out(tmp_path: Path) -> None:
    with file_lock(tmp_path / "l.lock"):
        result: list[BaseException] = []

        def other() -> None:
            try:
                with file_lock(tmp_path / "l.lock", timeout_s=0.2):
                    pass
            except TimeoutError as exc:
                result.append(exc)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(5)
    assert len(result) == 1
