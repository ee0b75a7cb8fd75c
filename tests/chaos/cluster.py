"""The crash tests' cluster: it ships with ``mesh chaos`` now (``agents/cluster.py``)."""

from agents.cluster import SESSION_TIMEOUT_MS, Cluster

__all__ = ["SESSION_TIMEOUT_MS", "Cluster"]
