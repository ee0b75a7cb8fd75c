"""Rendered config files of the local services."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from mesh.dev import DevConfig
from mesh.dev._render import (
    kafka_jvm_args,
    new_cluster_id,
    render_kafka_properties,
    render_redis_conf,
)


def _props(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return dict(pairs)


def _conf(text: str) -> dict[str, str]:
    pairs = (line.split(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return dict(pairs)


@pytest.fixture
def config(tmp_path: Path) -> DevConfig:
    return DevConfig(state_dir=tmp_path, kafka_port=29092, kafka_controller_port=29093, redis_port=26379)


def test_kafka_is_a_combined_kraft_node_on_the_configured_ports(config: DevConfig) -> None:
    props = _props(render_kafka_properties(config))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["controller.listener.names"] == "CONTROLLER"


def test_kafka_advertises_exactly_the_client_address(config: DevConfig) -> None:
    props = _props(render_kafka_properties(config))
    assert props["advertised.listeners"] == f"PLAINTEXT://{config.kafka_bootstrap}"
    assert "CONTROLLER" not in props["advertised.listeners"]


def test_kafka_single_node_settings(config: DevConfig) -> None:
    props = _props(render_kafka_properties(config))
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert int(props["group.min.session.timeout.ms"]) <= 1000
    assert props["auto.create.topics.enable"] == "false"
    assert props["log.dirs"] == str(config.kafka_data_dir)
    assert Path(props["log.dirs"]).is_relative_to(config.root)


def test_kafka_jvm_heap_follows_config(tmp_path: Path) -> None:
    args = kafka_jvm_args(DevConfig(state_dir=tmp_path, kafka_heap_mb=384))
    assert "-Xmx384m" in args
    assert any(a.startswith("-Dlog4j2.configurationFile=") and str(tmp_path) in a for a in args)


def test_redis_conf_has_own_port_dir_and_aof(config: DevConfig) -> None:
    conf = _conf(render_redis_conf(config))
    assert conf["port"] == "26379"
    assert conf["bind"] == "127.0.0.1"
    assert conf["dir"] == str(config.redis_data_dir)
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == "everysec"
    assert conf["pidfile"] == str(config.redis_pidfile)
    assert conf["logfile"] == str(config.redis_log_path)


@pytest.mark.parametrize("policy", ["always", "everysec", "no"])
def test_redis_appendfsync_is_configurable(tmp_path: Path, policy: str) -> None:
    conf = _conf(render_redis_conf(DevConfig(state_dir=tmp_path, redis_appendfsync=policy)))  # type: ignore[arg-type]
    assert conf["appendfsync"] == policy


def test_cluster_ids_are_kafka_uuids() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_cluster_node_is_a_voter_with_its_own_ports_and_replicated_internal_topics(tmp_path: Path) -> None:
    config = DevConfig(state_dir=tmp_path, kafka_nodes=3, kafka_port=29092, kafka_controller_port=29093,
                       redis_port=26379)
    props = _props(render_kafka_properties(config, node=2))
    assert props["node.id"] == "2"
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29093,2@127.0.0.1:29095,3@127.0.0.1:29097"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29094,CONTROLLER://127.0.0.1:29095"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29094"
    assert props["log.dirs"] == str(tmp_path / "kafka-2" / "data")
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["default.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2"
    assert kafka_jvm_args(config, 2)[-1].endswith(str(tmp_path / "kafka-2" / "log4j2.properties"))
