"""Writing a role: the public authoring API (the README's "Writing a role" section walks through it).

A role is a named set of actions; an agent process serves one role. Each ``Action`` is a tool
schema the reasoner sees (``ActionSpec``) plus a deterministic async executor
``(ctx: ActionContext, params) -> ActionOutcome``. Parameters that come from state rather than from
the model are declared in ``Action.inject`` with an injection source (``from_var("auth_token")``,
``from_param("page_size")``, ``from_memory("next_page", 1)``, ``WORKFLOW_ID``, ``STEP_ID``); the
runtime fills or overrides them before the executor runs.

A roles module exposes ``ROLES``, a mapping of role name to ``Role`` (``roles_by_name`` builds one),
and is served with ``mesh agent run --role NAME --roles-module your.module``.

Everything a role author needs is importable from here; ``mesh.runtime`` and ``mesh.llm`` keep
the same objects for the runtime's own use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mesh.llm import ActionSpec, Decision, Policy, ReasonerRequest
from mesh.runtime.actions import (
    Action,
    ActionContext,
    ActionError,
    ActionOutcome,
    CredentialExpired,
    Executor,
    Lookup,
    NewVariable,  # noqa: F401  (the name of ContextVariable in roles written before it; not in __all__)
    RetryableActionError,
)
from mesh.runtime.variables import ContextVariable

__all__ = [
    # a role and its actions
    "Role",
    "Action",
    "ActionSpec",
    "Executor",
    "Lookup",
    "roles_by_name",
    "check_role",
    # what an executor reads and returns
    "ActionContext",
    "ActionOutcome",
    "ContextVariable",
    "ActionError",
    "RetryableActionError",
    "CredentialExpired",
    # injection sources for Action.inject
    "WORKFLOW_ID",
    "STEP_ID",
    "from_memory",
    "from_param",
    "from_var",
    # the rule policy (used when no LLM is configured)
    "Decision",
    "ReasonerRequest",
    "Policy",
    "first_action",
]

WORKFLOW_ID = "workflow_id"
"""Injection source: the id of the running workflow."""

STEP_ID = "step_id"
"""Injection source: the id of the running step."""


def _with_default(source: str, default: int | str | None) -> str:
    if default is None:
        return source
    text = str(default)
    if "|" in text:
        raise ValueError(f"an injection default cannot contain '|': {text!r}")
    return f"{source}|{text}"


def from_var(name: str, default: int | str | None = None) -> str:
    """Injection source ``var:<name>``: a context variable (discovered by an ancestor step, gossiped,
    or set in the spec's ``variables``); secrets included."""
    return _with_default(f"var:{name}", default)


def from_param(name: str, default: int | str | None = None) -> str:
    """Injection source ``param:<name>``: the step's ``params`` in the workflow spec."""
    return _with_default(f"param:{name}", default)


def from_memory(name: str, default: int | str | None = None) -> str:
    """Injection source ``memory:<name>``: the step's working memory (``ActionOutcome.memory``) so far.

    ``default`` is used until a turn has set it; defaults that look like integers are injected
    as ``int`` (``from_memory("next_page", 1)`` is the string ``"memory:next_page|1"``)."""
    return _with_default(f"memory:{name}", default)


def first_action(request: ReasonerRequest) -> Decision:
    """The default rule policy: the first allowed action, every parameter left to injection."""
    name = request.actions[0].name
    return Decision(action=name, params={}, reasoning=f"rule: always {name}")


@dataclass(frozen=True)
class Role:
    """A role: its actions, and the rule policy that decides when no LLM is configured.

    ``actions`` maps each action's name to it (``Role.of`` builds it from a list). ``rule`` defaults
    to ``first_action``: a one-action role needs no policy.
    """

    name: str
    """The role's name: agents serving it form the consumer group ``<prefix>.role.<name>``."""

    actions: Mapping[str, Action]
    """Action name -> action; the reasoner is offered all of them every turn."""

    rule: Policy | None = None
    """Rule policy; None: ``first_action``."""

    refresh: Mapping[str, Action] = field(default_factory=dict)
    """Secret variable -> the at-most-once action (with a lookup) that gets a fresh value when the
    one the step holds expired (its ``expires_at_ms`` passed, or an action raised
    ``CredentialExpired``); see the README's "Writing a role"."""

    @classmethod
    def of(cls, name: str, *actions: Action, rule: Policy | None = None,
           refresh: Mapping[str, Action] | None = None) -> Role:
        """A role from its actions (keyed by their names)."""
        return cls(name, {a.name: a for a in actions}, rule, dict(refresh or {}))

    def policy(self, request: ReasonerRequest) -> Decision:
        """Decide a turn with the rule policy (the agent's reasoner when no LLM is configured)."""
        if self.rule is not None:
            return self.rule(request)
        decision = first_action(request)
        return Decision(
            action=decision.action,
            params={},
            reasoning=f"rule: {self.name} always does {decision.action}",
        )


def roles_by_name(*roles: Role) -> Mapping[str, Role]:
    """The ``ROLES`` mapping of a roles module: each role by its name (duplicates are an error)."""
    out: dict[str, Role] = {}
    for role in roles:
        if role.name in out:
            raise ValueError(f"two roles named {role.name!r}")
        out[role.name] = role
    return out


def _check_injection_source(source: str) -> None:
    """Raise ``ValueError`` when ``source`` is not an injection source the runtime knows."""
    head = source.partition("|")[0]
    if head in (WORKFLOW_ID, STEP_ID):
        return
    kind, colon, name = head.partition(":")
    if not colon or kind not in ("var", "param", "memory") or not name:
        raise ValueError(
            f"unknown injection source {source!r} (var:, param:, memory:, workflow_id, step_id)"
        )


def check_role(role: Role) -> None:
    """Raise ``ValueError`` when an action's key differs from its name or an injection source is unknown."""
    for key, action in role.actions.items():
        if key != action.name:
            raise ValueError(f"role {role.name}: action {action.name!r} is registered as {key!r}")
        for param, source in action.inject.items():
            try:
                _check_injection_source(source)
            except ValueError as exc:
                raise ValueError(
                    f"role {role.name}, action {key}, parameter {param}: {exc}"
                ) from None
