"""Agent processes export their KPIs as OpenTelemetry metrics, thresholds flagged, to a real OTLP/HTTP
receiver (``mesh.chaos.otlp_sink --decode``, a separate process), configured only by the standard
OTEL_* variables; with no endpoint they export nothing and say nothing about it."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mesh.telemetry import KPI_THRESHOLDS

REPO = Path(__file__).resolve().parents[2]
ROLES = {"identity", "fetch", "validate", "report"}
"""The demo's roles (agents ``<role>-1``, and a standby ``fetch-2``: either fetch agent may own it)."""
_OTEL = (
    "OTEL_SDK_DISABLED",
    "OTEL_METRICS_EXPORTER",
    "OTEL_TRACES_EXPORTER",
    "MESH_TRACING",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _OTEL}
    env.update(PYTHONPATH=str(REPO), COLUMNS="220", NO_COLOR="1", NO_PROXY="127.0.0.1,localhost")
    env.update(extra)
    return env


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A decoding OTLP sink process: (its /v1/metrics URL, the file it logs data points to)."""
    port, log = _free_port(), tmp_path / "otlp.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mesh.chaos.otlp_sink",
            "--port",
            str(port),
            "--log",
            str(log),
            "--decode",
        ],
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("ready on")
        yield f"http://127.0.0.1:{port}/v1/metrics", log
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _points(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


@pytest.mark.timeout(300)
def test_agent_processes_export_kpis_with_thresholds_flagged(
    tmp_path: Path, sink: tuple[str, Path], kafka_bootstrap: str, redis_url: str
) -> None:
    url, log = sink
    env = _env(
        MESH_KAFKA_BOOTSTRAP=kafka_bootstrap,
        MESH_REDIS_URL=redis_url,
        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=url,
        OTEL_METRIC_EXPORT_INTERVAL="500",
    )
    demo = subprocess.run(
        [sys.executable, "-m", "mesh", "demo", "--patients", "4", "--page-size", "2",
         "--kill-after-turn", "0", "--turn-delay-s", "0.1", "--run-dir", str(tmp_path / "demo")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-2000:]
    # The agents stop with the demo; each flushes its meter provider on the way out.
    deadline = time.monotonic() + 30
    while True:
        points = _points(log)
        agents = {p["agent"] for p in points if p["metric"] == "mesh.kpi.violated"}
        if ROLES <= {a.split("-")[0] for a in agents} or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    workers = {p["agent"] for p in points if p["metric"] == "mesh.turn.latency"}
    assert {a.split("-")[0] for a in workers} == ROLES, workers
    for agent in workers:
        mine = [p for p in points if p["agent"] == agent]
        names = {p["metric"] for p in mine}
        assert {"mesh.turn.latency", "mesh.checkpoint.write_time", "mesh.context.utilization",
                "mesh.step.started", "mesh.kpi.threshold", "mesh.kpi.value", "mesh.kpi.violated"} <= names, (
            agent, names)  # fmt: skip
        limits = {
            p["attributes"]["mesh.kpi"]: p["value"]
            for p in mine
            if p["metric"] == "mesh.kpi.threshold"
        }
        assert limits == {t.key: t.limit for t in KPI_THRESHOLDS}
        flags = {
            p["attributes"]["mesh.kpi"]: p["value"]
            for p in mine
            if p["metric"] == "mesh.kpi.violated"
        }
        assert {
            "turn_latency_p95",
            "checkpoint_write_p95",
            "state_size_max",
            "spinning_count",
        } <= set(flags)
        assert set(flags.values()) <= {0, 1}
        # A healthy demo run: no spinning, small checkpoints.
        assert flags["spinning_count"] == 0 and flags["state_size_max"] == 0
        assert all(
            p["attributes"]["mesh.role"] == agent.split("-")[0]
            for p in mine
            if p["metric"] == "mesh.kpi.violated"
        )


_QUIET_AGENT = textwrap.dedent(
    """
    import sys
    from mesh.telemetry import Kpis, setup_metrics, shutdown_metrics

    setup_metrics("agent-mesh", agent_id="quiet-1", role="fetch")
    Kpis(attributes={"mesh.role": "fetch"}).record_turn_latency(9000.0)
    shutdown_metrics()
    print("opentelemetry.exporter.otlp.proto.http.metric_exporter" in sys.modules)
    """
)


def test_without_an_endpoint_metrics_are_off_cleanly(sink: tuple[str, Path]) -> None:
    """No OTEL endpoint: the agent's meter provider loads no exporter, sends nothing and prints
    nothing; pointed at the sink, the same process exports (so the check can fail)."""
    url, log = sink
    proc = subprocess.run(
        [sys.executable, "-c", _QUIET_AGENT],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False"] and proc.stderr == ""
    assert not log.read_text()
    proc = subprocess.run(
        [sys.executable, "-c", _QUIET_AGENT], env=_env(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=url),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.split() == ["True"], proc.stderr
    points = _points(log)
    assert {"agent": "quiet-1", "metric": "mesh.kpi.violated", "value": 1} | {
        "attributes": {"mesh.role": "fetch", "mesh.kpi": "turn_latency_p95", "mesh.kpi.unit": "ms",
                       "mesh.kpi.better": "lower"}
    } in points  # fmt: skip
    assert not re.search(r"WARN|Traceback", proc.stderr)
