"""Agent processes for demos, tests and benchmarks: start, wait ready, SIGKILL, SIGSTOP, restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from mesh.security import DATA_KEY_ENV, DATA_KEY_FILE_ENV, ensure_data_key_file
from mesh.settings import default_state_dir

__all__ = ["AgentProcesses"]

READY_MARK = b" ready (role "


class AgentProcesses:
    """``mesh agent run`` child processes, each logging to ``<log_dir>/<agent_id>.log``."""

    def __init__(
        self,
        log_dir: Path,
        env: Mapping[str, str],
        *,
        turn_delay_s: float = 0.0,
        session_timeout_ms: int = 2500,
        heartbeat_interval_ms: int | None = None,
    ) -> None:
        """Children get ``env`` (MESH_* settings) and these runtime options.

        Without a data key in ``env``, one is made in the children's state directory (zero setup):
        they seal secrets at rest with it.
        """
        self.log_dir = log_dir
        self.env = dict(env)
        if not self.env.get(DATA_KEY_ENV) and not self.env.get(DATA_KEY_FILE_ENV):
            state_dir = Path(self.env.get("MESH_STATE_DIR") or default_state_dir()).expanduser()
            self.env[DATA_KEY_FILE_ENV] = str(ensure_data_key_file(state_dir))
        self.turn_delay_s = turn_delay_s
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms or max(100, session_timeout_ms // 6)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.roles: dict[str, str] = {}
        self._logs: dict[str, IO[bytes]] = {}

    def start(
        self,
        role: str,
        agent_id: str,
        *,
        env: Mapping[str, str] | None = None,
        launcher: Sequence[str] = (),
    ) -> subprocess.Popen[bytes]:
        """Start one agent (not waiting for it).

        ``env`` overrides the shared environment for it alone (a fault campaign puts one agent
        behind a proxy, or on a skewed clock); ``launcher`` replaces ``python -m mesh`` (e.g. a
        profiler that runs the ``mesh`` module).
        """
        log = self._logs[agent_id] = open(self.log_dir / f"{agent_id}.log", "ab")
        proc = subprocess.Popen(
            [*(launcher or (sys.executable, "-m", "mesh")), "agent", "run", "--role", role, "--agent-id", agent_id,
             "--roles-module", "agents.roles",  # named: works in a checkout that is not pip-installed
             "--turn-delay-s", str(self.turn_delay_s),
             "--session-timeout-ms", str(self.session_timeout_ms),
             "--heartbeat-interval-ms", str(self.heartbeat_interval_ms)],
            stdout=log, stderr=subprocess.STDOUT, env={**self.env, **(env or {})}, start_new_session=True,
        )
        self.procs[agent_id], self.roles[agent_id] = proc, role
        return proc

    def log_text(self, agent_id: str) -> str:
        """Everything the agent logged so far."""
        return (self.log_dir / f"{agent_id}.log").read_text(errors="replace")

    def wait_ready(self, *agent_ids: str, timeout_s: float = 60.0) -> None:
        """Wait until each agent (all by default) printed its ready line; raise with its log tail if it died."""
        deadline = time.monotonic() + timeout_s
        for agent_id in agent_ids or tuple(self.procs):
            proc, path = self.procs[agent_id], self.log_dir / f"{agent_id}.log"
            while READY_MARK not in path.read_bytes():
                if proc.poll() is not None:
                    tail = "\n".join(self.log_text(agent_id).splitlines()[-15:])
                    raise RuntimeError(f"agent {agent_id} exited with {proc.returncode}:\n{tail}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"agent {agent_id} not ready after {timeout_s} s; see {path}")
                time.sleep(0.05)

    def signal(self, agent_id: str, sig: signal.Signals) -> int:
        """Send a signal (SIGKILL, SIGSTOP, SIGCONT, ...); returns the pid."""
        proc = self.procs[agent_id]
        proc.send_signal(sig)
        if sig == signal.SIGKILL:
            proc.wait(timeout=10)
        return proc.pid

    def kill(self, agent_id: str) -> int:
        """SIGKILL an agent and reap it."""
        return self.signal(agent_id, signal.SIGKILL)

    def terminate(self, agent_id: str, *, timeout_s: float = 30.0) -> int:
        """SIGTERM an agent (a rolling update) and wait for it to exit; returns its exit code."""
        proc = self.procs[agent_id]
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout_s)

    def alive(self, agent_id: str) -> bool:
        """Whether the process still runs."""
        return self.procs[agent_id].poll() is None

    def stop_all(self, *, timeout_s: float = 10.0) -> None:
        """SIGTERM everyone (SIGCONT first, in case one is stopped), SIGKILL stragglers."""
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout_s
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for log in self._logs.values():
            log.close()
