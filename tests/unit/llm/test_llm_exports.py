"""Pins the public surface of mesh.llm."""

from __future__ import annotations

import mesh.llm


def test_public_api_is_pinned() -> None:
    assert sorted(mesh.llm.__all__) == sorted(
        [
            "ActionSpec",
            "AnthropicReasoner",
            "CompletionCall",
            "DEFAULT_MODEL",
            "DEFAULT_PRICES",
            "ModelPrice",
            "PriceTable",
            "RateLimiter",
            "RateTicket",
            "RedisRateLimiter",
            "Decision",
            "DecisionFormatError",
            "ExponentialBackoff",
            "FirstFillablePolicy",
            "Policy",
            "Reasoner",
            "ReasonerAuthError",
            "ReasonerError",
            "ReasonerRequest",
            "ReasonerRequestError",
            "ReasonerResult",
            "ReasonerSettings",
            "ReasonerSummarizer",
            "ReasonerUnavailable",
            "RetryPolicy",
            "Rule",
            "RuleReasoner",
            "Usage",
            "UsageCallback",
            "make_reasoner",
            "match_rule",
            "prompt_facts",
        ]
    )
    assert len(set(mesh.llm.__all__)) == len(mesh.llm.__all__)
    for name in mesh.llm.__all__:
        assert getattr(mesh.llm, name) is not None


def test_errors_sit_in_the_mesh_hierarchy() -> None:
    from mesh.errors import MeshError, PermanentError, TransientError, UsageError

    assert issubclass(mesh.llm.ReasonerUnavailable, TransientError)
    assert issubclass(mesh.llm.DecisionFormatError, PermanentError)
    assert issubclass(mesh.llm.ReasonerRequestError, PermanentError)
    assert issubclass(mesh.llm.ReasonerAuthError, UsageError)
    assert issubclass(mesh.llm.ReasonerError, MeshError)
