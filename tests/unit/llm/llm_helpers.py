"""Shared constants and builders of the reasoner tests (imported by the test modules)."""

from __future__ import annotations

from typing import Any

from mesh.llm import ActionSpec, ExponentialBackoff, ReasonerRequest

TEST_KEY = "sk-ant-test-SECRET-7f3a9c"
"""A recognisable key so tests can prove it never leaks."""

FAST_BACKOFF = ExponentialBackoff(base_s=0.001, cap_s=0.005)

FETCH = ActionSpec(
    name="fetch_record",
    description="Fetch one record by id.",
    params_schema={
        "type": "object",
        "properties": {"record_id": {"type": "integer"}, "verbose": {"type": "boolean"}},
        "required": ["record_id"],
    },
)
REPORT = ActionSpec(
    name="write_report",
    description="Write the final report.",
    params_schema={
        "type": "object",
        "properties": {"title": {"type": "string"}},
        "required": ["title"],
    },
)


def decision_request(**overrides: Any) -> ReasonerRequest:
    """A small valid decision request."""
    fields: dict[str, Any] = {
        "system": "You are the fetch agent. Follow the rules.",
        "prompt": "Task: fetch record 42.",
        "actions": [FETCH, REPORT],
        "temperature": 0.2,
    }
    fields.update(overrides)
    return ReasonerRequest(**fields)
