"""The reasoner layer: what picks a turn's action, behind one small Protocol.

``AnthropicReasoner`` talks to the Messages API through the official SDK (tool use for
decisions); ``RuleReasoner`` is deterministic and the default without an API key;
``make_reasoner`` chooses between them from the environment. Provider errors are translated
into ``mesh.llm`` errors here and never leak further. The fake Messages API for tests and demos
is tooling and lives in ``mesh.testing`` (``FakeAnthropicServer``); the evaluations that measure
reasoners are in ``mesh.evals``.
"""

from mesh.llm.backoff import ExponentialBackoff, RetryPolicy
from mesh.llm.decision import ActionSpec, Decision, ReasonerRequest, ReasonerResult, Usage
from mesh.llm.errors import (
    DecisionFormatError,
    ReasonerAuthError,
    ReasonerError,
    ReasonerRequestError,
    ReasonerUnavailable,
)
from mesh.llm.pricing import DEFAULT_PRICES, ModelPrice, PriceTable
from mesh.llm.rate_limit import InMemoryRateLimiter, RateLimiter, RateTicket, RedisRateLimiter
from mesh.llm.reasoner import Reasoner, UsageCallback
from mesh.llm.rule_reasoner import (
    CompletionCall,
    FirstFillablePolicy,
    Policy,
    Rule,
    RuleReasoner,
    match_rule,
    prompt_facts,
)
from mesh.llm.settings import DEFAULT_MODEL, ReasonerSettings
from mesh.llm.summarizer import ReasonerSummarizer

__all__ = [  # grouped by role, not alphabetically
    # the seam
    "Reasoner",
    "UsageCallback",
    # data exchanged with a reasoner
    "ActionSpec",
    "Decision",
    "ReasonerRequest",
    "ReasonerResult",
    "Usage",
    # implementations and how to choose one
    "AnthropicReasoner",
    "RuleReasoner",
    "make_reasoner",
    "ReasonerSettings",
    "DEFAULT_MODEL",
    # rule reasoner building blocks
    "Rule",
    "Policy",
    "FirstFillablePolicy",
    "match_rule",
    "prompt_facts",
    "CompletionCall",
    # one rate limit for every agent of a mesh (a store seam: the same objects as mesh.store's)
    "RateLimiter",
    "RedisRateLimiter",
    "InMemoryRateLimiter",
    "RateTicket",
    # cost estimates
    "PriceTable",
    "ModelPrice",
    "DEFAULT_PRICES",
    # retry policy on top of the SDK's
    "RetryPolicy",
    "ExponentialBackoff",
    # adapters
    "ReasonerSummarizer",
    # errors, by how the caller reacts
    "ReasonerError",
    "ReasonerUnavailable",
    "DecisionFormatError",
    "ReasonerRequestError",
    "ReasonerAuthError",
]


def __getattr__(name: str) -> object:
    # The anthropic SDK takes about a second to import; load it only when it is used, so
    # `mesh dev` and the rule reasoner start fast.
    if name == "AnthropicReasoner":
        from mesh.llm.anthropic_reasoner import AnthropicReasoner

        return AnthropicReasoner
    if name == "make_reasoner":
        from mesh.llm.factory import make_reasoner

        return make_reasoner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
