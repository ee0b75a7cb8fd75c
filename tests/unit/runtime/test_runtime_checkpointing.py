"""The Checkpointer on its own: fenced writes, OwnershipLost, observer hooks, the write's duration in
the turn record, sealed secrets, blob copies and history archiving."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from mesh.errors import MeshError, StoreUnavailable
from mesh.runtime import ContextVariable, RuntimeOptions, StepState, TurnRecord
from mesh.runtime.checkpointing import Checkpointer, OwnershipLost
from mesh.runtime.observers import CheckpointWriting, CheckpointWritten, Observers, TurnObserver
from mesh.security import DataCipher, generate_data_key
from mesh.store import InMemoryBlobStore, InMemoryStateStore, step_key

KEY = DataCipher.from_text(generate_data_key())
SECRET = "tok-very-secret-123"


class Recorder(TurnObserver):
    def __init__(self) -> None:
        self.seen: list[str] = []

    @contextmanager
    def checkpoint_scope(self, event: CheckpointWriting) -> Iterator[None]:
        self.seen.append(f"writing turn={event.turn} epoch={event.epoch}")
        yield
        self.seen.append("scope closed")

    def checkpoint_written(self, event: CheckpointWritten) -> None:
        self.seen.append(f"written turn={event.turn} version={event.version}")


def _state(epoch: int, turns: int = 0) -> StepState:
    state = StepState(workflow_id="wf-1", step_id="s", role="r", owner="a1", epoch=epoch)
    state.variables["auth_token"] = ContextVariable("auth_token", SECRET, secret=True)
    for turn in range(1, turns + 1):
        state.history.append(TurnRecord(turn, "call", {}, "ok", f"turn {turn}"))
    state.turn = turns
    return state


def _checkpointer(
    store: InMemoryStateStore,
    recorder: TurnObserver | None = None,
    blobs: InMemoryBlobStore | None = None,
    **options: int | bool,
) -> Checkpointer:
    return Checkpointer(
        store,
        agent_id="a1",
        observers=Observers([recorder] if recorder else []),
        blobs=blobs,
        options=RuntimeOptions(**options),  # type: ignore[arg-type]
        cipher=KEY,
    )


async def test_a_write_reads_back_under_the_owner_with_the_hooks_in_order() -> None:
    store, recorder = InMemoryStateStore(), Recorder()
    cp = _checkpointer(store, recorder)
    assert await cp.read("wf-1", "s") is None
    epoch = await store.claim(step_key("wf-1", "s"), "a1")
    state = _state(epoch, turns=2)
    await cp.write(state)
    await cp.write(state)
    back = await cp.read("wf-1", "s")
    assert back is not None and back.turn == 2 and back.variables["auth_token"].value == SECRET
    ckpt = await store.read(step_key("wf-1", "s"))
    assert ckpt.owner == "a1" and ckpt.epoch == epoch and ckpt.version == 2
    assert SECRET.encode() not in ckpt.data  # sealed, not plaintext
    assert recorder.seen == [
        "writing turn=2 epoch=1", "written turn=2 version=1", "scope closed",
        "writing turn=2 epoch=1", "written turn=2 version=2", "scope closed",
    ]  # fmt: skip


async def test_a_newer_epoch_fences_the_write_off() -> None:
    store, recorder = InMemoryStateStore(), Recorder()
    cp = _checkpointer(store, recorder)
    old = await store.claim(step_key("wf-1", "s"), "a1")
    await cp.write(_state(old, turns=1))
    await store.claim(step_key("wf-1", "s"), "a2")  # a successor owns it now
    with pytest.raises(OwnershipLost) as caught:
        await cp.write(_state(old, turns=2))
    assert isinstance(caught.value, MeshError) and "epoch" in str(caught.value)
    back = await cp.read("wf-1", "s")
    assert back is not None and back.turn == 1  # nothing written
    assert recorder.seen[3:] == ["writing turn=2 epoch=1"]  # no checkpoint_written


async def test_the_write_duration_lands_in_the_record_of_the_turn_it_closes() -> None:
    store = InMemoryStateStore()
    cp = _checkpointer(store)
    epoch = await store.claim(step_key("wf-1", "s"), "a1")
    state = _state(epoch, turns=3)
    state.history[-1].checkpoint_ms = -1.0
    state.history[-2].checkpoint_ms = -1.0
    await cp.write(state)
    assert state.history[-1].checkpoint_ms >= 0 and state.history[-2].checkpoint_ms == -1.0
    state.turn = 4  # a checkpoint inside turn 4 (an in-doubt record): turn 3's record is left alone
    state.history[-1].checkpoint_ms = -1.0
    await cp.write(state)
    assert state.history[-1].checkpoint_ms == -1.0


async def test_blob_copies_are_sealed_and_drained() -> None:
    store, blobs = InMemoryStateStore(), InMemoryBlobStore()
    cp = _checkpointer(store, blobs=blobs)
    epoch = await store.claim(step_key("wf-1", "s"), "a1")
    await cp.write(_state(epoch, turns=3))
    await cp.drain()
    name = f"wf-1/s/000003-e{epoch}.msgpack"
    assert name in blobs
    copy = await blobs.get(name)
    assert copy == (await store.read(step_key("wf-1", "s"))).data and SECRET.encode() not in copy


async def test_no_blob_copies_when_turned_off() -> None:
    store, blobs = InMemoryStateStore(), InMemoryBlobStore()
    cp = _checkpointer(store, blobs=blobs, blob_copies=False)
    epoch = await store.claim(step_key("wf-1", "s"), "a1")
    await cp.write(_state(epoch, turns=3))
    await cp.drain()
    assert len(blobs) == 0


class FailingBlobs(InMemoryBlobStore):
    async def put(self, name: str, data: bytes) -> str:
        raise StoreUnavailable("blob store down")


async def test_a_failed_blob_copy_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    store = InMemoryStateStore()
    cp = _checkpointer(store, blobs=FailingBlobs())
    epoch = await store.claim(step_key("wf-1", "s"), "a1")
    with caplog.at_level(logging.WARNING, logger="mesh.runtime"):
        await cp.write(_state(epoch, turns=1))
        await cp.drain()
    assert (await store.read(step_key("wf-1", "s"))).version == 1
    assert any("blob copy wf-1/s/000001" in r.getMessage() for r in caplog.records)


async def test_turn_records_past_the_window_are_archived_to_the_blob_store() -> None:
    store, blobs = InMemoryStateStore(), InMemoryBlobStore()
    cp = _checkpointer(store, blobs=blobs, blob_copies=False, history_window=2, history_segment=2)
    epoch = await store.claim(step_key("wf-1", "s"), "a1")
    state = _state(epoch, turns=6)
    await cp.write(state)  # starts the upload of the oldest segments
    await cp.drain()
    await cp.write(state)  # folds the finished upload: the checkpoint keeps the window
    assert [r.turn for r in state.history] == [5, 6]
    archived = [await blobs.get(n) for n in await blobs.list("")]
    assert archived and not any(SECRET.encode() in data for data in archived)
    back = await cp.read("wf-1", "s")
    assert back is not None and [r.turn for r in back.history] == [5, 6]
    cp.forget("wf-1", "s")
