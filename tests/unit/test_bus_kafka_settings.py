"""KafkaBus's durability settings, without a broker: acks=all producers, replication sized to the cluster.

Kafka's own behaviour under them (a killed leader or controller loses nothing acknowledged) is
tested on a real 3-node cluster in ``tests/chaos/test_kafka_cluster.py``; here only the choices.
"""

from __future__ import annotations

from typing import Any

import pytest

from mesh.bus import KafkaBus
from mesh.bus import kafka as kafka_module
from mesh.settings import MeshSettings


class _Admin:
    def __init__(self, brokers: int) -> None:
        self.brokers = brokers

    async def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"node_id": n} for n in range(1, self.brokers + 1)], "cluster_id": "c"}


@pytest.mark.parametrize(
    ("brokers", "replication", "min_isr", "expected"),
    [
        (1, None, None, (1, {})),
        (2, None, None, (2, {})),
        (3, None, None, (3, {"min.insync.replicas": "2"})),
        (5, None, None, (3, {"min.insync.replicas": "2"})),
        (5, 5, 3, (5, {"min.insync.replicas": "3"})),
        (3, 1, None, (1, {})),
    ],
)
async def test_new_topics_are_replicated_to_fit_the_cluster(
    brokers: int, replication: int | None, min_isr: int | None, expected: tuple[int, dict[str, str]]
) -> None:
    bus = KafkaBus("127.0.0.1:1", replication_factor=replication, min_insync_replicas=min_isr)
    assert await bus._replication(_Admin(brokers)) == expected  # type: ignore[arg-type]


async def test_the_producer_waits_for_every_in_sync_replica_and_is_idempotent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}

    class Producer:
        def __init__(self, **kwargs: Any) -> None:
            seen.update(kwargs)

        async def start(self) -> None:
            return None

    async def no_topics(*args: object, **kwargs: object) -> None:
        return None

    monkeypatch.setattr(kafka_module, "AIOKafkaProducer", Producer)
    bus = KafkaBus("127.0.0.1:1", create_topics=[])
    monkeypatch.setattr(bus, "ensure_topics", no_topics)
    await bus.start()
    assert seen["acks"] == "all" and seen["enable_idempotence"] is True


def test_settings_leave_replication_to_the_cluster_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MESH_TOPIC_REPLICATION", raising=False)
    monkeypatch.delenv("MESH_TOPIC_MIN_INSYNC_REPLICAS", raising=False)
    assert (MeshSettings().topic_replication, MeshSettings().topic_min_insync_replicas) == (
        None,
        None,
    )
    monkeypatch.setenv("MESH_TOPIC_REPLICATION", "3")
    monkeypatch.setenv("MESH_TOPIC_MIN_INSYNC_REPLICAS", "2")
    assert (MeshSettings().topic_replication, MeshSettings().topic_min_insync_replicas) == (3, 2)
