"""A StateStore that keeps accepting checkpoints while its backend is unreachable: a local journal.

``JournalingStateStore`` wraps another ``StateStore`` (Redis). While the inner store raises
``StoreUnavailable``, ``write`` appends the checkpoint to a per-agent journal file (one record
per write, fsync'd before ``write`` returns) and returns a ``ProvisionalCheckpoint``; ``read``
sees journaled writes before the inner store. A background flusher replays the journal to the
inner store in order once it answers again, and the journal survives process restarts.

Trade-offs (this is the AP side of the store):

* A provisional checkpoint is durable on this machine only: a lost disk loses it, and its
  ``version`` is a guess (the last version this process saw, plus one per journaled write).
* ``claim`` while the inner store is unreachable returns the last epoch this process knew for
  the key, without fencing anyone: two owners may both believe they own a key during a
  partition. A ``claim`` once the store answers again first replays this agent's journal, so
  an owner's own new epoch never fences off writes it acknowledged earlier. Fencing resumes on
  reconnect: when a replayed write meets a newer epoch
  (``StaleEpochError``), a newer owner took over, so every journaled write of that key is
  dropped, logged and listed in ``dropped``; the newer owner's state wins.
* Replay is at-least-once: a crash between a replayed write and the journal cursor moving on
  replays that write once more (the key gets one duplicate version with the same data). A
  dropped write queued behind other keys' writes may be met again after a restart; fencing
  drops it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import struct
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import msgpack

from mesh.backoff import ExponentialBackoff
from mesh.errors import StaleEpochError, StoreUnavailable, UsageError
from mesh.security import private_dir
from mesh.store.base import Checkpoint, StateStore

__all__ = ["DroppedWrite", "JournalOptions", "JournalingStateStore", "ProvisionalCheckpoint"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")
"""Record header: body length, CRC32 of the body."""


@dataclass(frozen=True, slots=True)
class ProvisionalCheckpoint(Checkpoint):
    """A checkpoint held in the local journal, not yet acknowledged by the inner store."""

    journal_seq: int = 0
    """Position in the journal (increasing across restarts)."""


@dataclass(frozen=True, slots=True)
class DroppedWrite:
    """A journaled write refused on replay because a newer owner holds the key."""

    key: str
    """The checkpoint key."""
    epoch: int
    """The epoch the journaled write carried."""
    current_epoch: int
    """The epoch that owns the key now."""
    journal_seq: int
    """Its position in the journal."""


@dataclass(frozen=True, slots=True)
class JournalOptions:
    """How the journal is replayed."""

    retry_interval_s: float = 0.5
    """First pause after the inner store failed during replay; doubles up to ``max_retry_interval_s``."""
    max_retry_interval_s: float = 5.0
    """Longest pause between replay attempts."""
    fsync: bool = True
    """fsync the journal after every record (off only in benchmarks that measure without it)."""

    def retry_backoff(self) -> ExponentialBackoff:
        """The replay's pauses: ``retry_interval_s`` doubling up to ``max_retry_interval_s``, no jitter."""
        return ExponentialBackoff(base_s=self.retry_interval_s, cap_s=self.max_retry_interval_s, jitter=0.0)


@dataclass(slots=True)
class _Record:
    seq: int
    key: str
    data: bytes
    epoch: int
    owner: str
    workflow_id: str | None
    written_at_ms: int
    version: int

    def pack(self) -> bytes:
        body = msgpack.packb(
            [self.seq, self.key, self.data, self.epoch, self.owner, self.workflow_id, self.written_at_ms, self.version],
            use_bin_type=True,
        )
        return _HEADER.pack(len(body), zlib.crc32(body)) + body

    def checkpoint(self) -> ProvisionalCheckpoint:
        return ProvisionalCheckpoint(
            key=self.key,
            version=self.version,
            epoch=self.epoch,
            data=self.data,
            written_at_ms=self.written_at_ms,
            owner=self.owner,
            journal_seq=self.seq,
        )


