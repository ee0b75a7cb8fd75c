"""Config files of the local services, rendered as text from a :class:`DevConfig` (pure functions)."""

from __future__ import annotations

import base64
import uuid

from mesh.dev._config import DevConfig

__all__ = [
    "kafka_jvm_args",
    "new_cluster_id",
    "render_kafka_log4j2",
    "render_kafka_properties",
    "render_redis_conf",
]


def render_kafka_properties(config: DevConfig, node: int = 1) -> str:
    """``server.properties`` of combined broker+controller KRaft node ``node`` (1-based).

    With ``kafka_nodes > 1`` every node is a voter of the quorum and a broker; internal topics
    get ``min(3, nodes)`` replicas and the cluster's ``min.insync.replicas`` is 2 from 3 nodes on.
    """
    host = config.host
    port, controller_port = config.kafka_node_ports(node)
    voters = ",".join(f"{k}@{host}:{config.kafka_node_ports(k)[1]}" for k in config.kafka_node_ids)
    replicas, min_isr = config.kafka_replication, config.kafka_min_insync
    props: dict[str, str | int] = {
        "process.roles": "broker,controller",
        "node.id": node,
        # A static voter set (not KIP-853 --standalone): it is read from this file on every
        # start, so changing the controller port needs no reformat.
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        # Exactly the address clients dial, or they chase a hostname that does not resolve.
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(config.kafka_node_dir(node) / "data"),
        "num.partitions": 1,
        # Internal topics get as many replicas as the cluster can hold, up to 3 (one node: 1).
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        # Defaults for topics created without explicit settings; the mesh sets both itself.
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        # Fewer internal partitions than the default 50: the first group join is much faster.
        "offsets.topic.num.partitions": 8,
        "transaction.state.log.num.partitions": 8,
        # After a SIGKILL the restarted broker cannot register until the old registration's
        # session expires (default 9 s); chaos tests restart it often.
        "broker.heartbeat.interval.ms": 500,
        "broker.session.timeout.ms": 2000,
        # Tests join groups constantly; the default 3 s delay would dominate their run time.
        "group.initial.rebalance.delay.ms": 0,
        # Failover time is bounded by the consumer session timeout (DESIGN.md); let tests pick
        # one below the broker's default 6 s floor.
        "group.min.session.timeout.ms": 1000,
        # The mesh creates its topics explicitly; a typo must fail, not create a topic.
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
    }
    if config.kafka_proxied_port is not None:
        # A second client listener reached through a TCP proxy; it advertises the proxy's port.
        props["listeners"] = f"{props['listeners']},PROXIED://{host}:{config.kafka_proxied_port}"
        props["advertised.listeners"] = (
            f"{props['advertised.listeners']},PROXIED://{host}:{config.kafka_proxied_advertised_port}"
        )
        props["listener.security.protocol.map"] = f"{props['listener.security.protocol.map']},PROXIED:PLAINTEXT"
    if config.kafka_sasl_ssl_port is not None:
        props.update(_sasl_ssl_listener(config))
    lines = ["# Written by `mesh dev`; edits are overwritten on the next start."]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def _sasl_ssl_listener(config: DevConfig) -> dict[str, str | int]:
    # A TLS listener with SASL PLAIN and SCRAM; SCRAM credentials are written into the metadata
    # log at format time (`--add-scram`), PLAIN users live in the listener's JAAS line.
    host, port = config.host, config.kafka_sasl_ssl_port
    plain_users = " ".join(f'user_{u}="{p}"' for u, p in sorted(config.kafka_sasl_users.items()))
    base = "listener.name.sasl_ssl"
    return {
        "listeners": f"PLAINTEXT://{host}:{config.kafka_port},CONTROLLER://{host}:{config.kafka_controller_port},"
                     f"SASL_SSL://{host}:{port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{config.kafka_port},SASL_SSL://{host}:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        f"{base}.plain.sasl.jaas.config":
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
        f"{base}.scram-sha-256.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        f"{base}.scram-sha-512.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        f"{base}.ssl.keystore.type": "PEM",
        f"{base}.ssl.keystore.location": str(config.kafka_ssl_keystore_pem),
        f"{base}.ssl.client.auth": "none",
    }


def kafka_scram_format_args(config: DevConfig) -> list[str]:
    """``kafka-storage format`` arguments that create the SCRAM users of the SASL_SSL listener."""
    if config.kafka_sasl_ssl_port is None:
        return []
    args: list[str] = []
    for user, password in sorted(config.kafka_sasl_users.items()):
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            args += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
    return args


def render_kafka_log4j2() -> str:
    """log4j2 config: INFO to stdout, which the launcher appends to the broker's log file."""
    return "\n".join(
        [
            "rootLogger.level=INFO",
            "rootLogger.appenderRef.stdout.ref=STDOUT",
            "appender.stdout.type=Console",
            "appender.stdout.name=STDOUT",
            "appender.stdout.layout.type=PatternLayout",
            "appender.stdout.layout.pattern=[%d] %p %m (%c)%n",
            # The request logger and the state-change logger are chatty at INFO.
            "logger.request.name=kafka.request.logger",
            "logger.request.level=WARN",
            "logger.state.name=state.change.logger",
            "logger.state.level=WARN",
            "",
        ]
    )


def kafka_jvm_args(config: DevConfig, node: int = 1) -> list[str]:
    """JVM options of a broker and of the storage tool: modest heap, quick start."""
    return [
        "-Xms128m",
        f"-Xmx{config.kafka_heap_mb}m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={config.kafka_node_dir(node) / 'log4j2.properties'}",
    ]


def render_redis_conf(config: DevConfig) -> str:
    """``redis.conf``: own port and directory, AOF on, foreground (the launcher detaches it)."""
    settings: list[tuple[str, str | int]] = [
        ("bind", config.host),
        ("port", config.redis_port),
        ("protected-mode", "yes"),
        # The launcher detaches the process itself, so it knows the pid at once and sees a
        # failed bind as an exit instead of a daemon that vanished after forking.
        ("daemonize", "no"),
        ("supervised", "no"),
        ("pidfile", str(config.redis_pidfile)),
        ("logfile", str(config.redis_log_path)),
        ("loglevel", "notice"),
        ("dir", str(config.redis_data_dir)),
        ("dbfilename", "dump.rdb"),
        ("appendonly", "yes"),
        ("appendfilename", '"appendonly.aof"'),
        ("appenddirname", '"appendonlydir"'),
        ("appendfsync", config.redis_appendfsync),
        ("save", '""'),
        ("databases", 16),
        ("tcp-keepalive", 60),
    ]
    lines = ["# Written by `mesh dev`; edits are overwritten on the next start."]
    lines += [f"{key} {value}" for key, value in settings]
    return "\n".join(lines) + "\n"


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    Same form as ``kafka-storage random-uuid``; like it, never starts with ``-`` (a CLI would
    read that as a flag).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id
