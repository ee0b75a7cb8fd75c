"""Deciding one turn: the reasoner calls, repaired and retried, until an executable decision.

``Decider.decide`` owns the loop ``StepRunner`` runs once per turn:

- before every reasoner call, the workflow budget is checked (fail closed: a call that would cross
  it is not made);
- a ``DecisionFormatError`` is answered with a repair hint naming the allowed actions, and so is a
  decision whose action is unknown or whose parameters (after injection) fail the action's schema;
  ``step.limits.max_repairs`` repairs at most;
- ``ReasonerUnavailable`` is retried after ``options.action_backoff``, ``step.limits.max_retries``
  times at most (these attempts count no repair);
- every call is metered (the provider's usage, else a tiktoken count) into the step's state and
  the turn's ``TurnMeter``.

It returns either a ``Decided`` (the decision, its injected parameters, the injection notes and
the repairs it took) or a ``NoDecision`` (the pause kind and reason). Pausing, checkpointing and
escalating stay with the caller, so their order against the store and the log is the turn loop's.
The observers see the same hooks as before: a reasoner span per call, ``reasoner_rejected`` on a
format error, ``reasoner_answered`` with the provider's usage.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mesh.context.tokens import default_counter
from mesh.llm import (
    ActionSpec,
    Decision,
    DecisionFormatError,
    Reasoner,
    ReasonerRequest,
    ReasonerUnavailable,
    Usage,
)
from mesh.runtime.actions import Action
from mesh.runtime.injection import inject_params
from mesh.runtime.observers import Observers, ReasonerAnswered, ReasonerCall, ReasonerRejected
from mesh.runtime.options import RuntimeOptions
from mesh.runtime.sanitize import one_line_error
from mesh.runtime.state import StepState
from mesh.runtime.validation import InvalidDecision, check_params
from protocols import EscalationKind, StepSpec, TokenUsage, WorkflowSpec

__all__ = ["Decided", "Decider", "NoDecision", "TurnMeter"]

log = logging.getLogger("mesh.runtime")


@dataclass(slots=True)
class TurnMeter:
    """Tokens and cost of one turn's reasoner calls, as they happen."""

    usage: TokenUsage = field(default_factory=TokenUsage)


@dataclass(frozen=True, slots=True)
class Decided:
    """An executable decision: its action exists and its parameters pass the schema."""

    decision: Decision
    params: dict[str, Any]
    """The decision's parameters with the action's injections applied."""
    notes: list[str]
    """What injection did (one line each, no secret value)."""
    repairs: int
    """Repair rounds it took (reasoner-unavailable retries not counted)."""


@dataclass(frozen=True, slots=True)
class NoDecision:
    """Why there is no executable decision: the step pauses with this kind and reason."""

    kind: EscalationKind
    reason: str


