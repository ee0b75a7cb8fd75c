"""The message bus: the Bus protocol, its Kafka implementation and its in-memory implementation."""

from mesh.bus._dead_letters import (
    DeadLetterClaims,
    InMemoryDeadLetterClaims,
    RedisDeadLetterClaims,
    claim_dead_letter,
    publish_dead_letter,
)
from mesh.bus._security import FileTokenProvider, KafkaSecurity
from mesh.bus.base import (
    Bus,
    Delivery,
    EnvelopeGuard,
    EnvelopeRejected,
    RebalanceListener,
    Subscription,
    SubscriptionOptions,
    TopicPartition,
    record_fetched_at,
)
from mesh.bus.kafka import KafkaBus, KafkaSubscription
from mesh.bus.memory import InMemoryBroker, InMemoryBus, InMemorySubscription

__all__ = [
    # the seam
    "Bus",
    "Delivery",
    "EnvelopeGuard",
    "EnvelopeRejected",
    "RebalanceListener",
    "Subscription",
    "SubscriptionOptions",
    "TopicPartition",
    "record_fetched_at",
    # one dead letter per bad record, across consumer groups
    "DeadLetterClaims",
    "InMemoryDeadLetterClaims",
    "RedisDeadLetterClaims",
    "claim_dead_letter",
    "publish_dead_letter",
    # Kafka
    "FileTokenProvider",
    "KafkaBus",
    "KafkaSecurity",
    "KafkaSubscription",
    # in memory
    "InMemoryBroker",
    "InMemoryBus",
    "InMemorySubscription",
]
