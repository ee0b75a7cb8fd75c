"""Local Kafka (KRaft, from Maven Central jars) and Redis for development, tests and the demo.

``mesh dev up|down|status|install`` drives this package; test fixtures and ``mesh demo`` use the
Python API::

    from mesh.dev import DevServices

    services = DevServices()          # ports and directories from MESH_DEV_* / defaults
    services.up()                     # idempotent; installs on first use
    services.restart_redis(kill=True) # chaos: SIGKILL and restart, data kept
    services.down()                   # stops only what this state directory started

    cluster = LocalRedisCluster(services.config)   # 3 masters + 3 replicas (--redis-cluster)
    cluster.up(); cluster.master_of("{wf-1}").stop(kill=True)
"""

from mesh.dev._config import DevConfig, free_port
from mesh.dev._errors import DevInstallError, DevServiceError, PortInUseError
from mesh.dev._redis import redis_ping
from mesh.dev._redis_ha import LocalRedisCluster, LocalRedisSentinel, RedisHaConfig, RedisNode
from mesh.dev._service import ServiceStatus
from mesh.dev._services import (
    DevServices,
    DevStatus,
    DownReport,
    InstallReport,
    UpReport,
    down,
    ensure_installed,
    status,
    up,
)

__all__ = [
    # the services and their configuration
    "DevConfig",
    "DevServices",
    # replicated Redis: a Cluster and a Sentinel set (mesh dev up --redis-cluster / --redis-sentinel)
    "LocalRedisCluster",
    "LocalRedisSentinel",
    "RedisHaConfig",
    "RedisNode",
    # one-call helpers on the default configuration
    "down",
    "ensure_installed",
    "status",
    "up",
    # what the calls return
    "DevStatus",
    "DownReport",
    "InstallReport",
    "ServiceStatus",
    "UpReport",
    # errors
    "DevInstallError",
    "DevServiceError",
    "PortInUseError",
    # small helpers for tests
    "free_port",
    "redis_ping",
]
