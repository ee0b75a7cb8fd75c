"""Replicated Redis from Debian's ``redis-server``: a Redis Cluster and a Sentinel-managed pair.

``mesh dev up --redis-cluster`` (or ``--redis-sentinel``) and the HA tests use these:

* ``LocalRedisCluster``: 3 masters and 3 replicas (``cluster-enabled yes``), slots assigned with
  ``redis-cli --cluster create``; node *i* listens on ``base + i`` and gossips on
  ``base + nodes + i`` (``cluster-port``, so no port lands in the OS's ephemeral range).
* ``LocalRedisSentinel``: a master on ``base``, its replica on ``base + 1`` and three sentinels on
  ``base + 2 .. base + 4`` monitoring it as ``mesh`` (quorum 2).

Every node is a ``RedisNode`` (a ``LocalService``): its own directory with ``redis.conf``, AOF,
log and pidfile, started detached, probed with PING, stopped with SIGTERM or killed with SIGKILL.
A node's ``redis.conf`` is written once and then left alone, because Redis rewrites it (a
sentinel records the current master there, ``CONFIG REWRITE`` after a failover records a new
``replicaof``); ``down`` keeps the directories, so ``up`` brings back the same cluster.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mesh.dev._config import DevConfig
from mesh.dev._errors import DevInstallError, DevServiceError
from mesh.dev._install import find_redis_server
from mesh.dev._process import file_lock
from mesh.dev._service import LocalService, ServiceStatus

__all__ = ["LocalRedisCluster", "LocalRedisSentinel", "RedisHaConfig", "RedisNode"]

Setting = tuple[str, str | int]


class RedisHaConfig(BaseSettings):
    """Ports and timings of the local replicated Redis (``MESH_DEV_REDIS_*``)."""

    model_config = SettingsConfigDict(env_prefix="MESH_DEV_REDIS_", extra="ignore", frozen=True)

    cluster_port: int = Field(default=17000, ge=1, le=65535 - 12)
    """First port of the cluster (``MESH_DEV_REDIS_CLUSTER_PORT``): nodes on the next 6, buses on 6 more."""

    sentinel_port: int = Field(default=17100, ge=1, le=65535 - 5)
    """Port of the sentinel set's master (``MESH_DEV_REDIS_SENTINEL_PORT``); replica and sentinels follow."""

    node_timeout_ms: int = Field(default=1500, ge=100)
    """Cluster node timeout and sentinel down-after: how long a dead master goes unnoticed, ms."""


class RedisNode(LocalService):
    """One ``redis-server`` (or sentinel) with its own directory, config, AOF, log and pidfile."""

    exe_names = ("redis-server", "redis-sentinel", "redis-check-aof")

    def __init__(
        self,
        config: DevConfig,
        *,
        name: str,
        port: int,
        root: Path,
        settings: Sequence[Setting] = (),
        sentinel: bool = False,
        extra_ports: Sequence[int] = (),
    ) -> None:
        """A node named ``name`` on ``port`` under ``root``; ``settings`` are added to its ``redis.conf``."""
        super().__init__(config)
        self.name = name
        self.port = port
        self.root = root
        self.settings = tuple(settings)
        self.sentinel = sentinel
        self.extra_ports = tuple(extra_ports)

    @property
    def pidfile(self) -> Path:
        """Pidfile of the node."""
        return self.root / "redis.pid"

    @property
    def workdir(self) -> Path:
        """Redis chdirs into its ``dir``: the data directory."""
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        """The node's log file."""
        return self.root / "redis.log"

    @property
    def data_dir(self) -> Path:
        """AOF (and ``nodes.conf``) directory."""
        return self.workdir

    @property
    def address(self) -> str:
        """``redis://host:port/0``."""
        return f"redis://{self.config.host}:{self.port}/0"

    @property
    def ports(self) -> tuple[int, ...]:
        """The client port and any other (cluster bus, TLS)."""
        return (self.port, *self.extra_ports)

    @property
    def conf_path(self) -> Path:
        """The node's ``redis.conf`` (written once; Redis may rewrite it)."""
        return self.root / "redis.conf"

    def render(self) -> str:
        """The node's first ``redis.conf``."""
        base: list[Setting] = [
            ("bind", self.config.host),
            ("port", self.port),
            ("daemonize", "no"),
            ("pidfile", str(self.pidfile)),
            ("logfile", str(self.log_path)),
            ("dir", str(self.workdir)),
        ]
        if not self.sentinel:
            base += [
                ("appendonly", "yes"),
                ("appendfsync", "everysec"),
                ("save", '""'),
                # A replica syncs at once instead of waiting 5 s for others to join the transfer.
                ("repl-diskless-sync-delay", 0),
            ]
        lines = [
            "# Written by `mesh dev` once; Redis may rewrite it (failovers are recorded here)."
        ]
        lines += [f"{key} {value}" for key, value in (*base, *self.settings)]
        return "\n".join(lines) + "\n"

    def prepare(self, log_offset: int) -> None:
        """Create the directories and, the first time only, ``redis.conf``."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.conf_path.exists():
            self.conf_path.write_text(self.render())

    def argv(self) -> list[str]:
        """``redis-server redis.conf [--sentinel]``."""
        binary = find_redis_server()
        if binary is None:
            raise DevInstallError("redis-server not found; run `mesh dev install`")
        return [binary, str(self.conf_path), *(["--sentinel"] if self.sentinel else [])]

    def probe(self) -> bool:
        """PING answered (PONG, or NOAUTH from a server that wants a password: it serves)."""
        try:
            with socket.create_connection((self.config.host, self.port), timeout=1.0) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def command(self, *args: str | int | bytes, timeout_s: float = 5.0) -> Any:
        """Run one command on this node (plaintext, no auth) and return redis-py's reply."""
        import redis

        with redis.Redis(
            host=self.config.host,
            port=self.port,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        ) as client:
            return client.execute_command(*args)


