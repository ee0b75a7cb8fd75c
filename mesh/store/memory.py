"""The in-memory twin of every store seam: same contract (and contract suite) as the Redis adapters.

Products, not test hacks: a single-process mesh runs on them. Nothing here survives the process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from mesh.errors import CheckpointNotFound, StaleEpochError, StoreUnavailable, UsageError
from mesh.store.base import Checkpoint, Endorsement, require_workflow_key
from mesh.store.retention import SweepResult

__all__ = [
    "InMemoryBlobStore",
    "InMemoryContextMapStore",
    "InMemoryKeyringStore",
    "InMemoryStateStore",
    "InMemoryVoteLedger",
]


@dataclass
class _Entry:
    fence: int = 0
    version: int = 0
    versions: dict[int, Checkpoint] = field(default_factory=dict)
    expires_at: float | None = None


class InMemoryStateStore:
    """Fenced, versioned checkpoints in a dict (one process)."""

    def __init__(self, *, keep_versions: int = 50) -> None:
        """Create an empty store keeping the last ``keep_versions`` versions per key."""
        self.keep_versions = keep_versions
        self._entries: dict[str, _Entry] = {}
        self._index: dict[str, set[str]] = {}
        self._lock = asyncio.Lock()

    def _entry(self, key: str) -> _Entry:
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= time.monotonic():
            del self._entries[key]
            entry = None
        if entry is None:
            entry = self._entries[key] = _Entry()
        return entry

    async def claim(self, key: str, owner: str) -> int:
        """Take ownership with a new, higher epoch."""
        async with self._lock:
            entry = self._entry(key)
            entry.fence += 1
            return entry.fence

    async def current_epoch(self, key: str) -> int:
        """The highest epoch claimed or written."""
        return self._entry(key).fence

    async def write(
        self,
        key: str,
        data: bytes,
        *,
        epoch: int,
        owner: str = "",
        workflow_id: str | None = None,
    ) -> Checkpoint:
        """Write a new version unless a newer epoch holds the key."""
        if workflow_id:
            require_workflow_key(key, workflow_id)
        async with self._lock:
            entry = self._entry(key)
            if epoch < entry.fence:
                raise StaleEpochError(
                    f"checkpoint write to {key!r} with epoch {epoch} refused: epoch {entry.fence} owns it now",
                    attempted_epoch=epoch,
                    current_epoch=entry.fence,
                )
            entry.fence = epoch
            entry.version += 1
            ckpt = Checkpoint(
                key=key,
                version=entry.version,
                epoch=epoch,
                data=bytes(data),
                written_at_ms=int(time.time() * 1000),
                owner=owner,
            )
            entry.versions[entry.version] = ckpt
            entry.versions.pop(entry.version - self.keep_versions, None)
            if workflow_id:
                self._index.setdefault(workflow_id, set()).add(key)
            return ckpt

    async def read(self, key: str, version: int | None = None) -> Checkpoint:
        """Latest or a kept version."""
        entry = self._entry(key)
        v = entry.version if version is None else version
        ckpt = entry.versions.get(v)
        if ckpt is None:
            which = "any version" if version is None else f"version {version}"
            raise CheckpointNotFound(f"no checkpoint {key!r} ({which})")
        return ckpt

    async def expire_workflow(self, workflow_id: str, ttl_s: int) -> int:
        """Expire a workflow's checkpoints after ``ttl_s`` seconds."""
        keys = self._index.get(workflow_id, set())
        for key in keys:
            self._entry(key).expires_at = time.monotonic() + ttl_s
        return len(keys)

    async def aclose(self) -> None:
        """Nothing to release."""


