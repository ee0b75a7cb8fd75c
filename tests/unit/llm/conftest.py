"""Fixtures of the reasoner tests: a fake Messages API and reasoners pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from llm_helpers import FAST_BACKOFF, TEST_KEY

from mesh.llm import AnthropicReasoner, RetryPolicy
from mesh.testing import FakeAnthropicServer


@pytest.fixture
def fake() -> Iterator[FakeAnthropicServer]:
    """A fake Messages API that requires ``TEST_KEY``."""
    with FakeAnthropicServer(api_key=TEST_KEY) as srv:
        yield srv


@pytest.fixture
async def make_reasoner(
    fake: FakeAnthropicServer,
) -> AsyncIterator[Callable[..., AnthropicReasoner]]:
    """Build AnthropicReasoners against ``fake`` (fast retries by default); closes them after."""
    made: list[AnthropicReasoner] = []

    def build(**overrides: Any) -> AnthropicReasoner:
        options: dict[str, Any] = {
            "api_key": TEST_KEY,
            "base_url": fake.base_url,
            "timeout_s": 5.0,
            "sdk_max_retries": 0,
            "retry": RetryPolicy(max_attempts=1, backoff=FAST_BACKOFF),
        }
        options.update(overrides)
        reasoner = AnthropicReasoner(**options)
        made.append(reasoner)
        return reasoner

    yield build
    for reasoner in made:
        await reasoner.aclose()
