"""The one place a Redis client is built from settings, and the one place redis errors are translated.

Why one place: the checkpoint store, the run index, the keyring, gossip maps, vote ledgers,
dead-letter claims and ingress all talk to the same Redis. Each used to call ``from_url`` itself,
so none of them could reach a Redis Cluster, a Sentinel-managed master, or a server that wants a
password and TLS. ``RedisConnection`` holds those options (from ``MESH_REDIS_*``, see
``mesh.settings.MeshSettings``) and ``RedisConnection.client`` returns the matching
``redis.asyncio`` client; ``translate_redis_error`` turns redis exceptions into the mesh's
``StoreError`` family with a message that says what to fix (a wrong password, an untrusted
certificate) instead of "unreachable". Every Redis adapter of ``mesh.store.redis`` awaits its
redis-py calls through ``redis_call``, so all of them map errors by that one policy.

Modes:

* ``standalone``: ``redis://`` or ``rediss://`` URL of one server (a managed single-node or
  primary endpoint).
* ``cluster``: the URL of any node; the client discovers the others and follows slot moves and
  failovers. Every multi-key operation of the mesh is single-slot (keys of one workflow share the
  hash tag ``{<workflow id>}``).
* ``sentinel``: ``sentinels`` (``host:port,...``) and the ``sentinel_master`` name; the URL still
  gives the database number, the scheme (``rediss`` for TLS) and optionally the credentials. The
  client asks the sentinels for the current master and asks again after a failover.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar, cast
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterError,
    NoPermissionError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mesh.errors import ConfigError, StoreAccessDenied, StoreError, StoreUnavailable

if TYPE_CHECKING:
    from mesh.settings import MeshSettings

__all__ = [
    "REDIS_ERRORS",
    "RedisClient",
    "RedisConnection",
    "RedisMode",
    "raised_inside_redis_py",
    "redis_call",
    "register_script",
    "translate_redis_error",
]

T = TypeVar("T")

RedisMode = Literal["standalone", "cluster", "sentinel"]

REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)
"""What a redis-py call may raise (cluster errors do not all derive from ``RedisError``)."""

RedisClient: TypeAlias = aioredis.Redis | RedisCluster
"""What ``RedisConnection.client`` returns: a ``redis.asyncio`` client or cluster client."""


@dataclass(frozen=True, slots=True)
class RedisConnection:
    """How to reach Redis; ``client()`` builds a client (connections open lazily, on first use)."""

    url: str = "redis://127.0.0.1:16379/0"
    """``redis://`` or ``rediss://`` (TLS) URL: the server, any cluster node, or (sentinel mode) only
    the scheme, database and credentials."""

    mode: RedisMode = "standalone"
    """``standalone``, ``cluster`` or ``sentinel``."""

    sentinels: tuple[tuple[str, int], ...] = ()
    """Sentinel addresses (sentinel mode)."""

    sentinel_master: str = "mesh"
    """Name of the master the sentinels monitor (sentinel mode)."""

    username: str | None = None
    """ACL user; overrides none in the URL (a user in the URL wins)."""

    password: str | None = field(default=None, repr=False)
    """Password of the ACL user (or of ``default``); never printed."""

    sentinel_password: str | None = field(default=None, repr=False)
    """Password of the sentinels themselves, when they require one (sentinel mode)."""

    tls_ca_file: Path | None = None
    """CA bundle that signed the server's certificate (``rediss://``); the system store if unset."""

    tls_cert_file: Path | None = None
    """Client certificate, for servers that require one (``tls-auth-clients yes``)."""

    tls_key_file: Path | None = None
    """Private key of ``tls_cert_file``."""

    @classmethod
    def from_settings(cls, settings: MeshSettings) -> RedisConnection:
        """The connection ``MESH_REDIS_*`` describes."""
        return cls(
            url=settings.redis_url,
            mode=settings.redis_mode,
            sentinels=parse_sentinels(settings.redis_sentinels),
            sentinel_master=settings.redis_sentinel_master,
            username=settings.redis_username,
            password=settings.redis_password.get_secret_value()
            if settings.redis_password
            else None,
            sentinel_password=(
                settings.redis_sentinel_password.get_secret_value()
                if settings.redis_sentinel_password
                else None
            ),
            tls_ca_file=settings.redis_tls_ca_file,
            tls_cert_file=settings.redis_tls_cert_file,
            tls_key_file=settings.redis_tls_key_file,
        )

    @property
    def tls(self) -> bool:
        """Whether connections use TLS (a ``rediss://`` URL)."""
        return urlsplit(self.url).scheme == "rediss"

    def describe(self) -> str:
        """Where this connects, for error messages: no password, ever."""
        parts = urlsplit(self.url)
        host = parts.hostname or "?"
        where = (
            f"{parts.scheme}://{host}"
            + (f":{parts.port}" if parts.port else "")
            + (parts.path or "")
        )
        if self.mode == "sentinel":
            nodes = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"sentinel master {self.sentinel_master!r} via {nodes} ({parts.scheme})"
        return where if self.mode == "standalone" else f"cluster via {where}"

    def _check(self) -> None:
        scheme = urlsplit(self.url).scheme
        if scheme not in ("redis", "rediss"):
            raise ConfigError(
                f"MESH_REDIS_URL must be redis:// or rediss://, got {scheme or 'no scheme'}://"
            )
        if not self.tls and (self.tls_ca_file or self.tls_cert_file or self.tls_key_file):
            raise ConfigError(
                "Redis TLS files are set but MESH_REDIS_URL is not rediss://; use rediss:// for TLS"
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("MESH_REDIS_TLS_CERT_FILE and MESH_REDIS_TLS_KEY_FILE go together")
        if self.mode == "cluster" and urlsplit(self.url).path.strip("/") not in ("", "0"):
            raise ConfigError(
                "Redis Cluster has only database 0: end MESH_REDIS_URL with /0 (or no path)"
            )
        if self.mode == "sentinel" and not self.sentinels:
            raise ConfigError(
                "MESH_REDIS_MODE=sentinel needs MESH_REDIS_SENTINELS (host:port,host:port)"
            )

    def _common_kwargs(self, socket_timeout_s: float) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "socket_timeout": socket_timeout_s,
            "socket_connect_timeout": socket_timeout_s,
            # No CLIENT SETINFO on connect: Redis before 7.2 answers it with an error, and on a
            # connection made while the server restarts that error surfaced as the reply to the
            # next command (a step failed with "unknown subcommand 'SETINFO'" in a campaign).
            "lib_name": None,
            "lib_version": None,
        }
        if self.username is not None:
            kwargs["username"] = self.username
        if self.password is not None:
            kwargs["password"] = self.password
        if self.tls:
            kwargs["ssl_cert_reqs"] = "required"
            if self.tls_ca_file is not None:
                kwargs["ssl_ca_certs"] = str(self.tls_ca_file)
            if self.tls_cert_file is not None:
                kwargs["ssl_certfile"] = str(self.tls_cert_file)
                kwargs["ssl_keyfile"] = str(self.tls_key_file)
        return kwargs

    def client(
        self, *, socket_timeout_s: float = 5.0, health_check_interval_s: int = 10
    ) -> RedisClient:
        """A new client (``decode_responses`` off: the mesh stores bytes); the caller closes it."""
        self._check()
        kwargs = self._common_kwargs(socket_timeout_s)
        if self.mode == "cluster":
            return RedisCluster.from_url(self.url, **kwargs)
        kwargs["health_check_interval"] = health_check_interval_s
        if self.mode == "standalone":
            return aioredis.Redis.from_url(self.url, **kwargs)
        return self._sentinel_master(kwargs, socket_timeout_s)

    def _sentinel_master(self, kwargs: dict[str, Any], socket_timeout_s: float) -> aioredis.Redis:
        parts = urlsplit(self.url)
        db = int(parts.path.strip("/") or 0)
        if parts.username and "username" not in kwargs:
            kwargs["username"] = unquote(parts.username)
        if parts.password and "password" not in kwargs:
            kwargs["password"] = unquote(parts.password)
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": socket_timeout_s,
            "socket_connect_timeout": socket_timeout_s,
        }
        if self.sentinel_password is not None:
            sentinel_kwargs["password"] = self.sentinel_password
        if self.tls:
            kwargs["ssl"] = True
            sentinel_kwargs.update({k: v for k, v in kwargs.items() if k.startswith("ssl")})
        sentinel = Sentinel(list(self.sentinels), sentinel_kwargs=sentinel_kwargs, **kwargs)
        return sentinel.master_for(
            self.sentinel_master, db=db, connection_pool_class=_SentinelOwningPool
        )