class JournalingStateStore:
    """Wraps a ``StateStore``; journals writes locally while it is unreachable and replays them in order.

    One instance per agent and journal file (an exclusive ``flock`` enforces it across
    processes). Calls are serialized by one lock; ``start`` launches the background flusher.
    """

    def __init__(
        self,
        inner: StateStore,
        journal_dir: str | Path,
        *,
        agent_id: str,
        options: JournalOptions | None = None,
    ) -> None:
        """Journal for ``agent_id`` under ``journal_dir`` in front of ``inner``; loads any journal left over."""
        if not agent_id or "/" in agent_id:
            raise UsageError(f"agent_id must be a non-empty file-name-safe string, got {agent_id!r}")
        self.inner = inner
        self.options = options or JournalOptions()
        self.path = Path(journal_dir) / f"{agent_id}.journal"
        self.cursor_path = Path(journal_dir) / f"{agent_id}.journal.cursor"
        self.stats: Counter[str] = Counter()
        """journaled, flushed, dropped, direct writes, replay failures."""
        self.dropped: list[DroppedWrite] = []
        """Journaled writes refused on replay (a newer owner took the key)."""
        self._pending: list[_Record] = []
        self._epochs: dict[str, int] = {}
        self._versions: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        private_dir(self.path.parent)
        # Held open (and locked) for the store's lifetime; 0600 in a 0700 directory.
        self._file = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), "a+b")
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise UsageError(f"journal {self.path} is in use by another process") from None
        self._cursor = self._read_cursor()
        self._next_seq = self._cursor + 1
        self._load()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background flusher (replays what a previous run left, then waits for more)."""
        if self._task is None:
            self._task = asyncio.create_task(self._flusher(), name=f"journal-flusher-{self.path.name}")
            self._wake.set()

    async def aclose(self) -> None:
        """Stop the flusher, close the journal (kept on disk) and the inner store."""
        if self._task is not None:
            task, self._task = self._task, None
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.1)
        self._file.close()
        await self.inner.aclose()

    @property
    def pending(self) -> int:
        """Journaled writes not yet replayed."""
        return len(self._pending)

    # -- StateStore -------------------------------------------------------------------------

    async def claim(self, key: str, owner: str) -> int:
        """A new epoch from the inner store; while it is unreachable, the last epoch known for ``key``.

        Raises ``StoreUnavailable`` when the store is unreachable and no epoch is known.
        """
        async with self._lock:
            # Our own journaled writes go first: a new epoch claimed before they are replayed
            # would fence them off as stale, and this owner would drop what it acknowledged.
            if self._pending:
                try:
                    await self._drain()
                except StoreUnavailable:
                    return self._offline_claim(key)
            try:
                epoch = await self.inner.claim(key, owner)
            except StoreUnavailable:
                return self._offline_claim(key)
            self._epochs[key] = epoch
            return epoch

    def _offline_claim(self, key: str) -> int:
        known = self._epochs.get(key)
        if known is None:
            raise StoreUnavailable(f"store unreachable and no epoch known for {key!r}")
        self.stats["offline_claims"] += 1
        log.warning("store unreachable: keeping epoch %d of %r unfenced until it is back", known, key)
        return known

    @property
    def durable(self) -> bool:
        """Whether every acknowledged write has reached the inner store (nothing journaled)."""
        return not self._pending

    async def write(
        self,
        key: str,
        data: bytes,
        *,
        epoch: int,
        owner: str = "",
        workflow_id: str | None = None,
    ) -> Checkpoint:
        """Write through, or journal it (fsync'd) and return a ``ProvisionalCheckpoint``.

        While older journaled writes wait, they are replayed first so the inner store sees
        every write in order. ``StaleEpochError`` from a direct write is raised as usual.
        """
        async with self._lock:
            if self._pending:
                try:
                    await self._drain()
                except StoreUnavailable:
                    return await self._journal(key, data, epoch, owner, workflow_id)
            try:
                checkpoint = await self.inner.write(key, data, epoch=epoch, owner=owner, workflow_id=workflow_id)
            except StoreUnavailable:
                return await self._journal(key, data, epoch, owner, workflow_id)
            self.stats["direct"] += 1
            self._seen(checkpoint)
            return checkpoint

    async def read(self, key: str, version: int | None = None) -> Checkpoint:
        """The newest journaled write of ``key`` (or that version), else the inner store's."""
        for record in reversed(self._pending):
            if record.key == key and (version is None or record.version == version):
                return record.checkpoint()
        checkpoint = await self.inner.read(key, version)
        self._seen(checkpoint)
        return checkpoint

    async def expire_workflow(self, workflow_id: str, ttl_s: int) -> int:
        """Passed to the inner store (not journaled: expiry can wait for the store)."""
        return await self.inner.expire_workflow(workflow_id, ttl_s)

    # -- replay -----------------------------------------------------------------------------

    async def flush(self) -> int:
        """Replay every journaled write now; return how many landed. ``StoreUnavailable`` if unreachable."""
        async with self._lock:
            return await self._drain()

    async def _drain(self) -> int:
        landed = 0
        while self._pending:
            record = self._pending[0]
            try:
                checkpoint = await self.inner.write(
                    record.key, record.data, epoch=record.epoch, owner=record.owner, workflow_id=record.workflow_id
                )
            except StaleEpochError as exc:
                self._drop_key(record.key, exc.current_epoch)
                continue
            except StoreUnavailable:
                self.stats["replay_failures"] += 1
                raise
            self._pending.pop(0)
            self._seen(checkpoint)
            await asyncio.to_thread(self._write_cursor, record.seq)
            self.stats["flushed"] += 1
            landed += 1
        if landed or not self._pending:
            await asyncio.to_thread(self._compact)
        return landed

    def _drop_key(self, key: str, current_epoch: int) -> None:
        doomed = [r for r in self._pending if r.key == key]
        self._pending = [r for r in self._pending if r.key != key]
        for record in doomed:
            self.dropped.append(DroppedWrite(key, record.epoch, current_epoch, record.seq))
        self.stats["dropped"] += len(doomed)
        self._epochs[key] = current_epoch
        self._versions.pop(key, None)
        log.warning(
            "journal: dropped %d write(s) of %r: epoch %d owns it now (a newer owner took over)",
            len(doomed), key, current_epoch,
        )
        # Their sequence numbers are gone from the journal's live part: move the cursor past
        # any leading dropped records so a restart does not resurrect them.
        self._write_cursor(self._pending[0].seq - 1 if self._pending else self._next_seq - 1)

    async def _flusher(self) -> None:
        backoff = self.options.retry_backoff().start()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                try:
                    await self.flush()
                except StoreUnavailable:
                    await backoff.sleep()
                except Exception:  # the flusher must outlive any single surprise
                    log.exception("journal replay failed")
                    # The pause the next outage would get, without counting the surprise as one.
                    await asyncio.sleep(backoff.policy.delay_s(backoff.failures + 1))
                else:
                    backoff.reset()

    # -- the file ---------------------------------------------------------------------------

    async def _journal(self, key: str, data: bytes, epoch: int, owner: str, workflow_id: str | None) -> Checkpoint:
        version = self._versions.get(key, 0) + 1
        record = _Record(
            self._next_seq, key, bytes(data), epoch, owner, workflow_id, int(time.time() * 1000), version
        )
        await asyncio.to_thread(self._append, record.pack())
        self._next_seq += 1
        self._pending.append(record)
        self._versions[key] = version
        self._epochs.setdefault(key, epoch)
        self.stats["journaled"] += 1
        self._wake.set()
        return record.checkpoint()

    def _append(self, blob: bytes) -> None:
        self._file.seek(0, os.SEEK_END)
        self._file.write(blob)
        self._file.flush()
        if self.options.fsync:
            os.fsync(self._file.fileno())

    def _load(self) -> None:
        self._file.seek(0)
        raw = self._file.read()
        offset = 0
        while offset + _HEADER.size <= len(raw):
            length, crc = _HEADER.unpack_from(raw, offset)
            body = raw[offset + _HEADER.size : offset + _HEADER.size + length]
            if len(body) < length or zlib.crc32(body) != crc:
                break  # a torn tail from a crash mid-append: the write was never acknowledged
            seq, key, data, epoch, owner, workflow_id, written_at_ms, version = msgpack.unpackb(body, raw=False)
            record = _Record(seq, key, data, epoch, owner, workflow_id, written_at_ms, version)
            self._next_seq = max(self._next_seq, seq + 1)
            if seq > self._cursor:
                self._pending.append(record)
                self._versions[key] = version
                self._epochs.setdefault(key, epoch)
            offset += _HEADER.size + length
        if offset < len(raw):
            log.warning("journal %s: dropping a torn tail of %d bytes", self.path, len(raw) - offset)
            self._file.truncate(offset)
        if self._pending:
            log.info("journal %s: %d write(s) to replay from an earlier run", self.path, len(self._pending))

    def _read_cursor(self) -> int:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(self.cursor_path.read_text().strip() or 0)
        return 0

    def _write_cursor(self, seq: int) -> None:
        tmp = self.cursor_path.with_suffix(".tmp")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(f"{seq}\n")
            f.flush()
            if self.options.fsync:
                os.fsync(f.fileno())
        tmp.replace(self.cursor_path)
        self._cursor = seq

    def _compact(self) -> None:
        # Everything replayed: the journal restarts empty (sequence numbers keep counting, the
        # cursor remembers where they are).
        if not self._pending:
            self._file.truncate(0)
            if self.options.fsync:
                os.fsync(self._file.fileno())

    # -- helpers ----------------------------------------------------------------------------

    def _seen(self, checkpoint: Checkpoint) -> None:
        self._versions[checkpoint.key] = max(self._versions.get(checkpoint.key, 0), checkpoint.version)
        self._epochs[checkpoint.key] = max(self._epochs.get(checkpoint.key, 0), checkpoint.epoch)

    def __repr__(self) -> str:
        return f"JournalingStateStore(path={str(self.path)!r}, pending={len(self._pending)}, inner={self.inner!r})"
