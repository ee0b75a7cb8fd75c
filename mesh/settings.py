"""Settings read from the environment (``MESH_*``) through pydantic-settings.

The same code points at the local services of ``mesh dev up`` or at a real cluster: only the
environment changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["MeshSettings", "default_state_dir"]


def default_state_dir() -> Path:
    """Where local services keep their jars, data and logs (outside the repository)."""
    return Path.home() / ".cache" / "agent-mesh"


class MeshSettings(BaseSettings):
    """Connection and runtime settings, each overridable with an ``MESH_`` environment variable."""

    model_config = SettingsConfigDict(env_prefix="MESH_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:19092"
    """Kafka bootstrap servers, comma separated (``MESH_KAFKA_BOOTSTRAP``)."""

    redis_url: str = "redis://127.0.0.1:16379/0"
    """Redis URL (``MESH_REDIS_URL``): ``redis://`` or ``rediss://`` (TLS); any node of a cluster."""

    redis_mode: Literal["standalone", "cluster", "sentinel"] = "standalone"
    """``standalone`` (one server), ``cluster`` (Redis Cluster) or ``sentinel`` (``MESH_REDIS_MODE``)."""

    redis_sentinels: str = ""
    """Sentinel addresses ``host:port,host:port`` when ``redis_mode`` is ``sentinel``."""

    redis_sentinel_master: str = "mesh"
    """Name of the master the sentinels monitor."""

    redis_username: str | None = None
    """ACL user (``MESH_REDIS_USERNAME``); none means ``default`` (or the user in the URL)."""

    redis_password: SecretStr | None = None
    """Password of the ACL user (``MESH_REDIS_PASSWORD``); kept out of the URL so it is never logged."""

    redis_sentinel_password: SecretStr | None = None
    """Password of the sentinels, when they require one."""

    redis_tls_ca_file: Path | None = None
    """CA that signed the server certificate, for ``rediss://`` (else the system trust store)."""

    redis_tls_cert_file: Path | None = None
    """Client certificate for servers that require one (mutual TLS); with ``redis_tls_key_file``."""

    redis_tls_key_file: Path | None = None
    """Private key of the client certificate."""

    redis_wait_replicas: int = Field(default=0, ge=0)
    """Replicas that must confirm a checkpoint (Redis ``WAIT``) before it is acknowledged; 0: no wait.

    Set it to 1 on a replicated Redis (Cluster, Sentinel, a managed primary with a replica) so a
    failover cannot lose an acknowledged checkpoint; every write then costs one replication round
    trip, and a write fails (``ReplicationTimeout``) while no replica answers.
    """

    redis_wait_timeout_ms: int = Field(default=1000, ge=1)
    """How long a checkpoint write waits for ``redis_wait_replicas`` confirmations, milliseconds."""

    topic_prefix: str = "mesh"
    """Prefix of every topic name, so several meshes can share a cluster."""

    topic_partitions: int = Field(default=6, ge=1)
    """Partitions of topics the mesh creates at start."""

    topic_replication: int | None = Field(default=None, ge=1)
    """Replication factor of topics the mesh creates at start; unset: ``min(3, brokers)``.

    The brokers are counted when the topics are created, so one local broker gets 1 and a
    cluster of 3 or more gets 3 (``MESH_TOPIC_REPLICATION``).
    """

    topic_min_insync_replicas: int | None = Field(default=None, ge=1)
    """``min.insync.replicas`` of topics the mesh creates; unset: 2 when they have 3+ replicas.

    With acks=all (the mesh's producers always use it) a write is acknowledged only once this
    many replicas have it, so losing one broker loses nothing acknowledged; with fewer in-sync
    replicas writes fail (and are retried) instead of being kept by one copy only.
    """

    max_envelope_bytes: int = Field(default=1_048_576, ge=1024)
    """Largest encoded envelope accepted; larger ones are dead-lettered as oversize."""

    state_dir: Path = Field(default_factory=default_state_dir)
    """Local state: downloaded jars, service data and logs, blob store."""

    blob_dir: Path | None = None
    """Directory of the durable blob store; defaults to ``<state_dir>/blobs``."""

    finished_ttl_s: int = Field(default=7 * 24 * 3600, ge=0)
    """Seconds a finished workflow's checkpoints, secrets and run-index entry are kept (0: forever)."""

    blob_retention_s: int = Field(default=30 * 24 * 3600, ge=0)
    """Age after which ``mesh gc`` deletes blob copies of checkpoints (0: keep forever)."""

    history_window: int = Field(default=20, ge=1)
    """Turn records a step's checkpoint keeps (``MESH_HISTORY_WINDOW``); older ones are archived
    to the blob store in segments of as many records and summarized in the checkpoint
    (``mesh.runtime.history``), so it holds between this and twice this many."""

    decay_idle_turns: int = Field(default=10, ge=0)
    """Turns a step's variable may go unused before it leaves the prompt for the blob store, to
    come back on its next use (``MESH_DECAY_IDLE_TURNS``; 0: never)."""

    blob_backend: Literal["file", "s3"] = "file"
    """Where durable blob copies go (``MESH_BLOB_BACKEND``): ``file`` (``blob_dir``) or ``s3``."""

    s3_bucket: str = ""
    """Bucket of the S3 blob store (``MESH_S3_BUCKET``)."""

    s3_prefix: str = ""
    """Key prefix inside the bucket, so several meshes can share one (``MESH_S3_PREFIX``)."""

    s3_endpoint_url: str = ""
    """Endpoint of an S3-compatible server, e.g. ``http://s3proxy:8080`` (empty: AWS)."""

    s3_region: str = ""
    """Region (``MESH_S3_REGION``; empty: ``us-east-1``)."""

    s3_access_key_id: str = ""
    """Access key id; with ``s3_secret_access_key``. Empty: botocore's chain (``AWS_*`` variables, IRSA...)."""

    s3_secret_access_key: SecretStr = SecretStr("")
    """Secret access key (``MESH_S3_SECRET_ACCESS_KEY``); never printed."""

    s3_secret_access_key_file: Path | None = None
    """A file holding the secret access key (a mounted Kubernetes Secret), if not given directly."""

    s3_create_bucket: bool = False
    """Create the bucket on first use if it does not exist (``MESH_S3_CREATE_BUCKET=1``)."""

    s3_path_style: bool = True
    """Address ``endpoint/bucket/key`` (most S3-compatible servers) rather than virtual-hosted buckets."""

    def resolved_blob_dir(self) -> Path:
        """The blob store directory, defaulted under the state directory."""
        return self.blob_dir if self.blob_dir is not None else self.state_dir / "blobs"
