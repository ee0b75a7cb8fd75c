"""Settings read from the environment (``MESH_*``) through pydantic-settings.

The same code points at the local services of ``mesh dev up`` or at a real cluster: only the
environment changes.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
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
    """Redis URL (``MESH_REDIS_URL``)."""

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

    def resolved_blob_dir(self) -> Path:
        """The blob store directory, defaulted under the state directory."""
        return self.blob_dir if self.blob_dir is not None else self.state_dir / "blobs"
