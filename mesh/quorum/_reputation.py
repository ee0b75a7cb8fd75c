"""Peer reputation: an EWMA of agreement with decided outcomes; below a threshold, quarantine."""

from __future__ import annotations

from dataclasses import dataclass

from protocols.votes import QuarantineEvent

__all__ = ["Reputation", "ReputationOptions"]


@dataclass(frozen=True, slots=True)
class ReputationOptions:
    """How fast reputation moves and where quarantine starts."""

    alpha: float = 0.25
    """Weight of the newest observation in the moving average (0-1)."""
    threshold: float = 0.5
    """A peer whose score falls below this is quarantined."""
    initial: float = 1.0
    """Score of a peer never seen before."""


class Reputation:
    """Scores peers by how often their ballots agree with quorum decisions.

    Each scored ballot moves the score ``s <- (1 - alpha) * s + alpha * agreed``. A peer that
    falls below ``threshold``, or equivocates once, is quarantined for good (until ``release``):
    its gossip and ballots are ignored. Quarantine is local to this observer.
    """

    def __init__(self, *, observer: str = "", options: ReputationOptions | None = None) -> None:
        """Scores as seen by ``observer``."""
        self.observer = observer
        self.options = options or ReputationOptions()
        self._scores: dict[str, float] = {}
        self._quarantined: set[str] = set()

    def score(self, peer: str) -> float:
        """The current score of ``peer``."""
        return self._scores.get(peer, self.options.initial)

    def is_quarantined(self, peer: str) -> bool:
        """Whether ``peer`` is quarantined."""
        return peer in self._quarantined

    @property
    def quarantined(self) -> frozenset[str]:
        """Every quarantined peer."""
        return frozenset(self._quarantined)

    def record(self, peer: str, *, agreed: bool) -> QuarantineEvent | None:
        """Score one ballot of ``peer``; return the quarantine event if this put it in quarantine."""
        a = self.options.alpha
        score = (1 - a) * self.score(peer) + a * (1.0 if agreed else 0.0)
        self._scores[peer] = score
        if score < self.options.threshold and peer not in self._quarantined:
            return self._quarantine(peer, "reputation")
        return None

    def record_equivocation(self, peer: str) -> QuarantineEvent | None:
        """A peer contradicted itself: quarantine it at once (None if it already was)."""
        self._scores[peer] = 0.0
        if peer in self._quarantined:
            return None
        return self._quarantine(peer, "equivocation")

    def release(self, peer: str) -> None:
        """Lift ``peer``'s quarantine and reset its score (an operator decision)."""
        self._quarantined.discard(peer)
        self._scores.pop(peer, None)

    def _quarantine(self, peer: str, reason: str) -> QuarantineEvent:
        self._quarantined.add(peer)
        return QuarantineEvent(
            peer=peer,
            reason=reason,  # type: ignore[arg-type]
            reputation=self.score(peer),
            threshold=self.options.threshold,
            observer=self.observer,
        )

    def __repr__(self) -> str:
        return f"Reputation(observer={self.observer!r}, quarantined={sorted(self._quarantined)})"
