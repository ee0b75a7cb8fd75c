"""agent-mesh: a distributed multi-agent runtime over Kafka and Redis."""

__version__ = "0.1.0"
