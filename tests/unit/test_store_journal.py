"""JournalingStateStore over an inner store that can be made unreachable on demand."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mesh.errors import StaleEpochError, StoreUnavailable, UsageError
from mesh.store import (
    Checkpoint,
    InMemoryStateStore,
    JournalingStateStore,
    JournalOptions,
    ProvisionalCheckpoint,
    step_key,
)

FAST = JournalOptions(retry_interval_s=0.02, max_retry_interval_s=0.05)


class FlakyStore(InMemoryStateStore):
    """An in-memory store that raises StoreUnavailable while ``available`` is False."""

    def __init__(self) -> None:
        super().__init__(keep_versions=1000)
        self.available = True
        self.attempts = 0

    def _check(self) -> None:
        self.attempts += 1
        if not self.available:
            raise StoreUnavailable("inner store switched off by the test")

    async def claim(self, key: str, owner: str) -> int:
        self._check()
        return await super().claim(key, owner)

    async def write(self, key: str, data: bytes, *, epoch: int, owner: str = "", workflow_id: str | None = None) -> Checkpoint:
        self._check()
        return await super().write(key, data, epoch=epoch, owner=owner, workflow_id=workflow_id)

    async def read(self, key: str, version: int | None = None) -> Checkpoint:
        self._check()
        return await super().read(key, version)


async def _until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def _history(store: InMemoryStateStore, key: str) -> list[bytes]:
    latest = await store.read(key)
    return [(await store.read(key, v)).data for v in range(1, latest.version + 1)]


async def test_writes_go_through_while_the_store_answers(tmp_path: Path) -> None:
    inner = FlakyStore()
    store = JournalingStateStore(inner, tmp_path, agent_id="a1", options=FAST)
    epoch = await store.claim("k", "a1")
    ckpt = await store.write("k", b"one", epoch=epoch)
    assert not isinstance(ckpt, ProvisionalCheckpoint)
    assert (await inner.read("k")).data == b"one"
    assert store.pending == 0 and store.path.stat().st_size == 0
    await store.aclose()


async def test_unavailable_writes_are_journaled_read_back_and_replayed_in_order(tmp_path: Path) -> None:
    inner = FlakyStore()
    store = JournalingStateStore(inner, tmp_path, agent_id="a1", options=FAST)
    K = step_key("wf", "k")  # listed under workflow "wf": carries its hash tag
    epoch = await store.claim(K, "a1")
    await store.write(K, b"v1", epoch=epoch)
    inner.available = False
    written = [await store.write(K, f"v{i}".encode(), epoch=epoch, workflow_id="wf") for i in range(2, 6)]
    other = await store.write("k2", b"x", epoch=0)
    assert all(isinstance(c, ProvisionalCheckpoint) for c in [*written, other])
    assert [c.version for c in written] == [2, 3, 4, 5]
    assert store.pending == 5 and store.path.stat().st_size > 0
    assert (await store.read(K)).data == b"v5"
    assert (await store.read(K, 3)).data == b"v3"
    with pytest.raises(StoreUnavailable):
        await store.flush()
    inner.available = True
    assert await store.flush() == 5
    assert await _history(inner, K) == [b"v1", b"v2", b"v3", b"v4", b"v5"]
    assert (await inner.read("k2")).data == b"x"
    assert store.pending == 0 and store.path.stat().st_size == 0
    await store.aclose()


async def test_background_flusher_replays_once_the_store_is_back(tmp_path: Path) -> None:
    inner = FlakyStore()
    store = JournalingStateStore(inner, tmp_path, agent_id="a1", options=FAST)
    store.start()
    inner.available = False
    for i in range(10):
        await store.write("k", str(i).encode(), epoch=1)
    await asyncio.sleep(0.1)
    assert store.pending == 10 and store.stats["replay_failures"] >= 1
    inner.available = True
    for _ in range(200):
        if store.pending == 0:
            break
        await asyncio.sleep(0.01)
    assert await _history(inner, "k") == [str(i).encode() for i in range(10)]
    await store.aclose()


async def test_replay_pauses_double_up_to_the_cap_and_restart_after_a_success(tmp_path: Path) -> None:
    # The flusher's pauses (mesh.backoff, jitter-free): 0.05, 0.1, 0.2, 0.4, then 0.4 at the cap;
    # uncapped they would be 0.8 and 1.6 s, and a pause not reset by the replay would start at 0.4.
    inner = FlakyStore()
    times: list[float] = []
    check = inner._check

    def timed_check() -> None:
        times.append(time.monotonic())
        check()

    inner._check = timed_check  # type: ignore[method-assign]
    options = JournalOptions(retry_interval_s=0.05, max_retry_interval_s=0.4)
    store = JournalingStateStore(inner, tmp_path, agent_id="a1", options=options)
    inner.available = False
    try:
        await store.write("k", b"1", epoch=1)  # refused by the store: journaled
        times.clear()
        store.start()
        await _until(lambda: len(times) >= 7)
        gaps = [b - a for a, b in itertools.pairwise(times)][:6]
        for gap, pause in zip(gaps, [0.05, 0.1, 0.2, 0.4, 0.4, 0.4], strict=True):
            assert gap >= pause * 0.95, gaps
        assert max(gaps[4:]) < 0.7, gaps  # capped
        inner.available = True
        await _until(lambda: store.pending == 0)
        inner.available = False
        await store.write("k", b"2", epoch=1)
        times.clear()
        await _until(lambda: len(times) >= 2)
        assert times[1] - times[0] < 0.3, times  # back at 0.05 s, not 0.4
    finally:
        await store.aclose()


async def test_a_write_after_the_store_returns_lands_after_the_journaled_ones(tmp_path: Path) -> None:
    inner = FlakyStore()
    store = JournalingStateStore(inner, tmp_path, agent_id="a1", options=FAST)
    inner.available = False
    await store.write("k", b"old", epoch=1)
    inner.available = True
    ckpt = await store.write("k", b"new", epoch=1)
    assert not isinstance(ckpt, ProvisionalCheckpoint) and ckpt.version == 2
    assert await _history(inner, "k") == [b"old", b"new"]
    await store.aclose()


async def test_journal_survives_a_restart_and_ignores_a_torn_tail(tmp_path: Path) -> None:
    inner = FlakyStore()
    inner.available = False
    first = JournalingStateStore(inner, tmp_path, agent_id="a1", options=FAST)
    for i in range(3):
        await first.write("k", f"v{i}".encode(), epoch=4, owner="a1")
    first._file.close()  # a crash: no flush, no aclose
    first.path.write_bytes(first.path.read_bytes() + b"\x00\x00\x01\x00garbage")  # a record cut short mid-append
    second = JournalingStateStore(inner, tmp_path, agent_id="a1", options=FAST)
    assert second.pending == 3
    assert (await second.read("k")).data == b"v2"
    inner.available = True
    assert await second.flush() == 3
    assert await _history(inner, "k") == [b"v0", b"v1", b"v2"]
    assert (await inner.read("k")).owner == "a1"
    await second.aclose()
    third = JournalingStateStore(inner, tmp_path, agent_id="a1", options=FAST)
    assert third.pending == 0  # the cursor says they landed: nothing replayed twice
    await third.aclose()


async def test_claim_offline_keeps_the_last_known_epoch(tmp_path: Path) -> None:
    inner = FlakyStore()
    store = JournalingStateStore(inner, tmp_path, agent_id="a1", options=FAST)
    epoch = await store.claim("k", "a1")
    inner.available = False
    assert await store.claim("k", "a1") == epoch
    with pytest.raises(StoreUnavailable):
        await store.claim("never-seen", "a1")
    await store.aclose()


async def test_stale_epoch_on_replay_drops_that_keys_writes_only(tmp_path: Path) -> None:
    inner = FlakyStore()
    store = JournalingStateStore(inner, tmp_path, agent_id="a1", options=FAST)
    epoch = await store.claim("k", "a1")
    inner.available = False
    await store.write("k", b"zombie-1", epoch=epoch)
    await store.write("other", b"fine", epoch=1)
    await store.write("k", b"zombie-2", epoch=epoch)
    # Meanwhile a newer owner took the key on the real store.
    newer = await InMemoryStateStore.claim(inner, "k", "a2")
    await InMemoryStateStore.write(inner, "k", b"newer-owner", epoch=newer)
    inner.available = True
    assert await store.flush() == 1
    assert [(d.key, d.epoch, d.current_epoch) for d in store.dropped] == [("k", epoch, newer)] * 2
    assert (await inner.read("k")).data == b"newer-owner"
    assert (await inner.read("other")).data == b"fine"
    with pytest.raises(StaleEpochError):
        await store.write("k", b"zombie-3", epoch=epoch)
    await store.aclose()


async def test_one_journal_per_agent(tmp_path: Path) -> None:
    store = JournalingStateStore(FlakyStore(), tmp_path, agent_id="a1")
    with pytest.raises(UsageError, match="in use"):
        JournalingStateStore(FlakyStore(), tmp_path, agent_id="a1")
    await store.aclose()


async def test_a_claim_after_the_outage_replays_the_journal_before_taking_a_new_epoch(tmp_path: Path) -> None:
    # The owner's own retry claimed epoch 2 before its journal was replayed, so the replay was
    # refused as stale and the owner dropped writes it had acknowledged.
    inner = FlakyStore()
    store = JournalingStateStore(inner, tmp_path, agent_id="a1", options=JournalOptions(retry_interval_s=60))
    epoch = await store.claim("k", "a1")
    await store.write("k", b"turn-1", epoch=epoch)
    inner.available = False
    for turn in (2, 3):
        assert isinstance(await store.write("k", f"turn-{turn}".encode(), epoch=epoch), ProvisionalCheckpoint)
    assert await store.claim("k", "a1") == epoch  # offline: the known epoch
    inner.available = True
    new_epoch = await store.claim("k", "a1")  # the flusher has not run yet (60 s pause)
    assert new_epoch > epoch
    assert store.dropped == [] and store.pending == 0
    assert await _history(inner, "k") == [b"turn-1", b"turn-2", b"turn-3"]
    assert (await inner.read("k")).data == b"turn-3"
    await store.aclose()
