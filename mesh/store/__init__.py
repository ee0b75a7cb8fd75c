"""State: fenced, versioned checkpoints (Redis, in memory) and durable blobs (filesystem, S3 in
``mesh.store.s3``, in memory)."""

from mesh.store.base import (
    BlobStore,
    Checkpoint,
    StateStore,
    agent_key,
    hash_tag,
    step_key,
    workflow_tag,
)
from mesh.store.blob import FileBlobStore, blob_store_from_settings
from mesh.store.journal import (
    DroppedWrite,
    JournalingStateStore,
    JournalOptions,
    ProvisionalCheckpoint,
)
from mesh.store.memory import InMemoryBlobStore, InMemoryStateStore
from mesh.store.redis import RedisStateStore
from mesh.store.redis_connection import RedisConnection
from mesh.store.run_index import InMemoryRunIndex, RedisRunIndex, RunIndex, RunSummary, StepSummary

__all__ = [
    # the seams
    "BlobStore",
    "Checkpoint",
    "StateStore",
    "agent_key",
    "hash_tag",
    "step_key",
    "workflow_tag",
    # implementations
    "FileBlobStore",
    "blob_store_from_settings",
    "InMemoryBlobStore",
    "InMemoryStateStore",
    "RedisStateStore",
    # how every Redis client is built (standalone, Cluster, Sentinel; ACL auth; TLS)
    "RedisConnection",
    # the run index (a view of every workflow, kept by the agents)
    "InMemoryRunIndex",
    "RedisRunIndex",
    "RunIndex",
    "RunSummary",
    "StepSummary",
    # offline journal in front of a store
    "DroppedWrite",
    "JournalOptions",
    "JournalingStateStore",
    "ProvisionalCheckpoint",
]