class Decider:
    """Asks the reasoner for a turn's decision, repairing and retrying (see the module doc)."""

    def __init__(
        self,
        reasoner: Reasoner,
        actions: Mapping[str, Action],
        observers: Observers,
        options: RuntimeOptions | None = None,
    ) -> None:
        """``actions`` are the role's (by name); ``observers`` the runner's (``Observers``)."""
        self.reasoner = reasoner
        self.actions = actions
        self.observers = observers
        self.options = options or RuntimeOptions()

    async def decide(
        self,
        spec: WorkflowSpec,
        step: StepSpec,
        state: StepState,
        built: Any,
        allowed: list[ActionSpec],
        temperature: float,
        meter: TurnMeter,
        *,
        spent_elsewhere: Callable[[], TokenUsage] | None = None,
    ) -> Decided | NoDecision:
        """The turn's executable decision for the prompt ``built``, or why there is none.

        ``spent_elsewhere`` gives what the workflow's other steps spent (the budget counts it).
        """
        hint: str | None = None
        names = [a.name for a in allowed]
        attempts = step.limits.max_repairs + 1
        unavailable = 0
        kind: EscalationKind = "invalid_decision"
        for attempt in range(attempts + step.limits.max_retries):
            over = self.over_budget(spec, state, built.tokens, spent_elsewhere)
            if over is not None:
                # Fail closed: no further reasoner call once the budget would be crossed.
                return NoDecision("budget", over)
            request = ReasonerRequest(
                system=built.system,
                prompt=built.prompt,
                actions=allowed,
                temperature=temperature,
                max_tokens=self.options.max_tokens,
                repair_hint=hint,
            )
            with self.observers.reasoner_scope(
                ReasonerCall(
                    state.workflow_id,
                    state.step_id,
                    model=str(getattr(self.reasoner, "model", self.reasoner.name)),
                    temperature=temperature,
                    max_tokens=self.options.max_tokens,
                    provider="anthropic"
                    if self.reasoner.name.startswith("anthropic")
                    else "mesh.rule",
                )
            ):
                try:
                    result = await self.reasoner.decide(request)
                except DecisionFormatError as exc:
                    self.meter(state, meter, request, exc.usage, model="", answer=exc.raw)
                    hint = f"Your previous answer was invalid: {one_line_error(exc)}. Call exactly one of: {', '.join(names)}."
                    await self.observers.reasoner_rejected(
                        ReasonerRejected(state.workflow_id, state.step_id, "DecisionFormatError")
                    )
                    if attempt + 1 - unavailable >= attempts:
                        break
                    continue
                except ReasonerUnavailable as exc:
                    unavailable += 1
                    if unavailable > step.limits.max_retries:
                        hint = one_line_error(exc)
                        kind = "reasoner_unavailable"
                        break
                    await asyncio.sleep(self.options.action_backoff.delay_s(unavailable))
                    continue
                self.meter(
                    state,
                    meter,
                    request,
                    result.usage,
                    model=result.model,
                    answer=json.dumps([result.decision.action, result.decision.params], default=str)
                    + result.decision.reasoning,
                )
                if result.usage is not None:
                    await self.observers.reasoner_answered(
                        ReasonerAnswered(
                            state.workflow_id,
                            state.step_id,
                            model=result.model or self.reasoner.name,
                            input_tokens=result.usage.input_tokens,
                            output_tokens=result.usage.output_tokens,
                        )
                    )
            decision = result.decision
            try:
                if decision.action not in self.actions:
                    check_params(decision.action, {}, {}, names)
                action = self.actions[decision.action]
                params, notes = inject_params(
                    action.name, decision.params, action.inject, state, step.params
                )
                check_params(action.name, params, action.spec.params_schema, names)
            except InvalidDecision as exc:
                hint = f"Your previous decision was invalid: {exc}. Fix it and decide again."
                log.info(
                    "%s/%s: invalid decision, asking for a repair: %s",
                    state.workflow_id,
                    state.step_id,
                    exc,
                )
                if attempt + 1 - unavailable >= attempts:
                    break
                continue
            return Decided(decision, params, notes, attempt - unavailable)
        # Could not get an executable decision: the caller pauses and asks a human.
        if kind == "reasoner_unavailable":
            return NoDecision(kind, f"reasoner unavailable after {unavailable} attempt(s): {hint}")
        return NoDecision(kind, f"no valid decision after {attempts} attempt(s): {hint}")

    def meter(
        self,
        state: StepState,
        meter: TurnMeter,
        request: ReasonerRequest,
        usage: Usage | None,
        *,
        model: str,
        answer: str,
    ) -> None:
        """Count one reasoner call: the provider's usage, else our tiktoken count of what went each way."""
        if usage is not None:
            tokens_in, tokens_out = usage.input_tokens, usage.output_tokens
        else:
            counter = default_counter()
            sent = "\n\n".join(
                [
                    request.system,
                    request.prompt,
                    request.repair_hint or "",
                    json.dumps([a.model_dump() for a in request.actions], default=str),
                ]
            )
            tokens_in, tokens_out = counter.count(sent), counter.count(answer)
        name = model or str(getattr(self.reasoner, "model", "") or self.reasoner.name)
        used = TokenUsage(
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            calls=1,
            cost_usd=self.options.prices.cost_usd(name, tokens_in, tokens_out),
        )
        meter.usage = meter.usage + used
        state.input_tokens += used.input_tokens
        state.output_tokens += used.output_tokens
        state.cost_usd = round(state.cost_usd + used.cost_usd, 9)
        state.calls += 1

    def over_budget(
        self,
        spec: WorkflowSpec,
        state: StepState,
        next_input_tokens: int,
        spent_elsewhere: Callable[[], TokenUsage] | None = None,
    ) -> str | None:
        """Why the next reasoner call would cross the workflow's budget, or None."""
        budget = spec.budget
        if budget is None:
            return None
        used = state.usage() + (spent_elsewhere() if spent_elsewhere is not None else TokenUsage())
        if budget.max_tokens is not None:
            limit = state.budget_floor_tokens + budget.max_tokens
            if used.tokens + next_input_tokens > limit:
                return (
                    f"budget: the workflow used {used.tokens} of {limit} tokens; "
                    f"the next call (~{next_input_tokens} input tokens) would cross it"
                )
        if budget.max_cost_usd is not None:
            name = str(getattr(self.reasoner, "model", "") or self.reasoner.name)
            estimate = self.options.prices.cost_usd(name, next_input_tokens, 0)
            cost_limit = state.budget_floor_cost_usd + budget.max_cost_usd
            if used.cost_usd + estimate > cost_limit:
                return (
                    f"budget: the workflow spent ${used.cost_usd:.4f} of ${cost_limit:.4f}; "
                    f"the next call (~${estimate:.4f}) would cross it"
                )
        return None
