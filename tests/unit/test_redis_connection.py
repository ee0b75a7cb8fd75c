"""RedisConnection: settings to client options, without a server (the behaviour is tested on real ones)."""

from __future__ import annotations

import pytest
from redis.asyncio.cluster import RedisCluster

from mesh.errors import ConfigError, UsageError
from mesh.settings import MeshSettings
from mesh.store import InMemoryStateStore, RedisStateStore, hash_tag, step_key, workflow_tag
from mesh.store.redis import RedisConnection, parse_sentinels


def test_settings_come_from_the_environment_and_the_password_is_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MESH_REDIS_URL", "rediss://cache.example:6380/0")
    monkeypatch.setenv("MESH_REDIS_MODE", "cluster")
    monkeypatch.setenv("MESH_REDIS_USERNAME", "mesh")
    monkeypatch.setenv("MESH_REDIS_PASSWORD", "s3cret-pw")
    monkeypatch.setenv("MESH_REDIS_TLS_CA_FILE", "/etc/ca.crt")
    monkeypatch.setenv("MESH_REDIS_WAIT_REPLICAS", "1")
    settings = MeshSettings()
    connection = RedisConnection.from_settings(settings)
    assert (connection.mode, connection.username, connection.password, connection.tls) == (
        "cluster",
        "mesh",
        "s3cret-pw",
        True,
    )
    assert settings.redis_wait_replicas == 1
    assert "s3cret-pw" not in repr(connection) and "s3cret-pw" not in repr(settings)
    assert connection.describe() == "cluster via rediss://cache.example:6380/0"
    assert isinstance(connection.client(), RedisCluster)


def test_parse_sentinels() -> None:
    assert parse_sentinels("a:26379, b:26380,") == (("a", 26379), ("b", 26380))
    with pytest.raises(ConfigError, match="host:port"):
        parse_sentinels("a")


@pytest.mark.parametrize(
    ("connection", "message"),
    [
        (RedisConnection(url="http://x"), "redis:// or rediss://"),
        (RedisConnection(url="redis://x:1/0", tls_ca_file="/ca"), "rediss://"),  # type: ignore[arg-type]
        (RedisConnection(url="rediss://x:1/0", tls_cert_file="/c"), "go together"),  # type: ignore[arg-type]
        (RedisConnection(url="redis://x:1/0", mode="sentinel"), "MESH_REDIS_SENTINELS"),
        (RedisConnection(url="redis://x:1/3", mode="cluster"), "only database 0"),
    ],
)
def test_bad_settings_are_config_errors(connection: RedisConnection, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        connection.client()


def test_keys_of_one_workflow_share_its_hash_tag() -> None:
    assert hash_tag(step_key("wf-1", "a")) == hash_tag(workflow_tag("wf-1")) == "wf-1"
    store = RedisStateStore(RedisConnection(url="redis://127.0.0.1:1/0").client(), key_prefix="p:")
    assert store.redis_key(step_key("wf-1", "a")) == "p:ckpt:wf:{wf-1}:step:a"
    assert store.redis_key("agent:x") == "p:ckpt:{agent:x}"
    assert hash_tag(store.index_key("wf-1")) == "wf-1"
    with pytest.raises(UsageError, match="braces"):
        RedisStateStore(RedisConnection().client(), key_prefix="p{x}:")


async def test_a_key_listed_under_another_workflow_is_refused_by_the_in_memory_store_too() -> None:
    store = InMemoryStateStore()
    with pytest.raises(UsageError, match="hash tag"):
        await store.write(step_key("wf-1", "a"), b"x", epoch=1, workflow_id="wf-2")
