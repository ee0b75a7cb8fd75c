"""The campaign report (markdown table, JSON) and ``mesh chaos check`` on saved histories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mesh.chaos import CampaignReport, ScenarioResult, check
from mesh.cli import run
from tests.unit.chaos.test_checker import CASES, clean_history, mutate


def _report() -> CampaignReport:
    clean = ScenarioResult("kill-agents", "SIGKILL agents", check(clean_history(3)), 12.0)
    broken = ScenarioResult(
        "redis-kill-always",
        "SIGKILL Redis",
        check(mutate(clean_history(2), CASES["duplicate_effect"])),
        8.0,
    )
    return CampaignReport(
        command="mesh chaos run --seed 5",
        seed=5,
        started_at="2026-12-02T09:00:00+00:00",
        scenarios=[clean, broken],
    )


def test_markdown_has_a_row_per_scenario_and_each_anomaly_with_its_evidence() -> None:
    text = _report().markdown()
    assert "- command: `mesh chaos run --seed 5`" in text and "- seed: 5" in text
    assert (
        "| kill-agents | 3 | 0 | 3 | none | - | 0 | 0 (0 reconciled, 0 reported) | 1.00 |" in text
    )
    assert "| redis-kill-always | 2 | 0 | 2 | duplicate_effect 1 |" in text
    assert "**duplicate_effect**: effect wf-0:validate:1 created 2 times" in text
    assert text.count("    - `#") == 2  # both audit lines are the evidence
    assert "ANOMALIES FOUND" in text


def test_json_report_keeps_seed_command_totals_and_evidence(tmp_path: Path) -> None:
    md, js = _report().write(tmp_path)
    data = json.loads(js.read_text())
    assert (
        data["seed"] == 5 and data["command"] == "mesh chaos run --seed 5" and data["ok"] is False
    )
    assert data["totals"]["workflows"] == 5 and data["totals"]["anomalies"] == 1
    assert data["scenarios"][1]["anomalies"][0]["evidence"][0].startswith("#")
    assert md.read_text().startswith("# Fault campaign report")


@pytest.mark.parametrize(("broken", "code"), [(False, 0), (True, 1)])
def test_mesh_chaos_check_exits_1_on_an_anomaly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], broken: bool, code: int
) -> None:
    history = mutate(clean_history(2), CASES["step_lost"]) if broken else clean_history(2)
    history.save(tmp_path / "history.jsonl")
    assert run(["chaos", "check", str(tmp_path / "history.jsonl")]) == code
    out = capsys.readouterr().out
    assert ("step_lost: wf-0/report never completed" in out) is broken
    assert "2 workflows" in out


def test_mesh_chaos_list_names_every_scenario_and_what_it_needs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from agents.campaign import SCENARIOS

    assert run(["chaos", "list"]) == 0
    out = capsys.readouterr().out
    for name in SCENARIOS:
        assert name in out
    assert "[needs services, toxiproxy]" in out and "[needs faketime]" in out


def test_an_unknown_scenario_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = run(["chaos", "run", "--scenarios", "no-such", "--report-dir", str(tmp_path)])
    assert code != 0 and "unknown scenario(s) no-such" in capsys.readouterr().err


@pytest.mark.parametrize(("nodes", "redis_port"), [(1, 30002), (3, 30006)])
def test_private_service_ports_leave_room_for_every_kafka_node(tmp_path: Path, nodes: int, redis_port: int) -> None:
    # Node k takes 30000 + 2(k-1) and 30001 + 2(k-1): Redis and the proxy come after the last node.
    from agents.campaign import CampaignOptions, _private_services

    opts = CampaignOptions(report_dir=tmp_path, services_port=30000, kafka_nodes=nodes)
    config = _private_services(opts, with_proxy=nodes == 1).config
    taken = [port for node in config.kafka_node_ids for port in config.kafka_node_ports(node)]
    assert sorted(taken) == list(range(30000, 30000 + 2 * nodes))
    assert config.redis_port == redis_port
    if nodes == 1:  # the network cut's proxied listener (single-node only) comes after Redis
        assert (config.kafka_proxied_port, config.kafka_proxied_advertised_port) == (30003, 30004)
