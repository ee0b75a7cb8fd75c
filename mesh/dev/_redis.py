"""Redis from Debian's ``redis-server``, on its own port and directory, AOF persistence on."""

from __future__ import annotations

import socket
from pathlib import Path

from mesh.dev._config import DevConfig
from mesh.dev._errors import DevInstallError
from mesh.dev._install import find_redis_server
from mesh.dev._render import render_redis_conf
from mesh.dev._service import LocalService

__all__ = ["RedisService", "redis_ping"]


class RedisService(LocalService):
    """Redis with ``appendonly yes``; its data directory survives stop and start."""

    name = "redis"
    exe_names = ("redis-server", "redis-check-aof")

    def __init__(self, config: DevConfig) -> None:
        super().__init__(config)

    @property
    def pidfile(self) -> Path:
        """Pidfile of the server."""
        return self.config.redis_pidfile

    @property
    def workdir(self) -> Path:
        """Redis chdirs into its ``dir``; that is also its data directory."""
        return self.config.redis_data_dir

    @property
    def log_path(self) -> Path:
        """Redis's log file."""
        return self.config.redis_log_path

    @property
    def data_dir(self) -> Path:
        """AOF directory."""
        return self.config.redis_data_dir

    @property
    def address(self) -> str:
        """Redis URL."""
        return self.config.redis_url

    @property
    def ports(self) -> tuple[int, ...]:
        """The one Redis port."""
        return (self.config.redis_port,)

    @property
    def conf_path(self) -> Path:
        """The rendered ``redis.conf``."""
        return self.config.redis_dir / "redis.conf"

    def prepare(self, log_offset: int) -> None:
        """Write ``redis.conf`` (rendered on every start, so port or fsync changes apply)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(render_redis_conf(self.config))

    def argv(self) -> list[str]:
        """``redis-server redis.conf``."""
        binary = find_redis_server()
        if binary is None:
            raise DevInstallError("redis-server not found; run `mesh dev install`")
        return [binary, str(self.conf_path)]

    def probe(self) -> bool:
        """PING answered with PONG (a Redis still loading its AOF answers -LOADING)."""
        return redis_ping(self.config.host, self.config.redis_port)


def redis_ping(host: str, port: int, *, timeout_s: float = 1.0) -> bool:
    """Whether a Redis on ``host:port`` answers PING with PONG (raw RESP, no client needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
    except OSError:
        return False
    return reply.startswith(b"+PONG")
