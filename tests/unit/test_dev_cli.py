"""``mesh dev`` commands that need no running service, and the package's public surface."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import mesh.dev
from mesh.cli import app
from mesh.dev import free_port

runner = CliRunner()


def _ports() -> list[str]:
    return ["--kafka-port", str(free_port()), "--kafka-controller-port", str(free_port()), "--redis-port", str(free_port())]


def test_status_of_stopped_services_lists_both_and_exits_1(tmp_path: Path) -> None:
    result = runner.invoke(app, ["dev", "status", "--state-dir", str(tmp_path), *_ports()])
    assert result.exit_code == 1, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines() if line.strip()}
    assert rows["redis"][1:3] == ["stopped", "-"]
    assert rows["kafka"][1:3] == ["stopped", "-"]
    assert rows["redis"][-1] == str(tmp_path / "redis" / "redis.log")
    assert rows["kafka"][-1] == str(tmp_path / "kafka" / "kafka.log")


def test_down_with_nothing_running(tmp_path: Path) -> None:
    result = runner.invoke(app, ["dev", "down", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "nothing was running" in result.output


def test_invalid_ports_are_a_usage_error(tmp_path: Path) -> None:
    port = str(free_port())
    args = ["dev", "up", "--state-dir", str(tmp_path), "--kafka-port", port, "--redis-port", port]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "ports must differ" in result.output


def test_logs_of_unknown_service(tmp_path: Path) -> None:
    result = runner.invoke(app, ["dev", "logs", "zookeeper", "--state-dir", str(tmp_path)])
    assert result.exit_code == 2


@pytest.mark.parametrize("command", ["install", "up", "down", "status", "logs"])
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, ["dev", command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_public_surface_is_pinned() -> None:
    assert sorted(mesh.dev.__all__) == sorted(
        [
            "DevConfig",
            "DevServices",
            "LocalRedisCluster",
            "LocalRedisSentinel",
            "RedisHaConfig",
            "RedisNode",
            "down",
            "ensure_installed",
            "status",
            "up",
            "DevStatus",
            "DownReport",
            "InstallReport",
            "ServiceStatus",
            "UpReport",
            "DevInstallError",
            "DevServiceError",
            "PortInUseError",
            "free_port",
            "redis_ping",
        ]
    )
    for name in mesh.dev.__all__:
        assert getattr(mesh.dev, name).__doc__, name


def test_folders_mark_tests_so_not_integration_selects_unit_tests_only() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    files = ["tests/unit/test_dev_render.py", "tests/integration/test_dev_services.py"]
    selected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", "not integration", *files],
        cwd=root, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    ids = [line for line in selected.stdout.splitlines() if "::" in line]
    assert ids, selected.stdout + selected.stderr
    assert all(i.startswith("tests/unit/") for i in ids)
    only_integration = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", "integration", *files],
        cwd=root, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    ids = [line for line in only_integration.stdout.splitlines() if "::" in line]
    assert ids and all(i.startswith("tests/integration/") for i in ids)
