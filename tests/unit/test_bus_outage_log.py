"""The Kafka client's error flood during an outage becomes a state-change line, summaries and a recovery line."""

from __future__ import annotations

import logging

import pytest

from mesh.bus._outage import OutageLog


def _record(msg: str, level: int = logging.ERROR, name: str = "aiokafka") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, None, None)


def test_an_outage_is_one_line_then_summaries_then_one_recovery_line(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    f = OutageLog(summary_every_s=30, quiet_after_s=10, clock=lambda: now[0])
    assert f.filter(_record("Heartbeat failed: rebalancing", logging.WARNING))  # not an outage: passes
    assert not f.down
    passed = 0
    with caplog.at_level(logging.INFO, logger="mesh.bus.kafka"):
        for i in range(160 * 60):  # 160 lines a second for a minute
            now[0] = i / 160
            passed += f.filter(_record("Unable connect to node with id 1: [Errno 111] Connect call failed"))
            if i % 160 == 0:
                f.tick()
        now[0] = 75.0
        f.tick()
    assert passed == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "mesh.bus.kafka"]
    assert lines[0].startswith("kafka: broker unreachable (Unable connect")
    assert sum("still unreachable" in line for line in lines) == 1  # at 30 s
    assert "reachable again" in lines[-1] and f"{160 * 60 - 1} client error line(s)" in lines[-1]
    assert len(lines) == 3 and not f.down and f.outages == 1
