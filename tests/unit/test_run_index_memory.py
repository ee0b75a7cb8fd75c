"""RunIndex contract on the in-memory index, and summary documents that round-trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.errors import StoreError
from mesh.store import InMemoryRunIndex, RunIndex, RunSummary, StepSummary
from tests.contracts.run_index_contract import IndexFactory, RunIndexContract


class TestInMemoryRunIndex(RunIndexContract):
    @pytest.fixture
    def index(self) -> RunIndex:
        return InMemoryRunIndex()

    @pytest.fixture
    def index_factory(self) -> IndexFactory:
        async def make() -> RunIndex:
            return InMemoryRunIndex()

        return make


_text = st.text(max_size=40)
_steps = st.builds(StepSummary, id=_text, role=_text, status=_text, owner=_text, epoch=st.integers(0, 2**40),
                   turns=st.integers(0, 10**6), resumes=st.integers(0, 100), last=_text)


@given(st.builds(RunSummary, workflow_id=_text, name=_text, status=_text, events=st.integers(0, 2**40),
                 created_ms=st.integers(0, 2**45), updated_ms=st.integers(0, 2**45), finished_ms=st.integers(0, 2**45),
                 trace_id=_text, submitted_by=_text, steps=st.lists(_steps, max_size=5).map(tuple)))
def test_summary_document_round_trips(summary: RunSummary) -> None:
    assert RunSummary.from_json(summary.to_json()) == summary


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_foreign_document_is_a_store_error(raw: bytes) -> None:
    try:
        RunSummary.from_json(raw)
    except StoreError:
        pass
