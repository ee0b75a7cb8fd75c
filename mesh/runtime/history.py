"""Bounded step history: the checkpoint keeps the last turns, older turn records go to the blob store.

A step's checkpoint is written after every turn, so its size is the write cost of every turn.
Keeping every ``TurnRecord`` made both grow with the turn count; here the checkpoint keeps

* the last ``window`` turn records (what the prompt, spinning detection and the next owner need),
  plus those waiting to be archived: ``segment`` normally, at most ``max_backlog`` segments when
  turns outrun the blob store (then a write waits for the upload: backpressure);
* a ``HistoryDigest``: counts of what the archived turns did (per action, failures, repairs,
  retries, time), the last archived failure, and the blob name of the newest archived segment.

Archived records are written in segments of ``segment`` records, one blob each, named
``turns/<workflow>/<step>/<first>-<last>-e<epoch>.sealed`` and sealed whole with the data key
(``mesh.security.DataCipher``, bound to that name), so the object store (a directory or an S3
bucket) holds no readable turn history. Each segment names the previous one: the checkpoint's
``head`` is the start of a chain that ``read_history`` walks back to turn 1.

Crash safety, the order of things: a segment is uploaded in the background while its records stay
in the checkpoint; only a checkpoint written after the upload succeeded drops them and points
``head`` at it. A checkpoint therefore never refers to a segment that is not durable, the turn
write path never waits for the blob store, and a crash at any point leaves either the records in
the checkpoint or a durable segment holding them (an upload whose checkpoint never came is an
unreferenced blob; the retention sweep removes it). The epoch in the name keeps a fenced-off
zombie owner's uploads apart from its successor's.

If the blob store is down, nothing is dropped: the checkpoint grows until an upload succeeds
(retried every ``segment`` turns).
Without a blob store (unit tests, embedded use) nothing is archived.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack

from mesh.errors import CheckpointNotFound, MeshError, StoreError
from mesh.runtime.state import HistoryDigest, StepState, TurnRecord
from mesh.security import DataKeyError, data_cipher
from mesh.store import BlobStore

if TYPE_CHECKING:
    from mesh.security import DataCipher

__all__ = ["HistoryArchiver", "HistoryOptions", "read_archived", "read_history", "segment_name"]

log = logging.getLogger("mesh.runtime.history")

_FORMAT = 1


@dataclass(frozen=True, slots=True)
class HistoryOptions:
    """How much turn history a checkpoint keeps."""

    window: int = 20
    """Turn records always kept in the checkpoint (``MESH_HISTORY_WINDOW``)."""

    segment: int = 20
    """Turn records per archived blob; archiving starts once ``window + segment`` are held."""

    max_backlog: int = 4
    """Segments' worth of records that may wait for a slow blob store before a checkpoint write
    waits for the upload in flight (backpressure, at most ``backpressure_s``)."""

    backpressure_s: float = 10.0
    """Longest a checkpoint write waits for an upload; then it goes ahead with the records kept."""

    def __post_init__(self) -> None:
        if self.window < 1 or self.segment < 1:
            raise ValueError(
                f"history window and segment must be >= 1, got {self.window} and {self.segment}"
            )


def segment_name(workflow_id: str, step_id: str, first: int, last: int, epoch: int) -> str:
    """Blob name of the archived segment of turns ``first..last`` written under ``epoch``."""
    return f"turns/{workflow_id}/{step_id}/{first:06d}-{last:06d}-e{epoch}.sealed"


def _context(name: str) -> tuple[str, ...]:
    return ("turn-history", name)


def _pack_segment(
    cipher: DataCipher, name: str, state: StepState, records: list[TurnRecord], prev: str
) -> bytes:
    body = {
        "format": _FORMAT,
        "workflow_id": state.workflow_id,
        "step_id": state.step_id,
        "first": records[0].turn,
        "last": records[-1].turn,
        "prev": prev,
        # The records themselves, sealed as one value bound to this blob's name.
        "records": cipher.seal([_record_fields(r) for r in records], context=_context(name)),
    }
    return msgpack.packb(body, use_bin_type=True)


def _record_fields(rec: TurnRecord) -> dict[str, Any]:
    return {
        "turn": rec.turn,
        "action": rec.action,
        "params": rec.params,
        "outcome": rec.outcome,
        "summary": rec.summary,
        "injected": rec.injected,
        "repairs": rec.repairs,
        "retries": rec.retries,
        "duration_ms": rec.duration_ms,
    }


def _unpack_segment(cipher: DataCipher, name: str, data: bytes) -> tuple[list[TurnRecord], str]:
    body = msgpack.unpackb(data, raw=False)
    if not isinstance(body, dict) or body.get("format") != _FORMAT:
        raise StoreError(f"turn history segment {name!r} is not in a format this version reads")
    records = [TurnRecord(**r) for r in cipher.open(body["records"], context=_context(name))]
    return records, str(body.get("prev") or "")


def _fold_digest(digest: HistoryDigest, records: list[TurnRecord], head: str) -> None:
    for rec in records:
        digest.actions[rec.action] = digest.actions.get(rec.action, 0) + 1
        if rec.outcome == "failed":
            digest.failed += 1
            digest.last_failure = f"turn {rec.turn}: {rec.summary}"[:300]
        elif rec.outcome == "invalid":
            digest.invalid += 1
        digest.repairs += rec.repairs
        digest.retries += rec.retries
        digest.duration_ms += rec.duration_ms
    digest.turns += len(records)
    digest.through = records[-1].turn
    digest.segments += 1
    digest.head = head


@dataclass(slots=True)
class _Upload:
    segments: list[tuple[str, int, int]]
    """(blob name, first turn, last turn), oldest first, each chained to the one before."""
    task: asyncio.Task[int]
    """Result: how many of ``segments`` (a prefix) are durable."""


@dataclass(slots=True)
class HistoryArchiver:
    """Moves a step's old turn records to the blob store; one per ``StepRunner``.

    Await ``before_write(state)`` right before every checkpoint write of the step: it applies the
    upload that finished (drops those records, advances the digest) and starts the next one when
    enough records have piled up (every full segment at once, after an outage). It never waits
    for the blob store unless turns outrun it by ``max_backlog`` segments (then it waits up to
    ``backpressure_s``). After a failed upload it tries again ``segment`` turns later.
    """

    blobs: BlobStore
    options: HistoryOptions = field(default_factory=HistoryOptions)
    cipher: DataCipher | None = None
    _uploads: dict[tuple[str, str], _Upload] = field(default_factory=dict)
    _retry_at: dict[tuple[str, str], int] = field(default_factory=dict)
    _orphans: set[asyncio.Task[int]] = field(default_factory=set)
    _warned: bool = False

    async def before_write(self, state: StepState) -> None:
        """Prepare ``state`` for its next checkpoint (see the class docstring)."""
        key = (state.workflow_id, state.step_id)
        upload = self._uploads.get(key)
        if upload is not None:
            if not upload.task.done():
                # Let the upload run if nothing else yielded to the loop since it started (a turn
                # over in-memory stores never suspends).
                await asyncio.sleep(0)
            backlog = len(state.history) - self.options.window
            if (
                not upload.task.done()
                and backlog >= self.options.segment * self.options.max_backlog
            ):
                # Turns outrun the blob store: wait for it rather than let the checkpoint grow.
                await asyncio.wait([upload.task], timeout=self.options.backpressure_s)
            if not upload.task.done():
                return
            del self._uploads[key]
            self._apply(state, key, upload)
        excess = len(state.history) - self.options.window
        if excess >= self.options.segment and state.turn >= self._retry_at.get(key, 0):
            self._start(state, key, excess // self.options.segment)

    def _apply(self, state: StepState, key: tuple[str, str], upload: _Upload) -> None:
        done = 0 if upload.task.cancelled() else upload.task.result()
        if done < len(upload.segments):
            self._retry_at[key] = state.turn + self.options.segment
        for name, first, last in upload.segments[:done]:
            # Drop exactly the uploaded records, if they are still the oldest ones held.
            held = state.history
            n = last - first + 1
            if len(held) < n or held[0].turn != first or held[n - 1].turn != last:
                return  # the state moved on another way: the upload is not referenced
            _fold_digest(state.archive, held[:n], name)
            del held[:n]

    def _start(self, state: StepState, key: tuple[str, str], count: int) -> None:
        try:
            cipher = self.cipher or data_cipher()
        except DataKeyError as exc:
            if not self._warned:
                self._warned = True
                log.warning("turn history is not archived (the checkpoint keeps growing): %s", exc)
            return
        size, prev = self.options.segment, state.archive.head
        segments, blobs = [], []
        for i in range(count):
            records = list(state.history[i * size : (i + 1) * size])
            name = segment_name(
                state.workflow_id, state.step_id, records[0].turn, records[-1].turn, state.epoch
            )
            blobs.append((name, _pack_segment(cipher, name, state, records, prev)))
            segments.append((name, records[0].turn, records[-1].turn))
            prev = name
        task = asyncio.create_task(self._put_all(f"{state.workflow_id}/{state.step_id}", blobs))
        self._uploads[key] = _Upload(segments, task)

    async def _put_all(self, where: str, blobs: list[tuple[str, bytes]]) -> int:
        for done, (name, data) in enumerate(blobs):
            try:
                await self.blobs.put(name, data)
            except MeshError as exc:
                log.warning(
                    "%s: turn history segment %s not archived (its turns stay in the checkpoint): %s",
                    where,
                    name,
                    exc,
                )
                return done
        return len(blobs)

    def forget(self, workflow_id: str, step_id: str) -> None:
        """Drop the step's bookkeeping (it ended or moved to another agent); ``drain`` still waits
        for its upload in flight (a blob no checkpoint refers to; retention removes it)."""
        upload = self._uploads.pop((workflow_id, step_id), None)
        self._retry_at.pop((workflow_id, step_id), None)
        if upload is not None and not upload.task.done():
            self._orphans.add(upload.task)
            upload.task.add_done_callback(self._orphans.discard)

    async def drain(self) -> None:
        """Wait for uploads in flight (shutdown)."""
        tasks = [u.task for u in self._uploads.values()] + list(self._orphans)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def read_archived(
    blobs: BlobStore, digest: HistoryDigest, *, cipher: DataCipher | None = None
) -> list[TurnRecord]:
    """Every archived turn record of a step, oldest first, following the chain from ``digest.head``.

    ``CheckpointNotFound`` names the first segment missing (deleted by retention, or never
    uploaded); ``SealedValueError`` if a segment does not open under the data key.
    """
    if not digest.head:
        return []
    cipher = cipher or data_cipher()
    segments: list[list[TurnRecord]] = []
    name = digest.head
    seen: set[str] = set()
    while name:
        if name in seen:
            raise StoreError(f"turn history segments loop at {name!r}")
        seen.add(name)
        try:
            data = await blobs.get(name)
        except CheckpointNotFound:
            raise CheckpointNotFound(
                f"turn history segment {name!r} is missing (removed by blob retention?); "
                f"turns up to {digest.through} cannot all be read"
            ) from None
        records, name = _unpack_segment(cipher, name, data)
        segments.append(records)
    out = [rec for seg in reversed(segments) for rec in seg]
    if len(out) != digest.turns or (out and out[-1].turn != digest.through):
        raise StoreError(
            f"turn history archive holds {len(out)} records up to turn {out[-1].turn if out else 0}; "
            f"the checkpoint says {digest.turns} up to {digest.through}"
        )
    return out


async def read_history(
    state: StepState, blobs: BlobStore | None, *, cipher: DataCipher | None = None
) -> list[TurnRecord]:
    """The step's whole turn history: the archived records, then those in the checkpoint."""
    if not state.archive.head:
        return list(state.history)
    if blobs is None:
        raise MeshError(
            f"{state.workflow_id}/{state.step_id}: turns 1..{state.archive.through} are archived in the "
            "blob store; give one to read them"
        )
    archived = await read_archived(blobs, state.archive, cipher=cipher)
    return archived + [r for r in state.history if r.turn > state.archive.through]
