"""Apache Kafka in KRaft mode from Maven jars: one combined broker+controller node, or a cluster of them."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mesh.dev._config import DevConfig
from mesh.dev._errors import DevInstallError, DevServiceError
from mesh.dev._install import kafka_jars_ready
from mesh.dev._process import port_accepts
from mesh.dev._render import (
    kafka_jvm_args,
    kafka_scram_format_args,
    new_cluster_id,
    render_kafka_log4j2,
    render_kafka_properties,
)
from mesh.dev._service import LocalService

__all__ = ["KafkaService"]

_PROBE_TIMEOUT_MS = 3000


class KafkaService(LocalService):
    """One KRaft node: formats its storage once, then ``java -cp 'libs/*' kafka.Kafka``.

    ``node`` is the 1-based node id; a single broker is node 1 of a one-node cluster. Every
    node of a cluster is formatted with the same cluster id.
    """

    exe_names = ("java",)

    def __init__(self, config: DevConfig, node: int = 1) -> None:
        super().__init__(config)
        if node not in config.kafka_node_ids:
            raise ValueError(f"node {node} is not in 1..{config.kafka_nodes}")
        self.node = node
        self.name = "kafka" if config.kafka_nodes == 1 else f"kafka-{node}"

    @property
    def pidfile(self) -> Path:
        """Pidfile of the broker."""
        return self.workdir / "kafka.pid"

    @property
    def workdir(self) -> Path:
        """The broker runs in its state directory."""
        return self.config.kafka_node_dir(self.node)

    @property
    def log_path(self) -> Path:
        """The broker's stdout and stderr."""
        return self.workdir / "kafka.log"

    @property
    def data_dir(self) -> Path:
        """Metadata log and topic data."""
        return self.workdir / "data"

    @property
    def port(self) -> int:
        """Client port of this node."""
        return self.config.kafka_node_ports(self.node)[0]

    @property
    def address(self) -> str:
        """This node's client address."""
        return f"{self.config.host}:{self.port}"

    @property
    def ports(self) -> tuple[int, ...]:
        """Client and controller ports."""
        return self.config.kafka_node_ports(self.node)

    @property
    def properties_path(self) -> Path:
        """The rendered ``server.properties``."""
        return self.workdir / "server.properties"

    @property
    def cluster_id_path(self) -> Path:
        """The cluster id the storage was formatted with (shared by every node of a cluster)."""
        return self.config.kafka_cluster_id_path

    def quorum_state(self) -> tuple[int, int] | None:
        """``(leader id, leader epoch)`` of the KRaft quorum as this node last recorded it, or None.

        Read from the ``quorum-state`` file every voter keeps next to its metadata log; the
        highest epoch across live nodes names the active controller.
        """
        path = self.data_dir / "__cluster_metadata-0" / "quorum-state"
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        leader, epoch = state.get("leaderId", -1), state.get("leaderEpoch", -1)
        if not isinstance(leader, int) or not isinstance(epoch, int) or leader < 0:
            return None
        return leader, epoch

    def prepare(self, log_offset: int) -> None:
        """Write ``server.properties`` and the log4j2 config; format the storage on first use."""
        if not kafka_jars_ready(self.config):
            raise DevInstallError(
                f"Kafka jars missing in {self.config.kafka_libs_dir}; run `mesh dev install` first"
            )
        if shutil.which("java") is None:
            raise DevInstallError("`java` not found; run `mesh dev install` (or install a JDK 17+)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Rendered on every start: ports may have changed, and the static voter list of
        # controller.quorum.voters follows them without reformatting.
        self.properties_path.write_text(render_kafka_properties(self.config, self.node))
        (self.workdir / "log4j2.properties").write_text(render_kafka_log4j2())
        if not (self.data_dir / "meta.properties").exists():
            self._format(log_offset)

    def _format(self, log_offset: int) -> None:
        try:
            cluster_id = self.cluster_id_path.read_text().strip()  # a cluster peer formatted first
        except FileNotFoundError:
            cluster_id = ""
        if not cluster_id or self.config.kafka_nodes == 1:
            cluster_id = new_cluster_id()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        archive, _ = self._cds_paths()
        cds = ["-Xlog:cds*=off", f"-XX:SharedArchiveFile={archive}"] if archive.exists() else []
        argv = [
            "java",
            *kafka_jvm_args(self.config, self.node),
            *cds,
            "-cp",
            self._classpath(),
            "kafka.tools.StorageTool",
            "format",
            "--ignore-formatted",
            "--cluster-id",
            cluster_id,
            "--config",
            str(self.properties_path),
            *kafka_scram_format_args(self.config),
        ]
        with self.log_path.open("a") as log:
            done = subprocess.run(
                argv,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=self.config.start_timeout_s,
                check=False,
            )
        if done.returncode != 0:
            raise DevServiceError(
                f"kafka storage format failed (exit {done.returncode})",
                service=self.name,
                log_path=self.log_path,
                log_tail=self.tail(log_offset),
            )
        self.cluster_id_path.write_text(cluster_id + "\n")

    def _classpath(self) -> str:
        # The JVM expands the trailing '*' itself; no shell is involved.
        return f"{self.config.kafka_libs_dir}/*"

    def argv(self) -> list[str]:
        """``java ... kafka.Kafka server.properties``, with a class-data-sharing archive."""
        archive, pending = self._cds_paths()
        # The dump warns about every class it skips; harmless, and it drowns the log tail.
        quiet = "-Xlog:cds*=off"
        if archive.exists():
            cds = [quiet, f"-XX:SharedArchiveFile={archive}"]
        else:
            # The first broker to stop gracefully dumps the classes it loaded; later starts map
            # them instead of parsing ~50 MB of jars: about 1.3 s less per start on 2 cores.
            cds = [quiet, f"-XX:ArchiveClassesAtExit={pending}"]
        return [
            "java",
            *kafka_jvm_args(self.config, self.node),
            *cds,
            "-cp",
            self._classpath(),
            "kafka.Kafka",
            str(self.properties_path),
        ]

    def stop(self, *, kill: bool = False) -> bool:
        """Stop the broker; a graceful stop also publishes the class-data archive it dumped."""
        ran = super().stop(kill=kill)
        archive, pending = self._cds_paths()
        if pending.exists():
            if ran and not kill and not self.last_stop_escalated:
                pending.replace(archive)
            else:
                # A SIGKILL can cut the dump short: never map a half-written archive.
                pending.unlink(missing_ok=True)
        return ran

    def _cds_paths(self) -> tuple[Path, Path]:
        libs = self.config.kafka_libs_dir
        java = shutil.which("java") or "java"
        real = os.path.realpath(java)
        try:
            java_id = f"{real}:{os.stat(real).st_mtime_ns}"
        except OSError:
            java_id = real
        jars = sorted(p.name for p in libs.glob("*.jar"))
        key = hashlib.sha256("\n".join([java_id, *jars]).encode()).hexdigest()[:12]
        # One pending name per state directory: two brokers dumping at once do not collide.
        owner = hashlib.sha256(str(self.workdir.resolve()).encode()).hexdigest()[:8]
        return libs / f"kafka-{key}.jsa", libs / f".kafka-{key}.{owner}.jsa.tmp"

    def probe(self) -> bool:
        """A DescribeCluster request through aiokafka; ready once this node is a registered broker."""
        if not port_accepts(self.config.host, self.port):
            return False
        try:
            expected = self.cluster_id_path.read_text().strip()
        except FileNotFoundError:
            expected = None
        # A private event loop in a worker thread: callers may already be inside one.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mesh-dev-probe") as pool:
            return pool.submit(asyncio.run, _describe_cluster(self.address, expected, self.node)).result()


async def _describe_cluster(bootstrap: str, expected_cluster_id: str | None, node: int) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient  # heavy import, only needed when probing

    client = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=_PROBE_TIMEOUT_MS,
        client_id="mesh-dev-probe",
    )
    try:
        await client.start()
        info = await client.describe_cluster()
    except Exception:  # any failure here only means "not ready yet"
        return False
    finally:
        await client.close()
    if expected_cluster_id is not None and info.get("cluster_id") != expected_cluster_id:
        return False
    return any(b.get("node_id") == node for b in info.get("brokers") or ())
