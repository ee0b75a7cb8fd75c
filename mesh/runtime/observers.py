"""Observers of the turn loop: KPIs, scratchpads (and anything else that watches) see each step
from outside the loop, the way faststream's telemetry middleware sees each message.

The turn loop (``StepRunner``) reports what happened as small frozen records (a step started on
this owner, a prompt was built, the reasoner answered, a checkpoint was written, a turn ended, an
in-doubt effect was settled); each observer receives the ones it overrides. Adding a sink (a
metrics backend, a log, a test probe) is one class and one ``observers=[...]`` argument, and the
loop's code does not change.

Ordering and concurrency: hooks are called synchronously on the step's task, in the order the
events happen within one step, and for each event in the order the observers were given. Steps
of one runner run concurrently, so an observer that keeps per-step state keys it by
``(workflow_id, step_id)``. A hook must not block (no I/O that waits on the network): it runs
inside the turn. A hook that raises is logged and skipped; telemetry never fails a turn.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mesh.telemetry import Kpis, ScratchpadWriter
from mesh.telemetry import TurnRecord as ScratchTurn

__all__ = [
    "CheckpointWritten",
    "EffectSettled",
    "KpiObserver",
    "Observers",
    "PromptBuilt",
    "ReasonerAnswered",
    "ScratchpadObserver",
    "StepOpened",
    "TurnEnded",
    "TurnObserver",
]

log = logging.getLogger("mesh.runtime.observers")


@dataclass(frozen=True, slots=True)
class StepOpened:
    """This agent took a step and is about to run its turns."""

    workflow_id: str
    step_id: str
    role: str
    agent_id: str
    epoch: int
    """The owner epoch it claimed."""
    mission: str = ""
    resumed_from_turn: int = 0
    """Last checkpointed turn it continues from (0: a fresh step)."""


@dataclass(frozen=True, slots=True)
class PromptBuilt:
    """A turn's prompt was built."""

    workflow_id: str
    step_id: str
    turn: int
    phase: str
    """``planning``, ``execution`` or ``recovery``."""
    tokens: int
    budget: int
    """Usable tokens of the prompt budget."""


@dataclass(frozen=True, slots=True)
class ReasonerAnswered:
    """The reasoner answered with provider-reported usage."""

    workflow_id: str
    step_id: str
    model: str
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class CheckpointWritten:
    """A checkpoint of the step was acknowledged by the store."""

    workflow_id: str
    step_id: str
    turn: int
    duration_ms: float
    size_bytes: int


@dataclass(frozen=True, slots=True)
class TurnEnded:
    """A turn was folded and checkpointed."""

    workflow_id: str
    step_id: str
    turn: int
    action: str
    outcome: str
    """``ok``, ``failed`` or ``spinning`` (the step paused for a human)."""
    summary: str
    """One sanitized line."""
    latency_ms: float
    phase: str
    model: str
    params: Mapping[str, Any] = field(default_factory=dict)
    """Parameters as executed, secrets masked."""
    reasoning: str = ""
    injected: tuple[str, ...] = ()
    """Names of parameters filled or corrected from state."""
    escalation: str = ""
    """Why the step paused, when ``outcome`` is ``spinning``."""


@dataclass(frozen=True, slots=True)
class EffectSettled:
    """A call a previous owner left in doubt was settled (``reconciled``, ``absent``, ``repeated``)."""

    workflow_id: str
    step_id: str
    turn: int
    action: str
    resolution: str


class TurnObserver:
    """Base of the turn loop's observers: every hook does nothing; override the ones you need."""

    def step_opened(self, event: StepOpened) -> None:
        """This agent took a step."""

    def prompt_built(self, event: PromptBuilt) -> None:
        """A turn's prompt was built."""

    def reasoner_answered(self, event: ReasonerAnswered) -> None:
        """The reasoner answered (with usage)."""

    def checkpoint_written(self, event: CheckpointWritten) -> None:
        """A checkpoint was acknowledged."""

    def turn_ended(self, event: TurnEnded) -> None:
        """A turn was folded and checkpointed."""

    def effect_settled(self, event: EffectSettled) -> None:
        """An in-doubt call was settled."""


