"""Where and how the local services run: ports, directories, versions (``MESH_DEV_*``)."""

from __future__ import annotations

import random
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mesh.settings import MeshSettings

__all__ = ["DevConfig", "free_port"]

AppendFsync = Literal["always", "everysec", "no"]


class DevConfig(BaseSettings):
    """Settings of ``mesh dev``; each field is overridable with a ``MESH_DEV_`` environment variable.

    Defaults stay clear of a Kafka (9092/9093) or Redis (6379) the machine may already run, and
    match the defaults of :class:`mesh.settings.MeshSettings`, so clients find the services with
    no configuration.
    """

    model_config = SettingsConfigDict(env_prefix="MESH_DEV_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    """Address every listener binds to and Kafka advertises; loopback only by default."""

    kafka_port: int = Field(default=19092, ge=1, le=65535)
    """Kafka client listener port (``MESH_DEV_KAFKA_PORT``)."""

    kafka_controller_port: int = Field(default=19093, ge=1, le=65535)
    """KRaft controller listener port (``MESH_DEV_KAFKA_CONTROLLER_PORT``)."""

    redis_port: int = Field(default=16379, ge=1, le=65535)
    """Redis port (``MESH_DEV_REDIS_PORT``)."""

    kafka_proxied_port: int | None = Field(default=None, ge=1, le=65535)
    """Port of an optional second client listener, ``PROXIED``, for network-cut tests (off by default)."""

    kafka_proxied_advertised_port: int | None = Field(default=None, ge=1, le=65535)
    """Port the ``PROXIED`` listener advertises: a TCP proxy's listen port in front of it.

    Kafka clients reconnect to advertised addresses, so clients that bootstrap through the
    proxy keep talking through it, and cutting the proxy really cuts them off.
    """

    kafka_sasl_ssl_port: int | None = Field(default=None, ge=1, le=65535)
    """Port of an optional ``SASL_SSL`` client listener (TLS + SASL PLAIN/SCRAM), off by default.

    Needs ``kafka_ssl_keystore_pem``; users come from ``kafka_sasl_users``. For testing the
    clients' security settings against a real broker.
    """

    kafka_ssl_keystore_pem: Path | None = None
    """PEM file with the broker's private key (unencrypted PKCS#8) and certificate chain."""

    kafka_sasl_users: dict[str, str] = Field(default_factory=dict)
    """SASL users and passwords of the ``SASL_SSL`` listener: PLAIN, SCRAM-SHA-256 and -512."""

    kafka_version: str = "4.1.1"
    """Version of ``org.apache.kafka:kafka_2.13`` resolved from Maven Central."""

    kafka_heap_mb: int = Field(default=512, ge=128)
    """Maximum JVM heap of the broker in MiB; modest so a 2-core box running tests stays happy."""

    redis_appendfsync: AppendFsync = "everysec"
    """Redis AOF fsync policy. Redis writes the AOF before it replies, so a killed redis-server
    loses nothing it acknowledged either way; on an OS crash or power loss ``everysec`` can lose
    up to a second, ``always`` nothing (at a cost per write)."""

    start_timeout_s: float = Field(default=90.0, gt=0)
    """How long a service may take to answer its readiness probe after it is launched."""

    stop_timeout_s: float = Field(default=30.0, gt=0)
    """How long a service may take to exit after SIGTERM before it is sent SIGKILL."""

    state_dir: Path | None = None
    """Root of the services' files (config, data, logs, pidfiles); defaults to ``MESH_STATE_DIR``."""

    libs_dir: Path | None = None
    """Where the Kafka jars are resolved to; defaults to ``<MESH_STATE_DIR>/kafka/libs``.

    Shared by every ``state_dir`` (private test services included): resolving and the class-data
    archive are paid once per machine.
    """

    @model_validator(mode="after")
    def _ports_distinct(self) -> DevConfig:
        ports = [self.kafka_port, self.kafka_controller_port, self.redis_port]
        if self.kafka_proxied_port is not None:
            ports.append(self.kafka_proxied_port)
        if self.kafka_sasl_ssl_port is not None:
            ports.append(self.kafka_sasl_ssl_port)
            if self.kafka_ssl_keystore_pem is None or not self.kafka_sasl_users:
                raise ValueError("kafka_sasl_ssl_port needs kafka_ssl_keystore_pem and kafka_sasl_users")
        if len(set(ports)) != len(ports):
            raise ValueError(f"kafka, controller, redis (and proxied listener) ports must differ, got {ports}")
        if (self.kafka_proxied_port is None) != (self.kafka_proxied_advertised_port is None):
            raise ValueError("kafka_proxied_port and kafka_proxied_advertised_port go together")
        return self

    # -- derived locations -------------------------------------------------------------------

    @property
    def root(self) -> Path:
        """The resolved state directory."""
        if self.state_dir is not None:
            return self.state_dir.expanduser()
        return MeshSettings().state_dir.expanduser()

    @property
    def kafka_dir(self) -> Path:
        """Directory of the broker's config, pidfile, log file and data."""
        return self.root / "kafka"

    @property
    def kafka_libs_dir(self) -> Path:
        """Directory of the broker's jars."""
        if self.libs_dir is not None:
            return self.libs_dir.expanduser()
        return MeshSettings().state_dir.expanduser() / "kafka" / "libs"

    @property
    def kafka_data_dir(self) -> Path:
        """KRaft metadata and topic data (``log.dirs``)."""
        return self.kafka_dir / "data"

    @property
    def kafka_log_path(self) -> Path:
        """The broker's stdout and stderr."""
        return self.kafka_dir / "kafka.log"

    @property
    def kafka_pidfile(self) -> Path:
        """Pid of the broker this state directory started."""
        return self.kafka_dir / "kafka.pid"

    @property
    def redis_dir(self) -> Path:
        """Directory of Redis's config, pidfile, log file and data."""
        return self.root / "redis"

    @property
    def redis_data_dir(self) -> Path:
        """Redis's working directory: the AOF and RDB files live here."""
        return self.redis_dir / "data"

    @property
    def redis_log_path(self) -> Path:
        """Redis's log file."""
        return self.redis_dir / "redis.log"

    @property
    def redis_pidfile(self) -> Path:
        """Pid of the Redis this state directory started."""
        return self.redis_dir / "redis.pid"

    # -- client addresses --------------------------------------------------------------------

    @property
    def kafka_bootstrap(self) -> str:
        """Bootstrap address clients use (``MESH_KAFKA_BOOTSTRAP``)."""
        return f"{self.host}:{self.kafka_port}"

    @property
    def kafka_sasl_ssl_bootstrap(self) -> str | None:
        """Bootstrap address of the ``SASL_SSL`` listener, when it is on."""
        if self.kafka_sasl_ssl_port is None:
            return None
        return f"{self.host}:{self.kafka_sasl_ssl_port}"

    @property
    def kafka_proxied_bootstrap(self) -> str | None:
        """Bootstrap address through the proxy (its advertised port), when the listener is on."""
        if self.kafka_proxied_advertised_port is None:
            return None
        return f"{self.host}:{self.kafka_proxied_advertised_port}"

    @property
    def redis_url(self) -> str:
        """URL clients use (``MESH_REDIS_URL``)."""
        return f"redis://{self.host}:{self.redis_port}/0"

    @classmethod
    def isolated(cls, state_dir: Path, **overrides: object) -> DevConfig:
        """A config on free ports under ``state_dir`` (the jar cache stays shared).

        For tests that stop, kill or restart services: they get their own instances and leave the
        shared ones alone.
        """
        ports = _free_ports(3)
        values: dict[str, object] = {
            "state_dir": state_dir,
            "kafka_port": ports[0],
            "kafka_controller_port": ports[1],
            "redis_port": ports[2],
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, below the OS's ephemeral range."""
    return _free_ports(1, host)[0]


# Listen ports are taken below the ephemeral range (Linux: 32768-60999). A port the OS may also
# hand out as a *source* port can be stolen by a client's reconnect loop: while a restarted
# server is down, a client dialing 127.0.0.1:P may bind source port P and connect to itself
# (TCP simultaneous open), and the server's restart then fails with "Address already in use".
_LISTEN_RANGE_FLOOR = 20000
_EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_port_range() -> tuple[int, int]:
    """The OS's ephemeral (source) port range; Linux's default when it cannot be read."""
    try:
        low, high = (int(x) for x in _EPHEMERAL_RANGE_FILE.read_text().split()[:2])
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _listen_range() -> range:
    low, high = ephemeral_port_range()
    if low - _LISTEN_RANGE_FLOOR >= 1000:
        return range(_LISTEN_RANGE_FLOOR, low)
    if 65535 - high >= 1000:  # an OS whose ephemeral range starts low: use the ports above it
        return range(high + 1, 65536)
    return range(10000, low) if low > 11000 else range(1024, 65536)


def _free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    # Random candidates outside the ephemeral range; every socket is held open until all ports
    # are chosen, so they are distinct. A port another process binds after we close is a race
    # any picker has; a random start keeps concurrent test sessions apart.
    candidates = _listen_range()
    sockets: list[socket.socket] = []
    chosen: set[int] = set()
    try:
        for _ in range(200 * count):
            if len(sockets) == count:
                break
            port = random.choice(candidates)
            if port in chosen:
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            sockets.append(s)
            chosen.add(port)
        if len(sockets) < count:
            raise OSError(f"no {count} free port(s) on {host} in {candidates.start}-{candidates.stop - 1}")
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
