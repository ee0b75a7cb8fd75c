"""The RunIndex contract (subclass and provide ``index`` and ``index_factory``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.store import RunIndex, RunSummary, StepSummary

IndexFactory = Callable[[], Awaitable[RunIndex]]

_STATUSES = ("pending", "running", "paused", "succeeded", "failed")


def run(wf: str, *, events: int, status: str = "running", updated_ms: int = 1_000, name: str = "recon",
        steps: tuple[StepSummary, ...] = ()) -> RunSummary:
    return RunSummary(workflow_id=wf, name=name, status=status, events=events, created_ms=500,
                      updated_ms=updated_ms, trace_id="ab" * 16, submitted_by="cli", steps=steps)


class RunIndexContract:
    """Behaviour every RunIndex must show."""

    async def test_round_trip_and_unknown(self, index: RunIndex) -> None:
        steps = (StepSummary(id="a", role="fetch", status="running", owner="fetch-1", epoch=3, turns=7, resumes=1,
                             last="fetch_page: page 2 \u2713"),)
        summary = run("wf-1", events=4, steps=steps)
        assert await index.record(summary)
        assert await index.get("wf-1") == summary
        assert await index.get("wf-never") is None

    async def test_never_moves_back(self, index: RunIndex) -> None:
        assert await index.record(run("wf", events=5, status="succeeded"))
        assert not await index.record(run("wf", events=3, status="running"))  # a lagging agent
        assert not await index.record(run("wf", events=5, status="running"))
        got = await index.get("wf")
        assert got is not None and (got.events, got.status) == (5, "succeeded")
        assert await index.record(run("wf", events=6, status="failed"))
        got = await index.get("wf")
        assert got is not None and got.status == "failed"

    async def test_list_newest_first_with_filters(self, index: RunIndex) -> None:
        for i in range(12):
            status = "succeeded" if i % 3 == 0 else "running"
            await index.record(run(f"wf-{i:02d}", events=1, status=status, updated_ms=10_000 + i,
                                   name="billing" if i % 2 else "recon"))
        listed = await index.list(limit=100)
        assert [r.workflow_id for r in listed] == [f"wf-{i:02d}" for i in reversed(range(12))]
        assert [r.workflow_id for r in await index.list(limit=3)] == ["wf-11", "wf-10", "wf-09"]
        assert {r.workflow_id for r in await index.list(status="succeeded")} == {"wf-00", "wf-03", "wf-06", "wf-09"}
        assert all(r.name == "billing" for r in await index.list(name="bill"))
        assert len(await index.list(name="bill")) == 6
        assert [r.workflow_id for r in await index.list(updated_since_ms=10_010)] == ["wf-11", "wf-10"]
        assert [r.workflow_id for r in await index.list(status="succeeded", name="recon", limit=1)] == ["wf-06"]
        assert list(await index.list(limit=0)) == []
        # An update moves a run to the front.
        await index.record(run("wf-00", events=2, status="failed", updated_ms=20_000))
        assert (await index.list(limit=1))[0].workflow_id == "wf-00"

    async def test_expire_removes_entry_and_listing(self, index: RunIndex) -> None:
        await index.record(run("wf-old", events=9, status="succeeded", updated_ms=1))
        await index.record(run("wf-live", events=1, updated_ms=2))
        await index.expire("wf-old", 1)
        assert await index.get("wf-old") is not None  # not yet
        await asyncio.sleep(1.3)
        assert await index.get("wf-old") is None
        assert [r.workflow_id for r in await index.list()] == ["wf-live"]

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors])
    @given(writes=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 20), st.sampled_from(_STATUSES)),
                           min_size=1, max_size=30))
    def test_keeps_the_first_write_with_most_events(self, index_factory: IndexFactory,
                                                    writes: list[tuple[str, int, str]]) -> None:
        """Whatever order agents write in, each run ends as the first write that had the most events."""
        async def go() -> None:
            index = await index_factory()
            try:
                expected: dict[str, tuple[int, str]] = {}
                for i, (wf, events, status) in enumerate(writes):
                    stored = await index.record(run(wf, events=events, status=status, updated_ms=1000 + i))
                    assert stored == (wf not in expected or events > expected[wf][0])
                    if stored:
                        expected[wf] = (events, status)
                for wf, (events, status) in expected.items():
                    got = await index.get(wf)
                    assert got is not None and (got.events, got.status) == (events, status)
                assert {r.workflow_id for r in await index.list()} == set(expected)
            finally:
                await index.aclose()

        asyncio.run(go())
