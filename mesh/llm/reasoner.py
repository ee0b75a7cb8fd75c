"""The Reasoner seam: the one interface between the turn loop and whatever picks actions.

The boundary exists so that the turn loop never knows whether a paid model, a local fake or
a rule table made the decision, and so that provider exceptions stop here.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from mesh.llm.decision import ReasonerRequest, ReasonerResult, Usage

__all__ = ["Reasoner", "UsageCallback"]


class UsageCallback(Protocol):
    """Receives provider-reported token usage, e.g. to calibrate the context engine's estimates.

    Called once per successful provider call, synchronously, in the task that awaited the
    reasoner, before that call returns; calls of one reasoner therefore never overlap within one
    task but may interleave across tasks. It must be quick and must not block. Exceptions it
    raises are logged and swallowed: telemetry never fails a turn.
    """

    def __call__(self, model: str, estimated_prompt_text: str, usage: Usage) -> None:
        """Record that ``estimated_prompt_text`` cost ``usage`` on ``model``."""


@runtime_checkable
class Reasoner(Protocol):
    """Picks an action for a turn and writes free text (summaries, judgements)."""

    name: str
    """Short identifier for logs, spans and scratchpads (``rule``, ``anthropic/<model>``)."""

    async def decide(self, request: ReasonerRequest) -> ReasonerResult:
        """Choose one of ``request.actions``; raises ``DecisionFormatError`` if none was chosen."""
        ...

    async def complete(
        self, system: str, prompt: str, *, max_tokens: int, temperature: float = 0.2
    ) -> str:
        """Answer ``prompt`` with free text of at most ``max_tokens`` tokens."""
        ...

    async def aclose(self) -> None:
        """Release connections; the reasoner is unusable afterwards."""
        ...
