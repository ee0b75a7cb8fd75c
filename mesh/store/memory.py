"""In-memory StateStore and BlobStore with the same contract as Redis and the filesystem."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from mesh.errors import CheckpointNotFound, StaleEpochError, UsageError
from mesh.store.base import Checkpoint, require_workflow_key
from mesh.store.retention import SweepResult

__all__ = ["InMemoryBlobStore", "InMemoryStateStore"]


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
    """Blobs in a dict."""

    def __init__(self) -> None:
        """Create an empty store."""
        self._blobs: dict[str, bytes] = {}
        self._written: dict[str, float] = {}

    async def put(self, name: str, data: bytes) -> str:
        """Store a blob."""
        parts = [p for p in name.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise UsageError(f"invalid blob name {name!r}")
        self._blobs[name] = bytes(data)
        self._written[name] = time.time()
        return f"memory://{name}"

    async def get(self, name: str) -> bytes:
        """Read a blob."""
        try:
            return self._blobs[name]
        except KeyError:
            raise CheckpointNotFound(f"no blob {name!r}") from None

    async def list(self, prefix: str) -> Sequence[str]:
        """Names under a prefix."""
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
        """Nothing to release."""
