"""A deterministic reasoner: ordered rules, then a policy; no model, no network.

It is the default when no API key is configured and the reasoner of unit tests. Like
pydantic-ai's ``TestModel`` it records every request it was asked, so tests can assert on the
prompts the runtime built.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mesh.llm._text import extractive_summary
from mesh.llm.decision import ActionSpec, Decision, ReasonerRequest, ReasonerResult
from mesh.llm.errors import DecisionFormatError

__all__ = [
    "CompletionCall",
    "FirstFillablePolicy",
    "Policy",
    "Rule",
    "RuleReasoner",
    "match_rule",
    "prompt_facts",
]

Rule = Callable[[ReasonerRequest], Decision | None]
"""Returns a decision when it applies to the request, ``None`` to let the next rule try."""

Policy = Callable[[ReasonerRequest], Decision]
"""Always decides; consulted when no rule applied."""

_FACT_LINE = re.compile(r"^\s*[-*]?\s*([A-Za-z_][\w.-]*)\s*[:=]\s*(\S.*?)\s*$", re.MULTILINE)
_CHARS_PER_TOKEN = 4
"""Rough size of a token, used to turn ``max_tokens`` into a character budget."""


def prompt_facts(prompt: str) -> dict[str, str]:
    """``name: value`` and ``name = value`` lines of a prompt; later lines win (the bottom is newest)."""
    return {match.group(1): match.group(2) for match in _FACT_LINE.finditer(prompt)}


def _coerce(value: Any, schema: Mapping[str, Any]) -> Any:
    """Turn a string fact into the schema's scalar type when it parses; otherwise keep it."""
    if not isinstance(value, str):
        return value
    kind = schema.get("type")
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
    except ValueError:
        return value
    if kind == "boolean" and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


class FirstFillablePolicy:
    """Picks the first allowed action whose required parameters are all known.

    A parameter is known when it is in ``facts`` (given at construction) or appears as a
    ``name: value`` line in the prompt; ``facts`` win. If no action can be filled completely,
    the first action is chosen with the parameters that are known: the runtime injects the
    rest from state, or its validation says what is missing.
    """

    def __init__(self, facts: Mapping[str, Any] | None = None) -> None:
        self.facts = dict(facts or {})

    def __call__(self, request: ReasonerRequest) -> Decision:
        """Decide for ``request``."""
        known = {**prompt_facts(request.prompt), **self.facts}
        for action in request.actions:
            params, missing = self._fill(action, known)
            if not missing:
                return Decision(
                    action=action.name,
                    params=params,
                    reasoning=f"rule: first action whose required parameters are known ({action.name})",
                )
        first = request.actions[0]
        params, missing = self._fill(first, known)
        return Decision(
            action=first.name,
            params=params,
            reasoning=f"rule: no action fully fillable; chose {first.name}, missing {sorted(missing)}",
        )

    @staticmethod
    def _fill(action: ActionSpec, known: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
        properties: dict[str, Any] = action.params_schema.get("properties") or {}
        required = set(action.params_schema.get("required") or [])
        params = {
            name: _coerce(known[name], properties.get(name) or {})
            for name in properties
            if name in known
        }
        return params, required - params.keys()


def match_rule(pattern: str, action: str, params: Mapping[str, Any] | None = None) -> Rule:
    """A rule choosing ``action`` when ``pattern`` (a regex) occurs in the prompt and it is allowed.

    Named groups of the match are added to ``params`` (the fixed ``params`` win).
    """
    compiled = re.compile(pattern)

    def rule(request: ReasonerRequest) -> Decision | None:
        match = compiled.search(request.prompt)
        if match is None or action not in request.action_names():
            return None
        found = {k: v for k, v in match.groupdict().items() if v is not None}
        return Decision(
            action=action,
            params={**found, **(params or {})},
            reasoning=f"rule: prompt matched {pattern!r}",
        )

    return rule


@dataclass(frozen=True)
class CompletionCall:
    """One recorded ``complete`` call of a ``RuleReasoner``."""

    system: str
    """System prompt as given."""

    prompt: str
    """Prompt as given."""

    max_tokens: int
    """Token bound as given."""

    temperature: float
    """Temperature as given."""


class RuleReasoner:
    """Deterministic reasoner: the first rule that applies decides, else the policy does."""

    KEPT = 100
    """How many recent requests ``requests`` and ``completions`` keep."""

    def __init__(
        self,
        rules: Sequence[Rule] = (),
        *,
        policy: Policy | None = None,
        facts: Mapping[str, Any] | None = None,
        name: str = "rule",
    ) -> None:
        self.rules = list(rules)
        self.policy: Policy = policy if policy is not None else FirstFillablePolicy(facts)
        self.name = name
        self.requests: deque[ReasonerRequest] = deque(maxlen=self.KEPT)
        """The last ``KEPT`` decision requests, in order (for tests and debugging; an agent that
        decides with rules for weeks must not keep every prompt it ever built)."""
        self.completions: deque[CompletionCall] = deque(maxlen=self.KEPT)
        """The last ``KEPT`` free-text requests, in order."""

    def __repr__(self) -> str:
        return f"RuleReasoner(name={self.name!r}, rules={len(self.rules)})"

    async def decide(self, request: ReasonerRequest) -> ReasonerResult:
        """Apply the rules in order, then the policy; the action must be one of the allowed."""
        self.requests.append(request)
        decision = next((d for rule in self.rules if (d := rule(request)) is not None), None)
        if decision is None:
            decision = self.policy(request)
        raw = json.dumps(decision.model_dump(), sort_keys=True, default=str)
        if decision.action not in request.action_names():
            raise DecisionFormatError(
                f"unknown action {decision.action!r}; call one of: {', '.join(request.action_names())}",
                raw=raw,
            )
        return ReasonerResult(decision=decision, usage=None, model=self.name, raw=raw)

    async def complete(
        self, system: str, prompt: str, *, max_tokens: int, temperature: float = 0.2
    ) -> str:
        """Extractive summary: the leading sentences of ``prompt`` within ``max_tokens * 4`` characters."""
        self.completions.append(CompletionCall(system, prompt, max_tokens, temperature))
        return extractive_summary(prompt, max_chars=max_tokens * _CHARS_PER_TOKEN)

    async def aclose(self) -> None:
        """Nothing to release."""
