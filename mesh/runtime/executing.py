"""Executing one action call: the turn's timeout, retries of retryable failures, renewal of an
expired credential, and the tool hooks the observers watch.

``ActionRunner.execute`` runs a decided (validated, injected) action once per attempt under the
step's ``turn_timeout_s``:

- an ``ActionError`` marked ``retryable``, or a timeout, is retried after ``options.action_backoff``,
  ``step.limits.max_retries`` times at most; any other failure ends the call;
- a ``CredentialExpired`` refusal of an action that injects a variable with a refresh path (and
  is not ``at_most_once``: nothing took effect, but an at-most-once call is never made twice) is
  renewed once per call: the caller's ``renew`` gets fresh values (``StepRunner`` records that
  refresh as an at-most-once call of its own), the parameters are injected again and the call is
  made again, without counting a retry;
- every attempt is reported to the observers (a tool span per attempt, ``tool_attempt`` with
  ``ok``, ``retry`` or ``failed``).

Recording an at-most-once call in doubt (``effect_pending``, before the call) and folding the
outcome stay with the turn loop: this unit only makes the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from mesh.errors import MeshError
from mesh.runtime.actions import Action, ActionError, ActionOutcome, CredentialExpired
from mesh.runtime.injection import inject_params
from mesh.runtime.observers import Observers, ToolAttempt, ToolCall
from mesh.runtime.options import RuntimeOptions
from mesh.runtime.sanitize import one_line_error
from mesh.runtime.state import StepState
from mesh.runtime.variables import ContextVariable
from protocols import StepSpec

__all__ = ["ActionRunner", "Renew", "StepContext"]

Renew = Callable[[list[str]], Awaitable[bool]]
"""Get fresh values of these secret variables (into the step's state); True if any is fresh."""


@dataclass(slots=True)
class StepContext:
    """What an action (or its lookup) sees of the step: the ``ActionContext`` it is given."""

    workflow_id: str
    step_id: str
    turn: int
    idempotency_key: str
    params: Mapping[str, Any]
    memory: Mapping[str, Any]
    outputs: Mapping[str, Any]
    inputs: Mapping[str, Mapping[str, Any]]
    _variables: Mapping[str, ContextVariable]
    _resources: Mapping[str, Any]

    def variable(self, name: str, default: Any = None) -> Any:
        entry = self._variables.get(name)
        if entry is None:
            return default
        entry.last_used_turn = max(entry.last_used_turn, self.turn)  # a use (mesh.runtime.decay)
        return entry.value

    def resource(self, name: str) -> Any:
        try:
            return self._resources[name]
        except KeyError:
            raise LookupError(f"agent provides no resource {name!r}") from None


class ActionRunner:
    """Makes action calls for a role's steps (see the module doc)."""

    def __init__(
        self,
        observers: Observers,
        options: RuntimeOptions | None = None,
        *,
        resources: Mapping[str, Any] | None = None,
        refreshers: Collection[str] = (),
    ) -> None:
        """``observers`` are the runner's; ``resources`` what actions may ask for by name;
        ``refreshers`` the secret variables that have a refresh path."""
        self.observers = observers
        self.options = options or RuntimeOptions()
        self.resources = resources if resources is not None else {}
        self.refreshers = refreshers

    def refreshable(self, action: Action) -> list[str]:
        """The variables ``action`` injects that have a declared refresh path."""
        names: list[str] = []
        for source in action.inject.values():
            kind, _, rest = source.partition(":")
            name = rest.partition("|")[0]
            if kind == "var" and name in self.refreshers and name not in names:
                names.append(name)
        return names

    def context(self, step: StepSpec, state: StepState, key: str, turn: int) -> StepContext:
        """The context of a call (or a lookup) under the idempotency key ``key``."""
        return StepContext(
            workflow_id=state.workflow_id,
            step_id=state.step_id,
            turn=turn,
            idempotency_key=key,
            params=step.params,
            memory=state.memory,
            outputs=state.outputs,
            inputs=state.inputs,
            _variables=state.variables,
            _resources=self.resources,
        )

    async def execute(
        self,
        step: StepSpec,
        state: StepState,
        action: Action,
        params: dict[str, Any],
        key: str,
        turn: int,
        *,
        renew: Renew | None = None,
    ) -> tuple[ActionOutcome | None, str | None, int]:
        """Call ``action``: (its outcome, None, retries) or (None, the error's line, retries).

        ``params`` is updated in place when a renewed credential is injected again.
        """
        ctx = self.context(step, state, key, turn)
        retries = 0
        renewed = False
        while True:
            with self.observers.tool_scope(
                ToolCall(state.workflow_id, state.step_id, action.name, key)
            ):
                try:
                    async with asyncio.timeout(step.limits.turn_timeout_s):
                        outcome = await action.run(ctx, params)
                except (ActionError, TimeoutError, MeshError) as exc:
                    names = self.refreshable(action)
                    if (
                        isinstance(exc, CredentialExpired)
                        and names
                        and renew is not None
                        and not renewed
                        and not action.at_most_once
                    ):
                        # Refused as expired before its expiry time (in flight, or clocks differ):
                        # nothing took effect, so get a fresh credential and make the call again.
                        renewed = True
                        await self._attempt(state, action, "retry", one_line_error(exc))
                        if await renew(names):
                            params.update(
                                inject_params(
                                    action.name, params, action.inject, state, step.params
                                )[0]
                            )
                            continue
                    retryable = bool(getattr(exc, "retryable", False)) or isinstance(
                        exc, TimeoutError
                    )
                    await self._attempt(
                        state, action, "retry" if retryable else "failed", one_line_error(exc)
                    )
                    if retryable and retries < step.limits.max_retries:
                        retries += 1
                        await asyncio.sleep(self.options.action_backoff.delay_s(retries))
                        continue
                    return None, one_line_error(exc), retries
                await self._attempt(state, action, "ok", outcome.summary)
                return outcome, None, retries

    async def _attempt(self, state: StepState, action: Action, outcome: str, detail: str) -> None:
        await self.observers.tool_attempt(
            ToolAttempt(state.workflow_id, state.step_id, action.name, outcome, detail)
        )