class InMemoryBlobStore:
    """Blobs in a dict; using it after ``aclose`` is a ``UsageError``."""

    def __init__(self) -> None:
        """Create an empty store."""
        self._blobs: dict[str, bytes] = {}
        self._written: dict[str, float] = {}
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise UsageError("in-memory blob store used after aclose()")

    async def put(self, name: str, data: bytes) -> str:
        """Store a blob."""
        self._check()
        if not isinstance(data, bytes | bytearray | memoryview):
            raise UsageError(f"blob data is bytes, got {type(data).__name__}")
        parts = [p for p in name.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise UsageError(f"invalid blob name {name!r}")
        self._blobs[name] = bytes(data)
        self._written[name] = time.time()
        return f"memory://{name}"

    async def get(self, name: str) -> bytes:
        """Read a blob."""
        self._check()
        try:
            return self._blobs[name]
        except KeyError:
            raise CheckpointNotFound(f"no blob {name!r}") from None

    async def list(self, prefix: str) -> Sequence[str]:
        """Names under a prefix."""
        self._check()
        return sorted(n for n in self._blobs if n.startswith(prefix))

    async def delete_older_than(
        self, max_age_s: float, *, now_s: float | None = None, dry_run: bool = False
    ) -> SweepResult:
        """Retention: drop blobs put ``max_age_s`` or more ago."""
        now = time.time() if now_s is None else now_s
        old = [n for n, t in self._written.items() if now - t >= max_age_s]
        freed = sum(len(self._blobs[n]) for n in old)
        kept = len(self._blobs) - len(old)
        if not dry_run:
            for n in old:
                del self._blobs[n], self._written[n]
        return SweepResult(deleted=len(old), kept=kept, bytes_freed=freed, dirs_removed=0)

    async def aclose(self) -> None:
        """Mark the store closed (idempotent); later calls raise ``UsageError``."""
        self._closed = True

    def __len__(self) -> int:
        return len(self._blobs)

    def __contains__(self, name: object) -> bool:
        return name in self._blobs


class InMemoryKeyringStore:
    """A ``KeyringStore`` in a dict (one process: agents in it find each other)."""

    def __init__(self) -> None:
        """An empty keyring table."""
        self._records: dict[str, str] = {}

    async def publish(self, agent_id: str, record: str) -> None:
        """Replace ``agent_id``'s record."""
        self._records[agent_id] = record

    async def records(self) -> dict[str, str]:
        """Every published record text, by agent id."""
        return dict(self._records)

    async def aclose(self) -> None:
        """Nothing to release."""


class InMemoryContextMapStore:
    """A ``ContextMapStore`` in a dict; ``available = False`` makes every call raise ``StoreUnavailable``."""

    def __init__(self) -> None:
        """An empty, reachable store."""
        self.saved: dict[tuple[str, str], bytes] = {}
        """Map bytes by ``(workflow_id, replica_id)``."""
        self._index: dict[str, set[str]] = {}
        self.available = True
        """Switch off to stand for an unreachable store (tests of a node's retries)."""
        self.saves = 0
        """Successful saves, for tests of debouncing."""

    async def save(self, workflow_id: str, replica_id: str, data: bytes) -> None:
        """Index the workflow, keep the bytes."""
        self._check()
        self._index.setdefault(replica_id, set()).add(workflow_id)
        self.saved[(workflow_id, replica_id)] = data
        self.saves += 1

    async def load(self, workflow_id: str, replica_id: str) -> bytes | None:
        """The saved bytes, or None."""
        self._check()
        return self.saved.get((workflow_id, replica_id))

    async def workflows(self, replica_id: str) -> list[str]:
        """Workflow ids indexed for ``replica_id``, sorted."""
        self._check()
        return sorted(self._index.get(replica_id, ()))

    async def retire(self, workflow_id: str, replica_id: str, ttl_s: int) -> None:
        """Out of the index and dropped (no TTL in memory: the process is the lifetime)."""
        self._check()
        self._index.get(replica_id, set()).discard(workflow_id)
        self.saved.pop((workflow_id, replica_id), None)

    async def aclose(self) -> None:
        """Nothing to release."""

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailable("in-memory context map store is switched off")


class InMemoryVoteLedger:
    """A ``VoteLedger`` in one process's memory (lost on restart: only for tests and throwaway meshes)."""

    def __init__(self) -> None:
        """An empty ledger."""
        self._floors: dict[tuple[str, str], int] = {}
        self._votes: dict[tuple[str, str, int], str] = {}
        self._ballots: dict[tuple[str, str], tuple[str, str]] = {}

    async def endorse(self, workflow_id: str, slot: str, epoch: int, value_hash: str) -> Endorsement:
        """See ``VoteLedger.endorse``."""
        floor = self._floors.get((workflow_id, slot), -1)
        if epoch < floor:
            return Endorsement("stale", "", floor)
        endorsed = self._votes.setdefault((workflow_id, slot, epoch), value_hash)
        self._floors[(workflow_id, slot)] = max(floor, epoch)
        return Endorsement("ok" if endorsed == value_hash else "taken", endorsed, max(floor, epoch))

    async def record_ballot(self, workflow_id: str, proposal_id: str, verdict: str, reason: str) -> tuple[str, str]:
        """See ``VoteLedger.record_ballot``."""
        return self._ballots.setdefault((workflow_id, proposal_id), (verdict, reason))

    async def recorded_ballot(self, workflow_id: str, proposal_id: str) -> tuple[str, str] | None:
        """See ``VoteLedger.recorded_ballot``."""
        return self._ballots.get((workflow_id, proposal_id))

    async def aclose(self) -> None:
        """Nothing to release."""