class _SentinelOwningPool(SentinelConnectionPool):
    """Closing the master client also closes its connections to the sentinels (redis-py leaves them open)."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        for sentinel in self.sentinel_manager.sentinels:
            await sentinel.aclose()


def raised_inside_redis_py(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside redis-py's own code (not ours).

    redis-py's async cluster client closes every node connection when one node fails, so a
    command in flight on another connection can die with ``AttributeError`` / ``TypeError``
    (``'NoneType' object has no attribute 'writelines'``, redis/redis-py#3546) during a failover.
    Such an error is a lost connection, not a bug of the caller.
    """
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is not None and str(last.tb_frame.f_globals.get("__name__", "")).startswith(
        "redis."
    )


def register_script(client: RedisClient, script: str) -> AsyncScript:
    """``client.register_script(script)`` for either client type (redis-py types it for ``Redis`` only)."""
    return cast(Any, client).register_script(script)  # type: ignore[no-any-return]


def parse_sentinels(text: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` as address pairs; ``ConfigError`` on a malformed entry."""
    found: list[tuple[str, int]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"MESH_REDIS_SENTINELS: {item!r} is not host:port")
        found.append((host.strip("[]"), int(port)))
    return tuple(found)


def _certificate_problem(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def translate_redis_error(exc: Exception, what: str) -> StoreError:
    """The mesh's error for a redis (or socket) failure during ``what``.

    Refused credentials and untrusted certificates are ``StoreAccessDenied`` (retrying will not
    help: fix the setting it names); a dead or slow server is ``StoreUnavailable``.
    """
    name = type(exc).__name__
    if isinstance(exc, AuthenticationError | AuthorizationError | NoPermissionError):
        return StoreAccessDenied(
            f"{what}: Redis refused the credentials or the ACL user lacks a permission "
            f"(check MESH_REDIS_USERNAME / MESH_REDIS_PASSWORD and the user's ACL): {name}: {exc}"
        )
    if isinstance(exc, ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
        return StoreAccessDenied(
            f"{what}: Redis refused the client (MESH_REDIS_USERNAME / PASSWORD): {exc}"
        )
    bad_tls = _certificate_problem(exc)
    if bad_tls is not None:
        verify = isinstance(bad_tls, ssl.SSLCertVerificationError)
        hint = (
            "the server's certificate is not trusted: set MESH_REDIS_TLS_CA_FILE to the CA that signed it"
            if verify
            else "TLS handshake failed (a client certificate required? MESH_REDIS_TLS_CERT_FILE / _KEY_FILE)"
        )
        return StoreAccessDenied(f"{what}: {hint}: {type(bad_tls).__name__}: {bad_tls}")
    if isinstance(exc, ClusterError | RedisClusterException):
        return StoreUnavailable(
            f"{what}: Redis Cluster not serving this slot now (failover?): {name}: {exc}"
        )
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return StoreUnavailable(f"{what}: Redis unreachable or slow: {name}: {exc}")
    return StoreError(f"{what}: {name}: {exc}")


async def redis_call(what: str, awaitable: Awaitable[T]) -> T:
    """Await one redis-py call (or a coroutine of several); its failures become ``StoreError``s.

    The one exception policy of every Redis adapter: redis and socket errors go through
    ``translate_redis_error``; an ``AttributeError``/``TypeError`` raised inside redis-py (a
    connection torn down during a cluster failover, see ``raised_inside_redis_py``) is
    ``StoreUnavailable``; anything else is a bug and propagates unchanged.
    """
    try:
        return await awaitable
    except REDIS_ERRORS as exc:
        raise translate_redis_error(exc, what) from exc
    except (AttributeError, TypeError) as exc:
        if not raised_inside_redis_py(exc):
            raise
        raise StoreUnavailable(f"{what}: connection torn down during a failover: {exc}") from exc
