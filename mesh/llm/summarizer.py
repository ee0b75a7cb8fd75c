"""Adapter from a Reasoner to the context engine's ``Summarizer`` protocol."""

from __future__ import annotations

from mesh.llm.reasoner import Reasoner

__all__ = ["SUMMARY_SYSTEM_PROMPT", "ReasonerSummarizer"]

SUMMARY_SYSTEM_PROMPT = (
    "You compress an agent's working history. Keep every identifier, number, decision, error "
    "and open question; drop chatter. Write plain sentences, no preamble."
)
"""Default instructions for compression summaries."""


class ReasonerSummarizer:
    """Summarizes text with a reasoner's ``complete`` (``summarize(text, *, max_tokens) -> str``)."""

    def __init__(
        self,
        reasoner: Reasoner,
        *,
        system: str = SUMMARY_SYSTEM_PROMPT,
        temperature: float = 0.0,
    ) -> None:
        self.reasoner = reasoner
        self.system = system
        self.temperature = temperature

    async def summarize(self, text: str, *, max_tokens: int) -> str:
        """A summary of ``text`` of at most ``max_tokens`` tokens (as far as the model obeys)."""
        # The instructions go in the system prompt so the prompt is exactly the text: an
        # extractive reasoner then summarizes the text, not the instructions.
        system = f"{self.system} Use at most {max_tokens} tokens."
        return await self.reasoner.complete(
            system, text, max_tokens=max_tokens, temperature=self.temperature
        )