class Observers(TurnObserver):
    """Several observers as one: each hook calls them in order, logging (never raising) failures."""

    def __init__(self, observers: Iterable[TurnObserver] = ()) -> None:
        """Dispatch to ``observers``, in this order."""
        self.observers = list(observers)

    def _each(self, hook: str, event: object) -> None:
        for observer in self.observers:
            try:
                getattr(observer, hook)(event)
            except Exception:  # telemetry never fails a turn
                log.warning(
                    "observer %s failed in %s", type(observer).__name__, hook, exc_info=True
                )

    def step_opened(self, event: StepOpened) -> None:
        """Dispatch ``step_opened``."""
        self._each("step_opened", event)

    def prompt_built(self, event: PromptBuilt) -> None:
        """Dispatch ``prompt_built``."""
        self._each("prompt_built", event)

    def reasoner_answered(self, event: ReasonerAnswered) -> None:
        """Dispatch ``reasoner_answered``."""
        self._each("reasoner_answered", event)

    def checkpoint_written(self, event: CheckpointWritten) -> None:
        """Dispatch ``checkpoint_written``."""
        self._each("checkpoint_written", event)

    def turn_ended(self, event: TurnEnded) -> None:
        """Dispatch ``turn_ended``."""
        self._each("turn_ended", event)

    def effect_settled(self, event: EffectSettled) -> None:
        """Dispatch ``effect_settled``."""
        self._each("effect_settled", event)


class KpiObserver(TurnObserver):
    """Records the runtime's KPIs (``mesh.telemetry.Kpis``) from the turn loop's events."""

    def __init__(self, kpis: Kpis) -> None:
        """Record into ``kpis``."""
        self.kpis = kpis

    def step_opened(self, event: StepOpened) -> None:
        """A step taken: a recovery when it resumes from a checkpoint."""
        self.kpis.record_step_started(resumed=event.resumed_from_turn > 0)

    def prompt_built(self, event: PromptBuilt) -> None:
        """Context utilization of the turn."""
        self.kpis.record_context_utilization(event.tokens, event.budget, phase=event.phase)

    def reasoner_answered(self, event: ReasonerAnswered) -> None:
        """Provider-reported token usage."""
        self.kpis.record_token_usage(
            model=event.model, input_tokens=event.input_tokens, output_tokens=event.output_tokens
        )

    def checkpoint_written(self, event: CheckpointWritten) -> None:
        """Checkpoint write time and state size."""
        self.kpis.record_checkpoint_write(event.duration_ms, size_bytes=event.size_bytes)

    def turn_ended(self, event: TurnEnded) -> None:
        """Turn latency, and spinning when the turn paused the step."""
        if event.outcome == "spinning":
            self.kpis.record_spinning(reason=event.escalation.split(":")[0])
        self.kpis.record_turn_latency(event.latency_ms, outcome=event.outcome)

    def effect_settled(self, event: EffectSettled) -> None:
        """In-doubt effects, by resolution (when the KPIs count them)."""
        record = getattr(self.kpis, "record_effect_in_doubt", None)
        if record is not None:
            record(resolution=event.resolution)


class ScratchpadObserver(TurnObserver):
    """Writes each step's markdown scratchpad (``mesh.telemetry.ScratchpadWriter``)."""

    def __init__(self, scratchpad: ScratchpadWriter) -> None:
        """Write through ``scratchpad``."""
        self.scratchpad = scratchpad

    def step_opened(self, event: StepOpened) -> None:
        """The header, or a "resumed" note."""
        self.scratchpad.open_step(
            event.workflow_id,
            event.step_id,
            role=event.role,
            agent_id=event.agent_id,
            epoch=event.epoch,
            mission=event.mission,
            resumed_from_turn=event.resumed_from_turn,
        )

    def turn_ended(self, event: TurnEnded) -> None:
        """One turn block: decision, reasoning, outcome."""
        self.scratchpad.append_turn(
            event.workflow_id,
            event.step_id,
            ScratchTurn(
                turn=event.turn,
                action=event.action,
                params=event.params,
                reasoning=event.reasoning,
                outcome=f"{event.outcome}: {event.summary}",
                latency_ms=event.latency_ms,
                phase=event.phase,
                model=event.model,
                injected=event.injected,
            ),
        )
