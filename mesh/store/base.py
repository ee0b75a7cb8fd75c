"""The StateStore seam: versioned checkpoints fenced by an owner epoch, and a durable blob store.

Why a boundary here: the runtime's crash-safety rests on two promises — a checkpoint once
acknowledged is never lost, and a zombie owner (paused, partitioned) can never overwrite a newer
owner's checkpoint. Those fit in four calls (claim, write, read, expire), so the runtime is the
same over Redis and over the in-memory store used by unit tests. redis exceptions never cross this
boundary: they become ``mesh.errors.StoreError`` subclasses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from mesh.store.retention import SweepResult

from mesh.errors import UsageError

__all__ = ["BlobStore", "Checkpoint", "StateStore", "agent_key", "hash_tag", "step_key", "workflow_tag"]


def workflow_tag(workflow_id: str) -> str:
    """``{<workflow id>}``: the hash tag every key of one workflow carries.

    Redis Cluster places a key by the text between its first ``{`` and the next ``}``, so every
    key holding this tag is in one slot and a script or transaction over several of them (a
    checkpoint and the workflow's index, say) runs on one node instead of failing with CROSSSLOT.
    """
    return f"{{{workflow_id}}}"


def hash_tag(key: str) -> str:
    """What Redis Cluster hashes for ``key``: the text of its hash tag if it has one, else all of it."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def require_workflow_key(key: str, workflow_id: str) -> None:
    """Raise ``UsageError`` unless ``key`` carries ``workflow_id``'s hash tag (so it shares its slot)."""
    if hash_tag(key) != hash_tag(workflow_tag(workflow_id)):
        raise UsageError(
            f"checkpoint key {key!r} is listed under workflow {workflow_id!r} but does not carry its hash "
            f"tag {workflow_tag(workflow_id)!r}; build keys with step_key() or workflow_tag()"
        )


def step_key(workflow_id: str, step_id: str) -> str:
    """Checkpoint key of one step of one workflow (carries the workflow's hash tag)."""
    return f"wf:{workflow_tag(workflow_id)}:step:{step_id}"


def agent_key(agent_id: str) -> str:
    """Checkpoint key of one agent's own state (gossip map, counters)."""
    return f"agent:{agent_id}"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One stored version of a state."""

    key: str
    """What it is the state of (``step_key`` or ``agent_key``)."""

    version: int
    """1, 2, 3, ... per key; every accepted write adds one."""

    epoch: int
    """Owner epoch the writer held."""

    data: bytes
    """The state, opaque to the store."""

    written_at_ms: int
    """Store-side wall time of the write, Unix milliseconds."""

    owner: str = ""
    """Who wrote it."""


@runtime_checkable
class StateStore(Protocol):
    """Versioned, fenced checkpoints."""

    async def claim(self, key: str, owner: str) -> int:
        """Become the owner of ``key``: return a new epoch, higher than every earlier one.

        Writes with an older epoch are refused from then on (fencing).
        """
        ...

    async def write(
        self,
        key: str,
        data: bytes,
        *,
        epoch: int,
        owner: str = "",
        workflow_id: str | None = None,
    ) -> Checkpoint:
        """Store a new version atomically; raise ``StaleEpochError`` if a newer epoch holds the key.

        With ``workflow_id`` the key is also listed for ``expire_workflow``; it must then carry
        that workflow's hash tag (``step_key``, ``workflow_tag``), else ``UsageError``.
        """
        ...

    async def read(self, key: str, version: int | None = None) -> Checkpoint:
        """The latest version (or a given one still kept); ``CheckpointNotFound`` if none."""
        ...

    async def expire_workflow(self, workflow_id: str, ttl_s: int) -> int:
        """Let every checkpoint written for a finished workflow expire in ``ttl_s`` seconds; return how many keys."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class BlobStore(Protocol):
    """Durable, write-once blobs (per-turn checkpoint copies for audit and cold restore)."""

    async def put(self, name: str, data: bytes) -> str:
        """Store ``data`` durably under ``name`` (a ``/``-separated path); return its URI."""
        ...

    async def get(self, name: str) -> bytes:
        """The blob's bytes; ``CheckpointNotFound`` if it does not exist."""
        ...

    async def list(self, prefix: str) -> Sequence[str]:
        """Names under ``prefix``, sorted."""
        ...

    async def delete_older_than(
        self, max_age_s: float, *, now_s: float | None = None, dry_run: bool = False
    ) -> SweepResult:
        """Retention: delete blobs written ``max_age_s`` or more before ``now_s`` (default: now)."""
        ...

    async def aclose(self) -> None:
        """Release resources."""
        ...
