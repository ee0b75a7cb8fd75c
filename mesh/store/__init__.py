"""State: every persistence seam of the mesh, its in-memory twin and its Redis adapter.

Checkpoints (``StateStore``), blobs (``BlobStore``: filesystem, S3 in ``mesh.store.s3``, memory),
the keyring table (``KeyringStore``), gossip maps (``ContextMapStore``), vote ledgers
(``VoteLedger``), the run index (``RunIndex``), dead-letter claims (``DeadLetterClaims``) and the
reasoner's rate limiter (``RateLimiter``). Redis adapters live in ``mesh.store.redis``, the only
package of the mesh that imports redis; ``RedisStores`` builds them for one process.
"""

from mesh.store.base import (
    BlobStore,
    Checkpoint,
    ContextMapStore,
    DeadLetterClaims,
    Endorsement,
    KeyringStore,
    RateLimiter,
    RateTicket,
    StateStore,
    VoteLedger,
    agent_key,
    hash_tag,
    step_key,
    workflow_tag,
)
from mesh.store.blob import FileBlobStore, PrefixedBlobStore, blob_store_from_settings
from mesh.store.journal import (
    DroppedWrite,
    JournalingStateStore,
    JournalOptions,
    ProvisionalCheckpoint,
)
from mesh.store.memory import (
    InMemoryBlobStore,
    InMemoryContextMapStore,
    InMemoryDeadLetterClaims,
    InMemoryKeyringStore,
    InMemoryRateLimiter,
    InMemoryStateStore,
    InMemoryVoteLedger,
)
from mesh.store.redis import (
    RedisConnection,
    RedisContextMapStore,
    RedisDeadLetterClaims,
    RedisKeyringStore,
    RedisRateLimiter,
    RedisRunIndex,
    RedisStateStore,
    RedisStores,
    RedisVoteLedger,
)
from mesh.store.run_index import InMemoryRunIndex, RunIndex, RunSummary, StepSummary

__all__ = [
    # the seams
    "BlobStore",
    "Checkpoint",
    "ContextMapStore",
    "DeadLetterClaims",
    "Endorsement",
    "KeyringStore",
    "RateLimiter",
    "RateTicket",
    "StateStore",
    "VoteLedger",
    "agent_key",
    "hash_tag",
    "step_key",
    "workflow_tag",
    # in-memory twins (one per seam) and the filesystem blob store
    "FileBlobStore",
    "PrefixedBlobStore",
    "blob_store_from_settings",
    "InMemoryBlobStore",
    "InMemoryContextMapStore",
    "InMemoryDeadLetterClaims",
    "InMemoryKeyringStore",
    "InMemoryRateLimiter",
    "InMemoryStateStore",
    "InMemoryVoteLedger",
    # Redis adapters, and how every Redis client is built (standalone, Cluster, Sentinel; ACL; TLS)
    "RedisConnection",
    "RedisContextMapStore",
    "RedisDeadLetterClaims",
    "RedisKeyringStore",
    "RedisRateLimiter",
    "RedisStateStore",
    "RedisStores",
    "RedisVoteLedger",
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
