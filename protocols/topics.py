"""Topic names, derived from one prefix so several meshes can share a cluster."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Topics"]


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of one mesh."""

    prefix: str = "mesh"
    """Prefix of every name, e.g. ``mesh`` gives ``mesh.workflow.events``."""

    @property
    def workflow_events(self) -> str:
        """The workflow event log, keyed by workflow id (one workflow, one partition, in order)."""
        return f"{self.prefix}.workflow.events"

    @property
    def gossip(self) -> str:
        """Context-variable deltas and digests."""
        return f"{self.prefix}.gossip"

    @property
    def votes(self) -> str:
        """Proposals and ballots."""
        return f"{self.prefix}.votes"

    @property
    def trace_events(self) -> str:
        """Structured trace events."""
        return f"{self.prefix}.trace"

    @property
    def dead_letter(self) -> str:
        """Messages that failed to decode or to be handled, with the reason."""
        return f"{self.prefix}.dlq"

    @property
    def tasks(self) -> str:
        """Task events from any producer (CloudEvents JSON), read by the ingress; not signed."""
        return f"{self.prefix}.tasks"

    def all(self) -> tuple[str, ...]:
        """Every topic the mesh creates at start."""
        return (self.workflow_events, self.gossip, self.votes, self.trace_events, self.dead_letter)
