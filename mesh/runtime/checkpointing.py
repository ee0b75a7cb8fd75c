"""Writing a step's state: the checkpoint (fenced by epoch), its history window and blob copies.

``Checkpointer.write`` is what every checkpoint of the turn loop goes through:

- with a blob store, the turn records past ``options.history_window`` are archived first
  (``mesh.runtime.history``; it waits only under backpressure) so the checkpoint stays bounded;
- the state is serialized (secret variables sealed with ``cipher``, else the process's data key)
  and written through the ``StateStore`` under the step's key, fenced by the state's epoch: a
  newer owner's epoch makes the store refuse it (``StaleEpochError``), which is raised as
  ``OwnershipLost`` so the runner stops working on the step;
- the write is watched by the observers (``checkpoint_scope`` around it, ``checkpoint_written``
  after it), and its duration is kept in the turn's record when the checkpoint closes a turn;
- with a blob store and ``options.blob_copies``, a copy of the checkpoint is put there in the
  background (a failed copy is logged, never fatal); ``drain`` waits for the copies and uploads.
"""

from __future__ import annotations

import asyncio
import logging
import time

from mesh.errors import CheckpointNotFound, MeshError, StaleEpochError
from mesh.runtime.history import HistoryArchiver, HistoryOptions
from mesh.runtime.observers import CheckpointWriting, CheckpointWritten, Observers
from mesh.runtime.options import RuntimeOptions
from mesh.runtime.state import StepState
from mesh.security import DataCipher
from mesh.store import BlobStore, StateStore, step_key

__all__ = ["Checkpointer", "OwnershipLost"]

log = logging.getLogger("mesh.runtime")


class OwnershipLost(MeshError):
    """This agent no longer owns the step (a newer epoch wrote it): stop working on it."""


class Checkpointer:
    """Reads and writes the checkpoints of one agent's steps (see the module doc)."""

    def __init__(
        self,
        store: StateStore,
        *,
        agent_id: str,
        observers: Observers,
        blobs: BlobStore | None = None,
        options: RuntimeOptions | None = None,
        cipher: DataCipher | None = None,
    ) -> None:
        """``observers`` are the runner's; ``agent_id`` is the owner written with each checkpoint."""
        self.store = store
        self.agent_id = agent_id
        self.observers = observers
        self.blobs = blobs
        self.options = options or RuntimeOptions()
        self.cipher = cipher
        self._blob_tasks: set[asyncio.Task[None]] = set()
        self.archiver = (
            HistoryArchiver(
                blobs,
                HistoryOptions(self.options.history_window, self.options.history_segment),
                cipher,
            )
            if blobs is not None
            else None
        )

    async def read(self, workflow_id: str, step_id: str) -> StepState | None:
        """The step's last checkpoint, or None."""
        try:
            ckpt = await self.store.read(step_key(workflow_id, step_id))
        except CheckpointNotFound:
            return None
        return StepState.from_bytes(ckpt.data, self.cipher)

    async def write(self, state: StepState) -> None:
        """Checkpoint ``state`` under its epoch; ``OwnershipLost`` if a newer epoch owns the step."""
        if self.archiver is not None:
            await self.archiver.before_write(
                state
            )  # bounded history (waits only under backpressure)
        data = state.to_bytes(self.cipher)
        key = step_key(state.workflow_id, state.step_id)
        t0 = time.perf_counter()
        with self.observers.checkpoint_scope(
            CheckpointWriting(state.workflow_id, state.step_id, state.turn, state.epoch, len(data))
        ):
            try:
                ckpt = await self.store.write(
                    key, data, epoch=state.epoch, owner=self.agent_id, workflow_id=state.workflow_id
                )
            except StaleEpochError as exc:
                log.warning("%s/%s: %s; abandoning the step", state.workflow_id, state.step_id, exc)
                raise OwnershipLost(str(exc)) from exc
            await self.observers.checkpoint_written(
                CheckpointWritten(
                    state.workflow_id,
                    state.step_id,
                    state.turn,
                    (time.perf_counter() - t0) * 1000,
                    len(data),
                    version=ckpt.version,
                )
            )
        if state.history and state.history[-1].turn == state.turn:
            # Persisted with the next checkpoint: the console's checkpoint-write KPI reads it.
            state.history[-1].checkpoint_ms = round((time.perf_counter() - t0) * 1000, 3)
        if self.blobs is not None and self.options.blob_copies:
            name = f"{state.workflow_id}/{state.step_id}/{state.turn:06d}-e{state.epoch}.msgpack"
            task = asyncio.create_task(self._blob_copy(name, data))
            self._blob_tasks.add(task)
            task.add_done_callback(self._blob_tasks.discard)

    async def _blob_copy(self, name: str, data: bytes) -> None:
        assert self.blobs is not None
        try:
            await self.blobs.put(name, data)
        except MeshError as exc:
            log.warning("blob copy %s failed: %s", name, exc)

    def forget(self, workflow_id: str, step_id: str) -> None:
        """The step left this agent: drop what the history archiver cached for it."""
        if self.archiver is not None:
            self.archiver.forget(workflow_id, step_id)

    async def drain(self) -> None:
        """Wait for background blob copies and turn-history uploads."""
        if self._blob_tasks:
            await asyncio.gather(*list(self._blob_tasks), return_exceptions=True)
        if self.archiver is not None:
            await self.archiver.drain()
