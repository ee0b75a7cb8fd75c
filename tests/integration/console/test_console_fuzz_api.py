"""schemathesis against the console's own OpenAPI document, on the live console of the demo-like mesh.

Every generated request (valid and invalid parameters, unknown ids, the decision endpoint without
the token) must get an answer the document describes: no 5xx, documented status codes, bodies that
match the response schemas. The event stream is left out (it never ends).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.integration.console.scenario import Scenario

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    # schemathesis' own strategies draw from `random` (its problem, not the API's)
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]


def test_the_api_answers_as_its_openapi_document_says(scenario: Scenario) -> None:
    schema = schemathesis.openapi.from_url(f"{scenario.url}/api/openapi.json").exclude(
        path="/api/stream"
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(timeout=30)

        check()
