"""Service lifecycle, failure reporting and leases, on fake services that run ``sleep``."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.dev import DevConfig, DevServiceError, DevServices, PortInUseError, free_port
from mesh.dev._process import is_alive, read_pidfile, write_pidfile
from mesh.dev._service import LocalService
from mesh.errors import ServiceStartError, UsageError


class FakeService(LocalService):
    """A service whose process is a shell command; it answers probes once it created ``ready``."""

    exe_names = ("sleep", "sh")

    def __init__(
        self,
        config: DevConfig,
        name: str,
        *,
        command: str = "touch ready; exec sleep 30",
        port: int | None = None,
        ready: bool = True,
    ) -> None:
        super().__init__(config)
        self.name = name
        self.command = command
        self.port = port
        self.ready = ready
        self.prepared = 0

    @property
    def pidfile(self) -> Path:
        return self.workdir / f"{self.name}.pid"

    @property
    def workdir(self) -> Path:
        return self.config.root / self.name

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def address(self) -> str:
        return f"fake://{self.name}"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.port,) if self.port else ()

    def prepare(self, log_offset: int) -> None:
        self.prepared += 1
        (self.workdir / "ready").unlink(missing_ok=True)

    def argv(self) -> list[str]:
        return ["sh", "-c", self.command]

    def probe(self) -> bool:
        return self.ready and (self.workdir / "ready").exists()


@pytest.fixture
def config(tmp_path: Path) -> DevConfig:
    return DevConfig(state_dir=tmp_path, start_timeout_s=5, stop_timeout_s=5)


@pytest.fixture
def services(config: DevConfig) -> Iterator[DevServices]:
    s = DevServices(config)
    s.redis = FakeService(config, "redis")  # type: ignore[assignment]
    s.kafka = FakeService(config, "kafka")  # type: ignore[assignment]
    s._installed = lambda names: True  # type: ignore[method-assign]
    yield s
    s.down()


def test_start_writes_an_owned_pidfile_and_status_reports_it(services: DevServices) -> None:
    assert services.start_redis() is True
    st = services.status().redis
    assert st.running and st.pid is not None and is_alive(st.pid)
    assert read_pidfile(services.redis.pidfile) == st.pid
    assert st.address == "fake://redis"
    assert st.log_path == services.redis.log_path


def test_start_is_a_no_op_when_running(services: DevServices) -> None:
    services.start_redis()
    pid = services.status().redis.pid
    assert services.start_redis() is False
    assert services.status().redis.pid == pid
    assert services.redis.prepared == 1  # type: ignore[attr-defined]


def test_up_twice_reports_already_running(services: DevServices) -> None:
    first = services.up()
    second = services.up()
    assert first.started == ("redis", "kafka") and first.already_running == ()
    assert second.started == () and second.already_running == ("redis", "kafka")
    assert second.status.all_running


def test_down_stops_only_what_is_ours(services: DevServices, config: DevConfig) -> None:
    services.up()
    pids = [s.pid for s in services.status().services]
    # A pidfile naming someone else's process (here: a sleep in another directory).
    stranger = subprocess.Popen(["sleep", "30"], cwd=config.root.parent)
    try:
        write_pidfile(services.kafka.pidfile, stranger.pid)
        report = services.down()
        assert report.stopped == ("redis",)
        assert stranger.poll() is None  # never signalled
        assert not any(is_alive(p) for p in pids if p != pids[1])
    finally:
        stranger.kill()
        stranger.wait()
        # the real kafka fake is still running: its pidfile was overwritten above
        subprocess.run(["kill", str(pids[1])], check=False)


def test_stale_pidfile_is_reported_and_replaced(services: DevServices) -> None:
    services.redis.workdir.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    write_pidfile(services.redis.pidfile, dead.pid)
    assert "stale pidfile" in services.status().redis.note
    assert services.start_redis() is True
    assert read_pidfile(services.redis.pidfile) != dead.pid


def test_stop_keeps_data_dir_and_start_brings_it_back(services: DevServices) -> None:
    services.start_redis()
    services.redis.data_dir.mkdir(parents=True, exist_ok=True)
    (services.redis.data_dir / "aof").write_text("kept")
    services.restart_redis(kill=True)
    assert services.status().redis.running
    assert (services.redis.data_dir / "aof").read_text() == "kept"


def test_a_process_that_exits_reports_its_log_tail_and_leaves_nothing(config: DevConfig) -> None:
    service = FakeService(config, "broken", command="echo 'bind: Address already in use' >&2; exit 3")
    with pytest.raises(DevServiceError) as caught:
        service.start()
    err = caught.value
    assert isinstance(err, ServiceStartError) and not err.retryable
    assert "exited during start" in str(err)
    assert "Address already in use" in err.log_tail
    assert "Address already in use" in str(err)
    assert err.service == "broken" and err.log_path == service.log_path
    assert not service.pidfile.exists()
    assert not service.status().running


def test_log_tail_holds_only_the_failed_attempt(config: DevConfig) -> None:
    service = FakeService(config, "broken", command="echo attempt-one; exit 1")
    with pytest.raises(DevServiceError):
        service.start()
    service.command = "echo attempt-two; exit 1"
    with pytest.raises(DevServiceError) as caught:
        service.start()
    assert "attempt-two" in caught.value.log_tail
    assert "attempt-one" not in caught.value.log_tail


def test_a_process_that_never_answers_is_killed_after_the_timeout(tmp_path: Path) -> None:
    config = DevConfig(state_dir=tmp_path, start_timeout_s=0.3, stop_timeout_s=2)
    service = FakeService(config, "mute", ready=False)
    with pytest.raises(DevServiceError, match=r"did not answer within 0.3 s"):
        service.start()
    assert not service.pidfile.exists()
    assert not service.status().running


def test_port_held_by_a_stranger_is_refused_before_launch(config: DevConfig) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        service = FakeService(config, "redis", port=port)
        with pytest.raises(PortInUseError) as caught:
            service.start()
        assert caught.value.port == port
        assert f"127.0.0.1:{port}" in str(caught.value)
        assert service.prepared == 0
        assert f"port {port} in use" in service.status().note


def test_up_rolls_back_what_it_started_when_a_later_service_fails(services: DevServices) -> None:
    services.kafka.command = "echo kafka-boom; exit 2"  # type: ignore[attr-defined]
    with pytest.raises(DevServiceError, match="kafka-boom"):
        services.up()
    assert not services.status().redis.running
    assert not services.status().kafka.running


def test_up_rollback_spares_a_service_that_already_ran(services: DevServices) -> None:
    services.start_redis()
    services.kafka.command = "exit 2"  # type: ignore[attr-defined]
    with pytest.raises(DevServiceError):
        services.up()
    assert services.status().redis.running


def _clustered(services: DevServices, config: DevConfig, *, second: str = "touch ready; exec sleep 30") -> None:
    # Three fake nodes; each becomes ready only once all were launched (like a KRaft quorum).
    quorum = "while [ $(ls ../kafka-*/launched 2>/dev/null | wc -l) -lt 3 ]; do sleep 0.05; done; "
    nodes = [FakeService(config, f"kafka-{k}", command=f"touch launched; {quorum}touch ready; exec sleep 30")
             for k in (1, 2, 3)]
    nodes[1].command = f"touch launched; {second}"
    services.kafka = nodes[0]  # type: ignore[assignment]
    services._kafka_peers = (nodes[1], nodes[2])  # type: ignore[assignment]


def test_cluster_nodes_are_launched_together_and_stopped_together(services: DevServices, config: DevConfig) -> None:
    _clustered(services, config)
    report = services.up(services=("kafka",))
    assert report.started == ("kafka",)
    status = services.status()
    assert [s.name for s in status.services] == ["redis", "kafka-1", "kafka-2", "kafka-3"]
    assert all(s.running for s in status.services[1:])
    assert services.stop_kafka() is True
    assert not any(s.running for s in services.status().services)


def test_a_failing_cluster_node_takes_the_launched_ones_down(services: DevServices, config: DevConfig) -> None:
    _clustered(services, config, second="echo node-boom; exit 2")
    with pytest.raises(DevServiceError, match="node-boom"):
        services.up(services=("kafka",))
    assert not any(s.running for s in services.status().services)


def test_unknown_service_names_are_a_usage_error(services: DevServices) -> None:
    with pytest.raises(UsageError):
        services.up(services=("zookeeper",))


# -- leases ------------------------------------------------------------------------------------


def test_lease_stops_what_it_started(services: DevServices) -> None:
    with services.lease(services=("kafka",)) as report:
        assert report.started == ("kafka",)
        assert services.status().kafka.running
        assert not services.status().redis.running
    assert not services.status().kafka.running


def test_lease_leaves_services_started_by_hand(services: DevServices) -> None:
    services.up()
    with services.lease() as report:
        assert report.started == ()
    assert services.status().all_running


def test_lease_keep_running(services: DevServices) -> None:
    with services.lease(keep_running=True):
        pass
    assert services.status().all_running


def test_last_live_lease_out_stops_the_services(services: DevServices, config: DevConfig) -> None:
    other_session = subprocess.Popen(["sleep", "30"])
    try:
        with services.lease(services=("redis",)):
            # Another test session joins while ours holds the service.
            write_pidfile(config.root / "leases" / f"redis.{other_session.pid}", other_session.pid)
            assert services.lease_holders("redis") == sorted([other_session.pid, os.getpid()])
        assert services.status().redis.running  # the other session still uses it
        other_session.kill()
        other_session.wait()
        with services.lease(services=("redis",)) as report:
            assert report.started == ()
        # The dead holder's lease no longer counts; the autostarted service goes with the last lease.
        assert not services.status().redis.running
    finally:
        other_session.kill()
        other_session.wait()


def test_up_by_hand_during_a_lease_is_not_stopped_by_it(services: DevServices) -> None:
    with services.lease(services=("redis",)):
        services.down()
        services.up(services=("redis",))
    assert services.status().redis.running


def test_isolated_configs_do_not_see_each_other(tmp_path: Path) -> None:
    a = DevConfig(state_dir=tmp_path / "a", redis_port=free_port())
    b = DevConfig(state_dir=tmp_path / "b", redis_port=free_port())
    fa, fb = FakeService(a, "redis"), FakeService(b, "redis")
    fa.start()
    fb.workdir.mkdir(parents=True)
    try:
        assert fa.status().running and not fb.status().running
        write_pidfile(fb.pidfile, fa.status().pid or 0)  # b's pidfile names a's process
        assert not fb.status().running
        assert fb.stop() is False
        assert fa.status().running
    finally:
        fa.stop()
