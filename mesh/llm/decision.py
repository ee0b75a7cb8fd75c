"""Data exchanged with a reasoner: the actions it may pick, its request and its decision."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ActionSpec", "Decision", "ReasonerRequest", "ReasonerResult", "Usage"]

ACTION_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
"""Action names double as tool names, so they follow the providers' tool-name rule."""


class ActionSpec(BaseModel):
    """One action a step allows, offered to the model as a tool."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=ACTION_NAME_PATTERN)
    """Action (and tool) name: letters, digits, ``_`` and ``-``, at most 64 characters."""

    description: str
    """What the action does, written for the model."""

    params_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    """JSON schema of the action's parameters (an object schema)."""


class Decision(BaseModel):
    """What the reasoner chose: an action name and its parameters, not yet validated."""

    action: str
    """Name of the chosen action."""

    params: dict[str, Any] = Field(default_factory=dict)
    """Parameters as the model gave them; the runtime validates and completes them."""

    reasoning: str = ""
    """Free text the model gave alongside the decision, for the scratchpad."""


class ReasonerRequest(BaseModel):
    """One decision to make: prompt, allowed actions and sampling settings."""

    model_config = ConfigDict(frozen=True)

    system: str
    """System prompt (mission and rules)."""

    prompt: str
    """The assembled priority-stack prompt, task at the bottom."""

    actions: list[ActionSpec] = Field(min_length=1)
    """The allowed actions; the decision must name one of them."""

    temperature: float = Field(ge=0.0, le=1.0)
    """Sampling temperature, chosen by the turn's phase."""

    max_tokens: int = Field(default=1024, ge=1)
    """Upper bound on the tokens the model may produce."""

    repair_hint: str | None = None
    """The previous decision's validation error, when the runtime asks for a repair."""

    @model_validator(mode="after")
    def _unique_action_names(self) -> ReasonerRequest:
        names = [action.name for action in self.actions]
        if len(set(names)) != len(names):
            raise ValueError(f"action names must be unique, got {names}")
        return self

    def action_names(self) -> list[str]:
        """Names of the allowed actions, in order."""
        return [action.name for action in self.actions]


class Usage(BaseModel):
    """Tokens the provider reported for one call."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = Field(ge=0)
    """Prompt tokens as counted by the provider, cached ones included: the size of the prompt,
    which is what token-count calibration needs (the API reports cache reads and writes apart)."""

    output_tokens: int = Field(ge=0)
    """Generated tokens as counted by the provider."""

    cached_input_tokens: int = Field(default=0, ge=0)
    """Of ``input_tokens``, those read from the provider's prompt cache (``cache_read_input_tokens``;
    llama-server reports its KV-cache hits there, so a repeated prompt costs a few new tokens)."""


class ReasonerResult(BaseModel):
    """A decision plus what it cost and what the model literally said."""

    decision: Decision
    """The chosen action and parameters."""

    usage: Usage | None
    """Provider-reported tokens; ``None`` when no model was called (rule reasoner)."""

    model: str
    """Model that made the decision (``rule`` for the rule reasoner)."""

    raw: str
    """What the model said (text and tool call), for scratchpads."""
