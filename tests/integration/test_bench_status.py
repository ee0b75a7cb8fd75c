"""bench.status runs end to end on real Kafka and Redis (a tiny size: the figures come from the full run)."""

from __future__ import annotations

import pytest

from bench import status

pytestmark = pytest.mark.integration


def test_bench_status_smoke(kafka_bootstrap: str, redis_url: str, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MESH_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("MESH_REDIS_URL", redis_url)
    assert status.main(["--sizes", "5", "--log-reps", "1", "--index-reps", "5"]) == 0
    out = capsys.readouterr().out
    assert "log replay p50 ms" in out and "index p50 ms" in out
