"""Options of the turn loop."""

from __future__ import annotations

from dataclasses import dataclass, field

from mesh.backoff import ExponentialBackoff
from mesh.llm import PriceTable

__all__ = ["PhaseTemperatures", "RuntimeOptions"]


@dataclass(frozen=True, slots=True)
class PhaseTemperatures:
    """Sampling temperature by turn phase."""

    planning: float = 0.7
    """First turn of a step (and first turn after a resume): explore the approach."""

    execution: float = 0.2
    """Turns that carry out a plan: be precise."""

    recovery: float = 0.5
    """The turn after a failure: try something different, but not wildly."""


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """How the turn loop behaves (per agent process)."""

    temperatures: PhaseTemperatures = field(default_factory=PhaseTemperatures)
    """Temperature per phase."""

    action_backoff: ExponentialBackoff = field(
        default_factory=lambda: ExponentialBackoff(base_s=0.2, cap_s=5.0, jitter=0.5)
    )
    """Delay between retries of a retryable action failure, in seconds."""

    max_tokens: int = 1024
    """Output tokens a decision may use."""

    context_window: int = 200_000
    """Model context window in tokens."""

    blob_copies: bool = True
    """Write a durable blob copy of every checkpoint (audit, cold restore)."""

    history_window: int = 20
    """Turn records a step's checkpoint keeps; older ones are archived to the blob store in
    segments of ``history_segment`` and summarized in the checkpoint (``mesh.runtime.history``)."""

    history_segment: int = 20
    """Turn records per archived blob."""

    decay_idle_turns: int = 10
    """Turns a variable may go unused (set, injected, read by an action) before its prompt block
    moves to the blob store; it comes back the turn after its next use (``mesh.runtime.decay``).
    0 turns decay off; it needs a blob store."""

    turn_delay_s: float = 0.0
    """Pause after each turn, in seconds (demos: makes a step long enough to kill mid-way)."""

    prices: PriceTable = field(default_factory=PriceTable)
    """Prices per model for the cost estimate of every reasoner call (``MESH_LLM_PRICES``)."""
