"""Actions: what a step may do. The reasoner picks one by name; deterministic code runs it.

An action is a schema (offered to the reasoner as a tool) plus an executor. Parameters that come
from state rather than from the model (an auth token, the workflow id) are declared in
``inject``; the runtime fills or overrides them and logs each injection, so a model that forgot
or invented one cannot make the call go wrong.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from mesh.errors import MeshError
from mesh.llm import ActionSpec
from mesh.runtime.variables import ContextVariable

__all__ = [
    "Action",
    "ActionContext",
    "ActionError",
    "ActionOutcome",
    "ContextVariable",
    "CredentialExpired",
    "Executor",
    "Lookup",
    "RetryableActionError",
]


class ActionError(MeshError):
    """An action failed. ``retryable`` (class data) says whether the same call may succeed later."""

    retryable = False


class RetryableActionError(ActionError):
    """An action failed in a way that may pass on retry (HTTP 503, timeout, connection reset)."""

    retryable = True


class CredentialExpired(ActionError):
    """The outside service refused a credential as expired (HTTP 401 ``token_expired``).

    Nothing took effect. When the step's role declares a refresh path for the secret variables
    the action injects (``StepRunner(refreshers=...)``), the runtime obtains a fresh value and
    runs the call again in the same turn; otherwise it fails like any ``ActionError``.
    """


NewVariable = ContextVariable
"""The name ``ContextVariable`` had in roles written before it was the runtime's one variable type."""


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """What an action did, in data the runtime folds into the step's state."""

    summary: str
    """One line for the history (no secrets: the runtime redacts anyway)."""

    outputs: Mapping[str, Any] = field(default_factory=dict)
    """Merged into the step's outputs, which flow to dependent steps."""

    variables: tuple[ContextVariable, ...] = ()
    """Context variables discovered, visible to every later step that depends on this one (the
    runtime sets their ``origin`` and use; an action gives name, value and metadata)."""

    memory: Mapping[str, Any] = field(default_factory=dict)
    """Working memory of the step (``next_page: 3``), shown at the bottom of the next prompt."""

    done: bool = False
    """The step's goal is reached; it completes after this turn."""

    progress: bool = True
    """False when the turn changed nothing (counts towards spinning)."""


class ActionContext(Protocol):
    """What an executor may read: identity of the turn, state, and shared clients."""

    workflow_id: str
    step_id: str
    turn: int
    idempotency_key: str
    """Stable for (workflow, step, turn, action): a replayed turn sends the same key."""
    params: Mapping[str, Any]
    """The step's parameters from the workflow spec."""
    memory: Mapping[str, Any]
    """The step's working memory so far."""
    outputs: Mapping[str, Any]
    """The step's outputs so far."""
    inputs: Mapping[str, Mapping[str, Any]]
    """Outputs of every ancestor step (direct dependencies and theirs), by step id."""

    def variable(self, name: str, default: Any = None) -> Any:
        """A context variable's value (secrets included: executors need the token); a read counts as a use."""
        ...

    def resource(self, name: str) -> Any:
        """A shared client the agent process provides (``http``, ``settings``, ...)."""
        ...


Executor = Callable[[ActionContext, dict[str, Any]], Awaitable[ActionOutcome]]
"""Runs an action with validated, injected parameters."""

Lookup = Callable[[ActionContext, dict[str, Any]], Awaitable[ActionOutcome | None]]
"""Finds the effect of an earlier call with the same idempotency key (``ctx.idempotency_key``):
its outcome, or None when the outside service says no such call took effect. Raises
``ActionError`` when it cannot tell."""


@dataclass(frozen=True)
class Action:
    """An action of a role: its tool schema, its executor and its injected parameters."""

    spec: ActionSpec
    """Name, description and JSON schema of parameters, as the reasoner sees them."""

    run: Executor
    """The deterministic code that does it."""

    inject: Mapping[str, str] = field(default_factory=dict)
    """Parameter name -> state source: ``var:<name>``, ``param:<name>``, ``workflow_id``,
    ``step_id``, ``memory:<name>``. Injected values override what the model said."""

    side_effect: bool = False
    """Whether it changes the outside world (then it carries an idempotency key)."""

    at_most_once: bool = False
    """Its effect is not deduplicated by the outside service (an OAuth token call): the runtime
    records the call as in doubt in the checkpoint before sending it, and the owner that resumes
    the step after a crash settles it with ``lookup`` or reports it (``EffectInDoubt``)."""

    lookup: Lookup | None = None
    """For an ``at_most_once`` action: how to find the effect of an earlier call by its key."""

    @property
    def name(self) -> str:
        """The action's name."""
        return self.spec.name
