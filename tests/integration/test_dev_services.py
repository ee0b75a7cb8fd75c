"""The real local Kafka and Redis: session fixtures, ``mesh dev`` end to end, failures, restarts."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from typer.testing import CliRunner

from mesh.cli import app
from mesh.dev import DevServiceError, DevServices, PortInUseError, redis_ping
from mesh.dev._process import is_alive

MakeServices = Callable[..., DevServices]
runner = CliRunner()


# -- the session services ----------------------------------------------------------------------


async def test_session_kafka_round_trips_through_a_consumer_group(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.roundtrip"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic, f"m{i}".encode(), key=f"k{i % 3}".encode())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{topic_prefix}.group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        seen: list[bytes] = []
        for _ in range(30):
            batches = await consumer.getmany(timeout_ms=500)
            seen += [m.value for msgs in batches.values() for m in msgs if m.value is not None]
            if len(seen) >= 10:
                break
        await consumer.commit()
    finally:
        await consumer.stop()
    assert sorted(seen) == sorted(f"m{i}".encode() for i in range(10))


async def test_session_kafka_does_not_auto_create_topics(kafka_bootstrap: str, topic_prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, request_timeout_ms=3000)
        await producer.start()
        try:
            with pytest.raises(Exception):  # noqa: B017 - aiokafka raises its own timeout/unknown-topic types
                await producer.send_and_wait(f"{topic_prefix}.typo", b"x")
        finally:
            await producer.stop()
        assert f"{topic_prefix}.typo" not in await admin.list_topics()
    finally:
        await admin.close()


def test_session_redis_answers_and_key_prefix_is_cleaned(redis_url: str, key_prefix: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping()
        client.set(f"{key_prefix}a", b"1")
        assert client.get(f"{key_prefix}a") == b"1"
        assert client.config_get("appendonly")["appendonly"] == "yes"


def test_session_services_are_the_configured_ones(
    kafka_bootstrap: str, redis_url: str, dev_services: DevServices
) -> None:
    host, port = redis_url.removeprefix("redis://").split("/")[0].split(":")
    assert redis_ping(host, int(port))
    if kafka_bootstrap == dev_services.kafka_bootstrap:  # not an external cluster
        st = dev_services.status()
        assert st.kafka.running and st.kafka.pid is not None and is_alive(st.kafka.pid)
        assert st.redis.running


# -- `mesh dev` end to end on private services -------------------------------------------------


def _cli_args(services: DevServices) -> list[str]:
    c = services.config
    return [
        "--state-dir", str(c.root),
        "--kafka-port", str(c.kafka_port),
        "--kafka-controller-port", str(c.kafka_controller_port),
        "--redis-port", str(c.redis_port),
    ]  # fmt: skip


def test_cli_up_status_idempotent_up_and_down(dev_services_factory: MakeServices) -> None:
    services = dev_services_factory()
    args = _cli_args(services)

    first = runner.invoke(app, ["dev", "up", *args])
    assert first.exit_code == 0, first.output
    assert "started: redis, kafka" in first.output
    st = services.status()
    assert st.all_running
    pids = (st.redis.pid, st.kafka.pid)

    again = runner.invoke(app, ["dev", "up", *args])
    assert again.exit_code == 0, again.output
    assert "already running: nothing to do" in again.output
    assert (services.status().redis.pid, services.status().kafka.pid) == pids

    shown = runner.invoke(app, ["dev", "status", *args])
    assert shown.exit_code == 0, shown.output
    rows = {line.split()[0]: line.split() for line in shown.output.splitlines() if line.strip()}
    assert rows["kafka"][1:4] == ["running", str(pids[1]), services.kafka_bootstrap]
    assert rows["redis"][1:4] == ["running", str(pids[0]), services.redis_url]
    assert rows["kafka"][4] == str(services.config.kafka_log_path)

    down = runner.invoke(app, ["dev", "down", "--state-dir", str(services.config.root)])
    assert down.exit_code == 0, down.output
    assert "stopped: kafka, redis" in down.output
    assert not any(is_alive(p) for p in pids if p is not None)
    assert not services.status().kafka.running


def test_redis_on_a_port_in_use_fails_clearly_and_starts_nothing(
    dev_services_factory: MakeServices,
) -> None:
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        port = stranger.getsockname()[1]
        services = dev_services_factory(redis_port=port)
        with pytest.raises(PortInUseError) as caught:
            services.up()
        assert caught.value.port == port
        assert f"127.0.0.1:{port} is already in use" in str(caught.value)
        st = services.status()
        assert not st.redis.running and not st.kafka.running
        assert f"port {port} in use" in st.redis.note


def test_redis_that_cannot_start_reports_its_log_tail(dev_services_factory: MakeServices) -> None:
    services = dev_services_factory()
    aof_dir = services.config.redis_data_dir / "appendonlydir"
    aof_dir.mkdir(parents=True)
    (aof_dir / "appendonly.aof.manifest").write_text("this is not a manifest\n")
    with pytest.raises(DevServiceError) as caught:
        services.start_redis()
    err = caught.value
    assert err.service == "redis"
    assert "exited during start" in str(err)
    assert "manifest" in err.log_tail.lower()
    assert str(services.config.redis_log_path) in str(err)
    assert not services.status().redis.running
    assert not services.config.redis_pidfile.exists()


def test_kafka_failure_after_redis_started_stops_redis(dev_services_factory: MakeServices) -> None:
    services = dev_services_factory()
    data = services.config.kafka_data_dir
    data.mkdir(parents=True)
    # Storage formatted for another node: the broker refuses to start.
    (data / "meta.properties").write_text(
        "version=1\ncluster.id=Vq7F1t0mS7mVvFyS2bQ3Kw\nnode.id=7\ndirectory.id=AAAAAAAAAAAAAAAAAAAAAA\n"
    )
    with pytest.raises(DevServiceError) as caught:
        services.up()
    assert caught.value.service == "kafka"
    assert caught.value.log_tail
    st = services.status()
    assert not st.redis.running, "redis was left running after kafka failed"
    assert not st.kafka.running


# -- restarts for chaos tests keep the data ----------------------------------------------------


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_restart_redis_keeps_data(dev_services_factory: MakeServices, kill: bool) -> None:
    services = dev_services_factory(redis_appendfsync="always")
    services.up(services=("redis",))
    old_pid = services.status().redis.pid
    with redis.Redis.from_url(services.redis_url) as client:
        client.set("survivor", b"yes")
    services.restart_redis(kill=kill)
    assert services.status().redis.pid != old_pid
    with redis.Redis.from_url(services.redis_url) as client:
        assert client.get("survivor") == b"yes"


async def test_restart_kafka_keeps_topics(dev_services_factory: MakeServices) -> None:
    services = dev_services_factory()
    services.up(services=("kafka",))
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("kept", num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    services.restart_kafka(kill=True)
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    await admin.start()
    try:
        assert "kept" in await admin.list_topics()
    finally:
        await admin.close()


def test_isolated_services_use_their_own_files(dev_services_factory: MakeServices, tmp_path: Path) -> None:
    services = dev_services_factory()
    services.up(services=("redis",))
    assert services.config.redis_log_path.is_relative_to(tmp_path)
    assert (services.config.redis_data_dir / "appendonlydir").is_dir()
    assert services.status().redis.pid != DevServices().status().redis.pid


async def test_client_fixtures_work_and_prefixes_are_unique(
    redis_client: object, kafka_admin: AIOKafkaAdminClient, key_prefix: str, topic_prefix: str
) -> None:
    import redis.asyncio as aioredis

    assert isinstance(redis_client, aioredis.Redis)
    await redis_client.set(f"{key_prefix}x", b"1")
    assert await redis_client.get(f"{key_prefix}x") == b"1"
    await kafka_admin.create_topics([NewTopic(f"{topic_prefix}.x", num_partitions=1, replication_factor=1)])
    assert f"{topic_prefix}.x" in await kafka_admin.list_topics()
    assert key_prefix.startswith("test:") and key_prefix.endswith(":")
    assert "client-fixtures" in topic_prefix
