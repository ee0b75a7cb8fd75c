"""Redis ACL auth and TLS (``rediss://``) against a real redis-server, configured only through settings.

A private redis-server gets an ACL user for the mesh (the ``default`` user has another password)
and a TLS port whose certificate is signed by a CA this test generates with ``cryptography``.
The clients are built by ``RedisConnection.from_settings`` from ``MESH_REDIS_*`` values, as an
agent builds them. A correct client works (with a client certificate too); a wrong password and
an untrusted server certificate fail within seconds with ``StoreAccessDenied`` naming the
setting to fix, and the password appears in no message.
"""

from __future__ import annotations

import gc
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from mesh.dev import DevConfig, RedisNode
from mesh.errors import StoreAccessDenied
from mesh.settings import MeshSettings
from mesh.store import RedisRunIndex, RedisStateStore, RunSummary, step_key
from mesh.store.redis import RedisConnection
from tests.redis_ha import TlsFiles, free_port_block, make_tls_files

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "mesh-" + uuid.uuid4().hex
ADMIN_PASSWORD = "admin-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("redis-tls"))


@pytest.fixture(scope="module")
def secure_redis(tls: TlsFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisNode]:
    root = tmp_path_factory.mktemp("secure-redis")
    plain, tls_port = (base := free_port_block(2)), base + 1
    node = RedisNode(
        DevConfig.isolated(root),
        name="redis-secure",
        port=plain,
        root=root / "node",
        extra_ports=[tls_port],
        settings=[
            ("tls-port", tls_port),
            ("tls-cert-file", str(tls.server_cert)),
            ("tls-key-file", str(tls.server_key)),
            ("tls-ca-cert-file", str(tls.ca)),
            # Client certificates are checked when presented (mutual TLS), not required.
            ("tls-auth-clients", "optional"),
            ("user", f"default on >{ADMIN_PASSWORD} ~* &* +@all"),
            # The mesh's user: its keys only, no admin commands.
            ("user", f"mesh on >{PASSWORD} ~mesh:* ~authtls:* +@all -@admin -@dangerous +info"),
        ],
    )
    node.start()
    try:
        yield node
    finally:
        node.stop()


def _tls_url(node: RedisNode) -> str:
    return f"rediss://127.0.0.1:{node.extra_ports[0]}/0"


def _settings(node: RedisNode, tls: TlsFiles, **overrides: object) -> MeshSettings:
    values: dict[str, object] = {
        "redis_url": _tls_url(node),
        "redis_username": "mesh",
        "redis_password": SecretStr(PASSWORD),
        "redis_tls_ca_file": tls.ca,
    }
    values.update(overrides)
    return MeshSettings(**values)  # type: ignore[arg-type]


def _collect_failed_handshakes() -> None:
    # asyncio (3.11) leaves the transport of a failed TLS handshake for the GC, which warns; collect
    # it here, quietly, instead of failing whichever test the GC happens to run in next.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


async def _round_trip(connection: RedisConnection) -> None:
    store = RedisStateStore.connect(connection, key_prefix="authtls:", socket_timeout_s=3)
    try:
        key = step_key("wf-tls", "a")
        epoch = await store.claim(key, "a1")
        await store.write(key, b"over tls", epoch=epoch, workflow_id="wf-tls")
        assert (await store.read(key)).data == b"over tls"
    finally:
        await store.delete_prefix()
        await store.aclose()


async def test_a_correct_client_works_over_tls_with_an_acl_user(
    secure_redis: RedisNode, tls: TlsFiles
) -> None:
    connection = RedisConnection.from_settings(_settings(secure_redis, tls))
    assert PASSWORD not in repr(connection) and PASSWORD not in connection.describe()
    await _round_trip(connection)
    index = RedisRunIndex.connect(connection, key_prefix="authtls:")
    try:
        assert await index.record(
            RunSummary(workflow_id="wf-tls", name="n", status="running", events=1)
        )
    finally:
        await index.aclose()


async def test_a_client_certificate_is_accepted(secure_redis: RedisNode, tls: TlsFiles) -> None:
    settings = _settings(
        secure_redis, tls, redis_tls_cert_file=tls.client_cert, redis_tls_key_file=tls.client_key
    )
    await _round_trip(RedisConnection.from_settings(settings))


@pytest.mark.parametrize("url_kind", ["tls", "plain"])
async def test_a_wrong_password_is_a_clear_error_not_a_hang(
    secure_redis: RedisNode, tls: TlsFiles, url_kind: str
) -> None:
    wrong = "wrong-" + uuid.uuid4().hex
    url = _tls_url(secure_redis) if url_kind == "tls" else secure_redis.address
    settings = _settings(
        secure_redis,
        tls,
        redis_url=url,
        redis_password=SecretStr(wrong),
        redis_tls_ca_file=tls.ca if url_kind == "tls" else None,
    )
    store = RedisStateStore.connect(
        RedisConnection.from_settings(settings), key_prefix="authtls:", socket_timeout_s=3
    )
    started = time.monotonic()
    try:
        with pytest.raises(StoreAccessDenied, match="MESH_REDIS_PASSWORD") as info:
            await store.claim(step_key("wf-x", "a"), "a1")
    finally:
        await store.aclose()
    assert time.monotonic() - started < 10
    assert wrong not in str(info.value) and not info.value.retryable


async def test_an_untrusted_server_certificate_is_a_clear_error_not_a_hang(
    secure_redis: RedisNode, tls: TlsFiles
) -> None:
    settings = _settings(secure_redis, tls, redis_tls_ca_file=tls.untrusted_ca)
    store = RedisStateStore.connect(
        RedisConnection.from_settings(settings), key_prefix="authtls:", socket_timeout_s=3
    )
    started = time.monotonic()
    try:
        with pytest.raises(StoreAccessDenied, match=r"not trusted.*MESH_REDIS_TLS_CA_FILE") as info:
            await store.read(step_key("wf-x", "a"))
    finally:
        await store.aclose()
    assert time.monotonic() - started < 10
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    _collect_failed_handshakes()


async def test_the_acl_user_cannot_touch_keys_outside_its_patterns(
    secure_redis: RedisNode, tls: TlsFiles
) -> None:
    store = RedisStateStore.connect(
        RedisConnection.from_settings(_settings(secure_redis, tls)),
        key_prefix="other:",
        socket_timeout_s=3,
    )
    try:
        with pytest.raises(StoreAccessDenied, match="ACL"):
            await store.claim(step_key("wf-x", "a"), "a1")
    finally:
        await store.aclose()


def test_tls_files_need_a_rediss_url(tls: TlsFiles, tmp_path: Path) -> None:
    from mesh.errors import ConfigError

    connection = RedisConnection(url="redis://127.0.0.1:1/0", tls_ca_file=tls.ca)
    with pytest.raises(ConfigError, match="rediss://"):
        connection.client()