def _info(reply: object) -> dict[str, str]:
    if isinstance(reply, dict):  # redis-py already parsed INFO / CLUSTER INFO
        return {str(k): (v.decode() if isinstance(v, bytes) else str(v)) for k, v in reply.items()}
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def _wait(
    what: str, check: Callable[[], bool], timeout_s: float, nodes: Sequence[RedisNode]
) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # a node still starting or electing: look again
            last = exc
        time.sleep(0.2)
    tails = "\n".join(f"--- {n.name} ({n.log_path})\n{n.tail()}" for n in nodes)
    raise DevServiceError(
        f"{what} not reached within {timeout_s:g} s" + (f" (last error: {last})" if last else ""),
        service=nodes[0].name if nodes else "redis",
        log_path=nodes[0].log_path if nodes else Path("."),
        log_tail=tails,
    )


class LocalRedisCluster:
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each, on consecutive ports."""

    def __init__(
        self,
        config: DevConfig,
        *,
        base_port: int | None = None,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int | None = None,
        root: Path | None = None,
    ) -> None:
        """Nodes on ``base_port ..`` under ``<state dir>/redis-cluster`` (nothing starts yet)."""
        ha = RedisHaConfig()
        self.config = config
        self.base_port = base_port if base_port is not None else ha.cluster_port
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = (
            node_timeout_ms if node_timeout_ms is not None else ha.node_timeout_ms
        )
        self.root = root if root is not None else config.root / "redis-cluster"
        count = masters * (1 + replicas)
        self.nodes = [
            RedisNode(
                config,
                name=f"redis-cluster-{self.base_port + i}",
                port=self.base_port + i,
                root=self.root / str(self.base_port + i),
                settings=[
                    ("cluster-enabled", "yes"),
                    ("cluster-config-file", "nodes.conf"),
                    ("cluster-port", self.base_port + count + i),
                    ("cluster-node-timeout", self.node_timeout_ms),
                    # A replica may take over however long it was cut off: this is a dev cluster.
                    ("cluster-replica-validity-factor", 0),
                    ("cluster-allow-replica-migration", "no"),
                ],
                extra_ports=[self.base_port + count + i],
            )
            for i in range(count)
        ]

    @property
    def url(self) -> str:
        """URL of the first node (a cluster client discovers the rest): ``MESH_REDIS_URL``."""
        return self.nodes[0].address

    def env(self) -> dict[str, str]:
        """The ``MESH_REDIS_*`` settings that point the mesh at this cluster."""
        return {"MESH_REDIS_MODE": "cluster", "MESH_REDIS_URL": self.url}

    def node(self, port: int) -> RedisNode:
        """The node listening on ``port``."""
        for n in self.nodes:
            if n.port == port:
                return n
        raise KeyError(port)

    def status(self) -> list[ServiceStatus]:
        """Status of every node."""
        return [n.status() for n in self.nodes]

    def up(self, *, timeout_s: float = 60.0) -> bool:
        """Start the nodes, assign slots the first time, wait for a healthy cluster; True if anything started."""
        self.root.mkdir(parents=True, exist_ok=True)
        with file_lock(self.root / "cluster.lock"):
            started = [n.start() for n in self.nodes]
            if not self._formed():
                self._create()
            self.wait_healthy(timeout_s=timeout_s)
        return any(started)

    def down(self) -> list[str]:
        """Stop every node (SIGTERM: the AOF is flushed); data and ``nodes.conf`` stay."""
        self.root.mkdir(parents=True, exist_ok=True)
        with file_lock(self.root / "cluster.lock"):
            return [n.name for n in self.nodes if n.stop()]

    def _formed(self) -> bool:
        return (
            int(_info(self.nodes[0].command("CLUSTER", "INFO")).get("cluster_slots_assigned", "0"))
            > 0
        )

    def _create(self) -> None:
        cli = Path(find_redis_server() or "redis-server").with_name("redis-cli")
        addresses = [f"{self.config.host}:{n.port}" for n in self.nodes]
        argv = [
            str(cli),
            "--cluster",
            "create",
            *addresses,
            "--cluster-replicas",
            str(self.replicas),
            "--cluster-yes",
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise DevServiceError(
                "redis-cli --cluster create failed",
                service="redis-cluster",
                log_path=self.nodes[0].log_path,
                log_tail=(done.stdout + done.stderr)[-3000:],
            )

    def wait_healthy(self, *, timeout_s: float = 60.0) -> None:
        """Until every live node sees ``cluster_state:ok`` and every master has a linked replica."""

        def healthy() -> bool:
            live = [n for n in self.nodes if n.pid() is not None]
            if any(_info(n.command("CLUSTER", "INFO")).get("cluster_state") != "ok" for n in live):
                return False
            roles = [_info(n.command("INFO", "replication")) for n in live]
            masters = [r for r in roles if r.get("role") == "master"]
            linked = [
                r for r in roles if r.get("role") == "slave" and r.get("master_link_status") == "up"
            ]
            return len(masters) == self.masters and len(linked) >= min(
                self.masters * self.replicas, len(live) - self.masters
            )

        _wait("a healthy Redis Cluster", healthy, timeout_s, self.nodes)

    def master_of(self, key: str | bytes) -> RedisNode:
        """The node that is master of ``key``'s slot now (as the first live node sees it)."""
        live = next(n for n in self.nodes if n.pid() is not None)
        slot = int(live.command("CLUSTER", "KEYSLOT", key))
        for entry in live.command("CLUSTER", "SHARDS"):
            shard = _pairs(entry)
            ranges = list(shard[b"slots"])
            if any(lo <= slot <= hi for lo, hi in zip(ranges[::2], ranges[1::2], strict=True)):
                for node in shard[b"nodes"]:
                    info = _pairs(node)
                    if info[b"role"] == b"master" and info[b"health"] == b"online":
                        return self.node(int(info[b"port"]))
        raise DevServiceError(
            f"no online master for slot {slot}",
            service="redis-cluster",
            log_path=self.nodes[0].log_path,
            log_tail="",
        )

    def replicas_of(self, master: RedisNode) -> list[RedisNode]:
        """The live replicas replicating from ``master``."""
        found = []
        for n in self.nodes:
            if n is master or n.pid() is None:
                continue
            info = _info(n.command("INFO", "replication"))
            if info.get("role") == "slave" and int(info.get("master_port", "0")) == master.port:
                found.append(n)
        return found


