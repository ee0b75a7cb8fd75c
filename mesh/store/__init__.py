"""State: fenced, versioned checkpoints (Redis, in memory) and durable blobs (filesystem, in memory)."""

from mesh.store.base import BlobStore, Checkpoint, StateStore, agent_key, step_key
from mesh.store.blob import FileBlobStore
from mesh.store.memory import InMemoryBlobStore, InMemoryStateStore
from mesh.store.redis import RedisStateStore

__all__ = [
    # the seams
    "BlobStore",
    "Checkpoint",
    "StateStore",
    "agent_key",
    "step_key",
    # implementations
    "FileBlobStore",
    "InMemoryBlobStore",
    "InMemoryStateStore",
    "RedisStateStore",
]
