"""A user's trace sink is one observer class and one entry point: agent processes load it.

The demo's five agent processes run with a real distribution on their ``PYTHONPATH`` that registers
a turn observer under ``agent_mesh.observers`` (tests/observer_plugin.py); every turn of the
workflow reaches it, from the agent that ran it, secrets masked; the broken plugins beside it are
skipped and the workflow completes (real Kafka and Redis).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mesh.security import REDACTED
from tests.observer_plugin import install, install_distribution

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_agents_feed_every_turn_to_an_observer_plugin(tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> None:
    plugin_dir = install(tmp_path / "site")
    turns = tmp_path / "turns.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        PYTHONPATH=f"{REPO}{os.pathsep}{plugin_dir}", TURN_LOG_PATH=str(turns), COLUMNS="200", NO_COLOR="1",
        MESH_KAFKA_BOOTSTRAP=kafka_bootstrap, MESH_REDIS_URL=redis_url,
    )
    demo = subprocess.run(
        [sys.executable, "-m", "mesh", "demo", "--patients", "2", "--page-size", "2", "--turn-delay-s", "0",
         "--run-dir", str(tmp_path / "demo")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-2000:]
    rows = [json.loads(line) for line in turns.read_text().splitlines()]
    # Each role's turns, reported by an agent of that role (two observers per agent: the factory's
    # and the class's; the class's does not know its agent).
    named = [r for r in rows if r["agent"] != "?"]
    assert {r["step"] for r in named} == {"identity", "fetch", "validate", "report"}
    assert all(r["agent"].startswith(r["role"]) and r["step"] == r["role"] for r in named)
    assert len(named) == len(rows) - len(named)
    # The token the identity step obtained is masked in what the observers see.
    token_params = [r["params"]["token"] for r in named if "token" in r["params"]]
    assert token_params and all(v == REDACTED for v in token_params), token_params
    logs = "".join(p.read_text() for p in (tmp_path / "demo").glob("*.log"))
    assert "observer plugin broken-import" in logs and "observer plugin not-an-observer" in logs


@pytest.mark.timeout(120)
def test_an_agent_that_fails_to_start_closes_its_kafka_clients(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, topic_prefix: str
) -> None:
    # A plugin that exits the process while the worker is being built, after the bus and the peer
    # started: the agent exits, and its Kafka clients are closed on the way (no "Unclosed" report).
    site = install_distribution(
        tmp_path / "site", "exiting_plugin", "import sys\n\ndef make(agent_id, role):\n    sys.exit(3)\n",
        "[agent_mesh.observers]\nexit = exiting_plugin:make\n",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(PYTHONPATH=f"{REPO}{os.pathsep}{site}", MESH_KAFKA_BOOTSTRAP=kafka_bootstrap, MESH_REDIS_URL=redis_url,
               MESH_TOPIC_PREFIX=topic_prefix, MESH_STATE_DIR=str(tmp_path / "state"), PYTHONDEVMODE="1")
    agent = subprocess.run(
        [sys.executable, "-m", "mesh", "agent", "run", "--role", "identity", "--roles-module", "agents.roles",
         "--agent-id", "identity-x"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip
    out = agent.stdout + agent.stderr
    assert agent.returncode == 3, out[-3000:]
    assert "Unclosed AIOKafka" not in out and "Unclosed client session" not in out, out[-3000:]