def _pairs(entry: Any) -> dict[bytes, Any]:
    if isinstance(entry, dict):
        return {(k if isinstance(k, bytes) else str(k).encode()): v for k, v in entry.items()}
    items = list(entry)
    return dict(zip(items[::2], items[1::2], strict=True))


class LocalRedisSentinel:
    """A master, one replica and three sentinels (quorum 2) monitoring it as ``mesh``."""

    master_name = "mesh"

    def __init__(
        self,
        config: DevConfig,
        *,
        base_port: int | None = None,
        down_after_ms: int | None = None,
        root: Path | None = None,
    ) -> None:
        """Master on ``base_port``, replica on ``+1``, sentinels on ``+2 .. +4`` (nothing starts yet)."""
        ha = RedisHaConfig()
        self.config = config
        self.base_port = base_port if base_port is not None else ha.sentinel_port
        self.down_after_ms = down_after_ms if down_after_ms is not None else ha.node_timeout_ms
        self.root = root if root is not None else config.root / "redis-sentinel"
        host, p = config.host, self.base_port
        self.master = RedisNode(config, name=f"redis-master-{p}", port=p, root=self.root / str(p))
        self.replica = RedisNode(
            config,
            name=f"redis-replica-{p + 1}",
            port=p + 1,
            root=self.root / str(p + 1),
            settings=[("replicaof", f"{host} {p}")],
        )
        self.sentinels = [
            RedisNode(
                config,
                name=f"redis-sentinel-{p + i}",
                port=p + i,
                root=self.root / str(p + i),
                sentinel=True,
                settings=[
                    ("sentinel monitor", f"{self.master_name} {host} {p} 2"),
                    (
                        "sentinel down-after-milliseconds",
                        f"{self.master_name} {self.down_after_ms}",
                    ),
                    (
                        "sentinel failover-timeout",
                        f"{self.master_name} {max(3 * self.down_after_ms, 3000)}",
                    ),
                    ("sentinel parallel-syncs", f"{self.master_name} 1"),
                ],
            )
            for i in (2, 3, 4)
        ]

    @property
    def nodes(self) -> list[RedisNode]:
        """Data nodes first, then sentinels."""
        return [self.master, self.replica, *self.sentinels]

    @property
    def sentinel_addresses(self) -> str:
        """``host:port,...`` of the sentinels: ``MESH_REDIS_SENTINELS``."""
        return ",".join(f"{self.config.host}:{s.port}" for s in self.sentinels)

    def env(self) -> dict[str, str]:
        """The ``MESH_REDIS_*`` settings that point the mesh at this set through its sentinels."""
        return {
            "MESH_REDIS_MODE": "sentinel",
            "MESH_REDIS_SENTINELS": self.sentinel_addresses,
            "MESH_REDIS_SENTINEL_MASTER": self.master_name,
            "MESH_REDIS_URL": f"redis://{self.config.host}:{self.base_port}/0",
        }

    def status(self) -> list[ServiceStatus]:
        """Status of every node."""
        return [n.status() for n in self.nodes]

    def up(self, *, timeout_s: float = 60.0) -> bool:
        """Start every node and wait until the sentinels agree on a master with a linked replica."""
        self.root.mkdir(parents=True, exist_ok=True)
        with file_lock(self.root / "sentinel.lock"):
            started = [n.start() for n in self.nodes]
            self.wait_healthy(timeout_s=timeout_s)
        return any(started)

    def down(self) -> list[str]:
        """Stop sentinels, then data nodes; data stays."""
        self.root.mkdir(parents=True, exist_ok=True)
        with file_lock(self.root / "sentinel.lock"):
            return [n.name for n in reversed(self.nodes) if n.stop()]

    def current_master(self) -> RedisNode:
        """The data node the sentinels name as master now."""
        host_port = self.sentinels[0].command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
        )
        port = int(host_port[1])
        return self.master if port == self.master.port else self.replica

    def wait_healthy(self, *, timeout_s: float = 60.0) -> None:
        """Until every live sentinel sees the master, its replica linked, and the other sentinels."""

        def healthy() -> bool:
            master = self.current_master()
            other = self.replica if master is self.master else self.master
            if other.pid() is not None:
                info = _info(other.command("INFO", "replication"))
                if info.get("role") != "slave" or info.get("master_link_status") != "up":
                    return False
            for s in self.sentinels:
                if s.pid() is None:
                    continue
                state = _pairs(s.command("SENTINEL", "MASTER", self.master_name))
                if int(state[b"port"]) != master.port or int(state[b"num-other-sentinels"]) < 2:
                    return False
                if other.pid() is not None and int(state[b"num-slaves"]) < 1:
                    return False
            return True

        _wait("a healthy sentinel set", healthy, timeout_s, self.nodes)
