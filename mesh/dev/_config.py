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

    kafka_nodes: int = Field(default=1, ge=1, le=9)
    """KRaft nodes (``MESH_DEV_KAFKA_NODES``); each is a combined broker and controller.

    With more than one, node ``k`` (1-based) listens on ``kafka_port + 2(k-1)`` for clients and
    ``kafka_controller_port + 2(k-1)`` for the quorum, every node is a voter, and the internal
    topics get ``min(3, nodes)`` replicas. Three nodes survive the loss of any one.
    """

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
        ports = [p for node in self.kafka_node_ids for p in self.kafka_node_ports(node)] + [self.redis_port]
        if self.kafka_nodes > 1 and (self.kafka_proxied_port is not None or self.kafka_sasl_ssl_port is not None):
            raise ValueError("the proxied and SASL_SSL listeners are single-node only (kafka_nodes=1)")
        if any(p > 65535 for p in ports):
            raise ValueError(f"kafka node ports run past 65535: {ports}")
        if self.kafka_proxied_port is not None:
            ports.append(self.kafka_proxied_port)
        if self.kafka_sasl_ssl_port is not None:
            ports.append(self.kafka_sasl_ssl_port)
            if self.kafka_ssl_keystore_pem is None or not self.kafka_sasl_users:
                raise ValueError("kafka_sasl_ssl_port needs kafka_ssl_keystore_pem and kafka_sasl_users")
        if len(set(ports)) != len(ports):
            raise ValueError(
                f"kafka, controller, redis (and proxied listener) ports must differ, got {ports}"
                + (" (node k uses kafka_port + 2(k-1) and kafka_controller_port + 2(k-1))" if self.kafka_nodes > 1 else "")
            )
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
        """Directory of the broker's config, pidfile, log file and data (node 1 of a cluster)."""
        return self.kafka_node_dir(1)

    @property
    def kafka_node_ids(self) -> range:
        """Node ids of the Kafka cluster, 1-based (``range(1, 2)`` for a single broker)."""
        return range(1, self.kafka_nodes + 1)

    def kafka_node_dir(self, node: int) -> Path:
        """Directory of node ``node``: ``kafka/`` for a single broker, ``kafka-<k>/`` in a cluster.

        A cluster never reuses a single broker's directory: its storage is formatted for another
        voter set.
        """
        return self.root / ("kafka" if self.kafka_nodes == 1 else f"kafka-{node}")

    def kafka_node_ports(self, node: int) -> tuple[int, int]:
        """Client and controller port of node ``node`` (1-based)."""
        step = 2 * (node - 1)
        return self.kafka_port + step, self.kafka_controller_port + step

    @property
    def kafka_replication(self) -> int:
        """Replicas of the internal topics (offsets, transactions): ``min(3, kafka_nodes)``."""
        return min(3, self.kafka_nodes)

    @property
    def kafka_min_insync(self) -> int:
        """``min.insync.replicas`` of the cluster: 2 once there are 3 replicas, else 1."""
        return 2 if self.kafka_replication >= 3 else 1

    @property
    def kafka_cluster_id_path(self) -> Path:
        """The cluster id every node's storage is formatted with."""
        if self.kafka_nodes == 1:
            return self.kafka_dir / "cluster.id"
        return self.root / "kafka-cluster.id"

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
        """Bootstrap addresses clients use (``MESH_KAFKA_BOOTSTRAP``): every node, comma separated."""
        return ",".join(f"{self.host}:{self.kafka_node_ports(k)[0]}" for k in self.kafka_node_ids)

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
        nodes = int(str(overrides.get("kafka_nodes", 1)))
        if nodes == 1:
            ports = _free_ports(3)
        else:
            # Node k takes kafka_port + 2(k-1) and kafka_controller_port + 2(k-1): one free block.
            block = _free_port_block(2 * nodes)
            ports = [block, block + 1, _free_ports(1)[0]]
            while ports[2] in range(block, block + 2 * nodes):
                ports[2] = _free_ports(1)[0]
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


def _free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive free ports (outside the ephemeral range)."""
    candidates = _listen_range()
    for _ in range(200):
        start = random.randrange(candidates.start, candidates.stop - count)
        sockets: list[socket.socket] = []
        try:
            for port in range(start, start + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(s)
                s.bind((host, port))
            return start
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise OSError(f"no {count} consecutive free ports on {host} in {candidates.start}-{candidates.stop - 1}")


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
