"""Choose the reasoner from the environment: Anthropic when a key is set, else the rule reasoner."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mesh.llm.anthropic_reasoner import AnthropicReasoner
from mesh.llm.rate_limit import RateLimiter
from mesh.llm.reasoner import Reasoner, UsageCallback
from mesh.llm.rule_reasoner import RuleReasoner
from mesh.llm.settings import ReasonerSettings

__all__ = ["make_reasoner"]


def make_reasoner(
    settings: ReasonerSettings | None = None,
    *,
    on_usage: UsageCallback | None = None,
    facts: Mapping[str, Any] | None = None,
    rate_limiter: RateLimiter | None = None,
) -> Reasoner:
    """``AnthropicReasoner`` if an API key is configured, else a ``RuleReasoner`` (given ``facts``).

    ``rate_limiter`` paces the Anthropic reasoner's calls (the rule reasoner calls no provider).
    """
    settings = settings if settings is not None else ReasonerSettings()
    if settings.api_key is not None and settings.api_key.get_secret_value():
        return AnthropicReasoner.from_settings(settings, on_usage=on_usage, rate_limiter=rate_limiter)
    return RuleReasoner(facts=facts)
