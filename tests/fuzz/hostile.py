"""The hostile corpus now ships with ``mesh chaos`` (its flood scenario); re-exported for the fuzz tests."""

from mesh.chaos.hostile import HostileRecord, hostile_corpus

__all__ = ["HostileRecord", "hostile_corpus"]
