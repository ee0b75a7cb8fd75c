"""The Redis adapter of every store seam, and the only package of the mesh that imports redis.

Every adapter takes a client built by ``RedisConnection.client`` (standalone, Cluster or
Sentinel; ACL auth; TLS), awaits redis-py through ``redis_call`` (one exception policy: redis
errors become ``mesh.errors.StoreError`` subclasses) and keeps its keys under the workflow's hash
tag where a workflow is involved. ``RedisStores`` opens one client and hands out every adapter on
it, which is how an agent process is wired (dead-letter claims and the reasoner's rate limiter
included).
"""

from mesh.store.redis._checkpoints import RedisStateStore
from mesh.store.redis._connection import (
    RedisClient,
    RedisConnection,
    RedisMode,
    parse_sentinels,
    redis_call,
    register_script,
    translate_redis_error,
)
from mesh.store.redis._context_maps import RedisContextMapStore
from mesh.store.redis._dead_letters import RedisDeadLetterClaims
from mesh.store.redis._keyring import RedisKeyringStore
from mesh.store.redis._rate_limiter import RedisRateLimiter
from mesh.store.redis._run_index import RedisRunIndex
from mesh.store.redis._stores import RedisStores
from mesh.store.redis._votes import RedisVoteLedger

__all__ = [
    # how a client is built, and the one error policy
    "RedisClient",
    "RedisConnection",
    "RedisMode",
    "parse_sentinels",
    "redis_call",
    "register_script",
    "translate_redis_error",
    # one adapter per store seam
    "RedisContextMapStore",
    "RedisDeadLetterClaims",
    "RedisKeyringStore",
    "RedisRateLimiter",
    "RedisRunIndex",
    "RedisStateStore",
    "RedisVoteLedger",
    # all of them on one client
    "RedisStores",
]
