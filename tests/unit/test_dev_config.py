"""DevConfig: defaults, environment overrides, port validation, derived paths and addresses."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from mesh.dev import DevConfig, free_port
from mesh.settings import MeshSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "REDIS_PORT", "STATE_DIR", "LIBS_DIR", "KAFKA_NODES"):
        monkeypatch.delenv(f"MESH_DEV_{name}", raising=False)
    monkeypatch.delenv("MESH_STATE_DIR", raising=False)
    monkeypatch.delenv("MESH_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("MESH_REDIS_URL", raising=False)


def test_defaults_match_mesh_settings_and_avoid_standard_ports() -> None:
    config = DevConfig()
    settings = MeshSettings()
    assert config.kafka_bootstrap == settings.kafka_bootstrap == "127.0.0.1:19092"
    assert config.redis_url == settings.redis_url == "redis://127.0.0.1:16379/0"
    assert config.kafka_controller_port == 19093
    assert {config.kafka_port, config.kafka_controller_port, config.redis_port}.isdisjoint({9092, 9093, 6379})


def test_environment_overrides_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_DEV_KAFKA_PORT", "29092")
    monkeypatch.setenv("MESH_DEV_REDIS_PORT", "26379")
    config = DevConfig()
    assert config.kafka_bootstrap == "127.0.0.1:29092"
    assert config.redis_url == "redis://127.0.0.1:26379/0"


def test_explicit_values_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_DEV_KAFKA_PORT", "29092")
    assert DevConfig(kafka_port=39092).kafka_port == 39092


@pytest.mark.parametrize(
    "overrides",
    [
        {"kafka_port": 0},
        {"redis_port": 70000},
        {"kafka_port": 16379},  # collides with the redis default
        {"kafka_controller_port": 19092},
        {"redis_appendfsync": "sometimes"},
    ],
)
def test_invalid_settings_are_rejected(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DevConfig(**overrides)  # type: ignore[arg-type]


def test_config_is_frozen() -> None:
    config = DevConfig()
    with pytest.raises(ValidationError):
        config.kafka_port = 1  # type: ignore[misc]


def test_state_dir_defaults_to_mesh_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MESH_STATE_DIR", str(tmp_path))
    config = DevConfig()
    assert config.root == tmp_path
    assert config.kafka_libs_dir == tmp_path / "kafka" / "libs"
    # Another state directory still shares the machine's jar cache.
    assert DevConfig(state_dir=tmp_path / "other").kafka_libs_dir == tmp_path / "kafka" / "libs"
    assert DevConfig(libs_dir=tmp_path / "jars").kafka_libs_dir == tmp_path / "jars"
    assert config.kafka_data_dir == tmp_path / "kafka" / "data"
    assert config.redis_data_dir == tmp_path / "redis" / "data"
    assert config.kafka_pidfile.parent == config.kafka_dir
    assert config.redis_log_path.parent == config.redis_dir


def test_isolated_config_uses_distinct_free_ports_and_shares_the_jar_cache(tmp_path: Path) -> None:
    shared = DevConfig()
    config = DevConfig.isolated(tmp_path / "mine")
    ports = {config.kafka_port, config.kafka_controller_port, config.redis_port}
    assert len(ports) == 3
    assert ports.isdisjoint({19092, 19093, 16379})
    assert config.root == tmp_path / "mine"
    assert config.kafka_libs_dir == shared.kafka_libs_dir
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free right now


def test_isolated_config_defaults_to_the_default_jar_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MESH_STATE_DIR", str(tmp_path / "default"))
    config = DevConfig.isolated(tmp_path / "private")
    assert config.kafka_libs_dir == tmp_path / "default" / "kafka" / "libs"
    assert config.kafka_dir == tmp_path / "private" / "kafka"


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
    assert 1024 <= port <= 65535


def test_free_ports_stay_out_of_the_ephemeral_range() -> None:
    # A listen port inside the ephemeral range can be taken by a client's reconnect loop as its
    # own source port (self-connect) while the server restarts: never hand one out.
    from mesh.dev._config import _free_ports, ephemeral_port_range

    low, high = ephemeral_port_range()
    ports = [p for _ in range(50) for p in _free_ports(3)]
    assert all(not (low <= p <= high) for p in ports), sorted(p for p in ports if low <= p <= high)
    for _ in range(20):
        trio = _free_ports(3)
        assert len(set(trio)) == 3
    configs = [DevConfig.isolated(Path("/tmp/x")) for _ in range(20)]
    assert all(not (low <= p <= high) for c in configs for p in (c.kafka_port, c.kafka_controller_port, c.redis_port))


# -- a Kafka cluster (kafka_nodes > 1) -------------------------------------------------------------


def test_cluster_nodes_take_every_other_port_and_have_their_own_directories(tmp_path: Path) -> None:
    config = DevConfig(state_dir=tmp_path, kafka_nodes=3, kafka_port=21100, kafka_controller_port=21101,
                       redis_port=21110)
    assert [config.kafka_node_ports(k) for k in config.kafka_node_ids] == [(21100, 21101), (21102, 21103),
                                                                          (21104, 21105)]
    assert config.kafka_bootstrap == "127.0.0.1:21100,127.0.0.1:21102,127.0.0.1:21104"
    assert [config.kafka_node_dir(k) for k in config.kafka_node_ids] == [tmp_path / f"kafka-{k}" for k in (1, 2, 3)]
    # A cluster never reuses (and reformats) a single broker's directory, and shares one cluster id.
    assert DevConfig(state_dir=tmp_path).kafka_dir == tmp_path / "kafka" != config.kafka_dir
    assert config.kafka_cluster_id_path == tmp_path / "kafka-cluster.id"
    assert (config.kafka_replication, config.kafka_min_insync) == (3, 2)
    assert (DevConfig(kafka_nodes=2).kafka_replication, DevConfig(kafka_nodes=2).kafka_min_insync) == (2, 1)
    assert (DevConfig().kafka_replication, DevConfig().kafka_min_insync) == (1, 1)


@pytest.mark.parametrize(
    "overrides",
    [
        # node 2's client port (21102) is Redis's
        {"kafka_nodes": 3, "kafka_port": 21100, "kafka_controller_port": 21101, "redis_port": 21102},
        # node 2's client port is node 1's controller port
        {"kafka_nodes": 2, "kafka_port": 21100, "kafka_controller_port": 21102},
        {"kafka_nodes": 3, "kafka_proxied_port": 21200, "kafka_proxied_advertised_port": 21201},
        {"kafka_nodes": 0},
        {"kafka_nodes": 3, "kafka_port": 65533, "kafka_controller_port": 65534},
    ],
)
def test_invalid_cluster_settings_are_rejected(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DevConfig(**overrides)  # type: ignore[arg-type]


def test_isolated_cluster_gets_a_free_block_of_ports(tmp_path: Path) -> None:
    config = DevConfig.isolated(tmp_path, kafka_nodes=3)
    ports = [p for k in config.kafka_node_ids for p in config.kafka_node_ports(k)]
    assert ports == list(range(config.kafka_port, config.kafka_port + 6))
    assert config.redis_port not in ports
    for port in [*ports, config.redis_port]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
