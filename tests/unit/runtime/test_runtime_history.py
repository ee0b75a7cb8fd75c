"""Bounded step history: the checkpoint keeps a window of turn records, older ones are archived
sealed in the blob store, read back whole, and a resumed owner continues the same chain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mesh.llm import ActionSpec, Decision, ReasonerRequest, RuleReasoner
from mesh.runtime import (
    Action,
    ActionContext,
    ActionError,
    ActionOutcome,
    Rehydration,
    RuntimeOptions,
    StackPromptBuilder,
    StepRunner,
    StepState,
    read_history,
)
from mesh.runtime.history import read_archived
from mesh.security import SealedValueError
from mesh.store import (
    BlobStore,
    Checkpoint,
    FileBlobStore,
    InMemoryBlobStore,
    InMemoryStateStore,
    step_key,
)
from protocols import Envelope, WorkflowSpec


def _spec(turns: int) -> WorkflowSpec:
    return WorkflowSpec.parse(
        {
            "name": "long",
            "mission": "Process a long queue.",
            "steps": [
                {
                    "id": "s",
                    "role": "worker",
                    "task": "process the queue",
                    "limits": {"max_turns": turns + 5, "spin_window": 100},
                }
            ],
        }
    )


class SizeLog(InMemoryStateStore):
    """The in-memory store, noting the size of every checkpoint written."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    async def write(self, key: str, data: bytes, **kw: Any) -> Checkpoint:
        self.sizes.append(len(data))
        return await super().write(key, data, **kw)


def _runner(
    store: InMemoryStateStore,
    blobs: BlobStore | None,
    *,
    turns: int,
    agent: str = "a",
    window: int = 10,
    segment: int = 5,
    stop_at: int = 0,
) -> StepRunner:
    runner: StepRunner

    async def work(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
        if ctx.turn == stop_at:
            runner.request_stop()
        if ctx.turn % 7 == 0:  # every 7th turn fails
            raise ActionError(f"turn {ctx.turn} refused")
        n = int(ctx.memory.get("n", 0)) + 1
        return ActionOutcome(
            summary=f"item {n} processed by {agent} " + "detail " * 10,
            memory={"n": n},
            done=ctx.turn >= turns,
        )

    calls = [0]

    def policy(request: ReasonerRequest) -> Decision:
        calls[0] += 1  # a new parameter every turn: not spinning
        return Decision(action="work", params={"item": calls[0]})

    async def publish(env: Envelope) -> None:
        return None

    runner = StepRunner(
        RuleReasoner(policy=policy),
        store,
        StackPromptBuilder(window=8000, output_reserve=500),
        publish,
        agent_id=agent,
        role="worker",
        blobs=blobs,
        actions={
            "work": Action(
                ActionSpec(
                    name="work",
                    description="Process one item.",
                    params_schema={"type": "object", "properties": {"item": {"type": "integer"}}},
                ),
                work,
            )
        },
        options=RuntimeOptions(history_window=window, history_segment=segment, blob_copies=False),
    )
    return runner


async def test_checkpoint_stays_bounded_and_the_whole_history_reads_back() -> None:
    turns = 150
    bounded, unbounded = SizeLog(), SizeLog()
    blobs = InMemoryBlobStore()
    state = await _runner(bounded, blobs, turns=turns).run(
        _spec(400), _spec(400).steps[0], "wf", rehydration=Rehydration()
    )
    flat = await _runner(unbounded, None, turns=turns).run(
        _spec(400), _spec(400).steps[0], "wf", rehydration=Rehydration()
    )
    assert state.status == flat.status == "completed" and state.turn == flat.turn == turns
    total = turns
    # The checkpoint holds the window plus at most a segment waiting (and one in flight).
    stored = StepState.from_bytes((await bounded.read(step_key("wf", "s"))).data)
    assert 10 <= len(stored.history) <= 10 + 5 + 1
    assert (
        stored.archive.through == stored.history[0].turn - 1
        and stored.archive.turns == stored.archive.through
    )
    assert sum(stored.archive.actions.values()) == stored.archive.turns
    assert stored.archive.failed == stored.archive.through // 7
    assert (
        stored.archive.last_failure.startswith("turn ") and "refused" in stored.archive.last_failure
    )
    # Size is flat: the last checkpoints are no bigger than those at turn ~40; unbounded grows.
    assert max(bounded.sizes[-20:]) <= 1.1 * max(bounded.sizes[30:50])
    assert unbounded.sizes[-1] > 5 * bounded.sizes[-1]
    # The whole history, archived part included, equals the unbounded run's.
    whole = await read_history(stored, blobs)
    assert [r.turn for r in whole] == list(range(1, total + 1))

    def same(records: list[Any]) -> list[tuple[Any, ...]]:
        return [(r.turn, r.action, r.outcome, r.summary, r.params) for r in records]

    assert same(whole) == same(flat.history)
    # Archived segments are sealed: no turn summary is readable in the blob store.
    names = await blobs.list("turns/wf/s/")
    assert len(names) == stored.archive.segments >= (total - 16) // 5
    for name in names:
        assert b"processed" not in await blobs.get(name)
    # The summary handed to dependent steps still counts every turn.
    from mesh.runtime.worker import _summarize

    assert f"work x{total}" in _summarize(stored)


async def test_resumed_owner_continues_the_chain_and_sees_the_digest() -> None:
    store, blobs = InMemoryStateStore(), InMemoryBlobStore()
    spec = _spec(400)
    first = await _runner(store, blobs, turns=120, agent="a", stop_at=53).run(
        spec, spec.steps[0], "wf", rehydration=Rehydration()
    )
    assert first.status == "running" and first.turn == 53 and first.archive.turns > 0
    second_runner = _runner(store, blobs, turns=120, agent="b")
    prompts_seen: list[str] = []
    orig = second_runner.reasoner.decide

    async def spy(request: ReasonerRequest) -> Any:
        prompts_seen.append(request.prompt)
        return await orig(request)

    second_runner.reasoner.decide = spy  # type: ignore[method-assign]
    second = await second_runner.run(spec, spec.steps[0], "wf", rehydration=Rehydration())
    assert second.status == "completed" and second.resumes == 1
    await second_runner.drain()
    whole = await read_history(second, blobs)
    assert [r.turn for r in whole] == list(range(1, second.turn + 1))
    assert {
        r.summary.split(" by ")[1].split()[0] for r in whole if r.outcome == "ok" and r.turn <= 53
    } == {"a"}
    assert {
        r.summary.split(" by ")[1].split()[0] for r in whole if r.outcome == "ok" and r.turn > 53
    } == {"b"}
    # The new owner rebuilt its prompt from the checkpoint: the archived turns show as their digest.
    assert "Turns 1.." in prompts_seen[0] and "(archived; work x" in prompts_seen[0]
    names = await blobs.list("turns/wf/s/")
    assert any(n.endswith("-e1.sealed") for n in names) and any(
        n.endswith("-e2.sealed") for n in names
    )


async def test_blob_store_failure_keeps_records_until_an_upload_succeeds(tmp_path: Path) -> None:
    # The blob root is a regular file: every put fails for real (mkdir under a file).
    root = tmp_path / "blobs"
    root.write_text("not a directory")
    store, blobs = SizeLog(), FileBlobStore(root, fsync=False)
    spec = _spec(400)
    state = await _runner(store, blobs, turns=80, stop_at=40).run(
        spec, spec.steps[0], "wf", rehydration=Rehydration()
    )
    assert state.status == "running" and state.turn == 40
    assert (
        state.archive.turns == 0 and len(state.history) == state.turn
    )  # nothing lost, nothing dropped
    root.unlink()  # the store comes back
    runner = _runner(store, blobs, turns=80)
    state = await runner.run(spec, spec.steps[0], "wf", rehydration=Rehydration())
    await runner.drain()
    assert state.status == "completed" and state.archive.turns > 0
    assert len(state.history) <= 16
    assert [r.turn for r in await read_history(state, blobs)] == list(range(1, state.turn + 1))


async def test_a_segment_moved_to_another_name_does_not_open() -> None:
    store, blobs = InMemoryStateStore(), InMemoryBlobStore()
    spec = _spec(400)
    runner = _runner(store, blobs, turns=40)
    state = await runner.run(spec, spec.steps[0], "wf", rehydration=Rehydration())
    await runner.drain()
    head = state.archive.head
    moved = head.replace("turns/wf/", "turns/other/")
    await blobs.put(moved, await blobs.get(head))
    state.archive.head = moved
    with pytest.raises(SealedValueError):
        await read_archived(blobs, state.archive)
