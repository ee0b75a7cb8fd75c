"""The in-memory twin of every store seam: same contract (and contract suite) as the Redis adapters.

Products, not test hacks: a single-process mesh runs on them. Nothing here survives the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from mesh.errors import CheckpointNotFound, StaleEpochError, StoreUnavailable, UsageError
from mesh.store.base import Checkpoint, Endorsement, RateTicket, require_workflow_key
from mesh.store.retention import SweepResult

__all__ = [
    "InMemoryBlobStore",
    "InMemoryContextMapStore",
    "InMemoryDeadLetterClaims",
    "InMemoryKeyringStore",
    "InMemoryRateLimiter",
    "InMemoryStateStore",
    "InMemoryVoteLedger",
]

log = logging.getLogger(__name__)


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
        if (
            entry is not None
            and entry.expires_at is not None
            and entry.expires_at <= time.monotonic()
        ):
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

    async def endorse(
        self, workflow_id: str, slot: str, epoch: int, value_hash: str
    ) -> Endorsement:
        """See ``VoteLedger.endorse``."""
        floor = self._floors.get((workflow_id, slot), -1)
        if epoch < floor:
            return Endorsement("stale", "", floor)
        endorsed = self._votes.setdefault((workflow_id, slot, epoch), value_hash)
        self._floors[(workflow_id, slot)] = max(floor, epoch)
        return Endorsement("ok" if endorsed == value_hash else "taken", endorsed, max(floor, epoch))

    async def record_ballot(
        self, workflow_id: str, proposal_id: str, verdict: str, reason: str
    ) -> tuple[str, str]:
        """See ``VoteLedger.record_ballot``."""
        return self._ballots.setdefault((workflow_id, proposal_id), (verdict, reason))

    async def recorded_ballot(self, workflow_id: str, proposal_id: str) -> tuple[str, str] | None:
        """See ``VoteLedger.recorded_ballot``."""
        return self._ballots.get((workflow_id, proposal_id))

    async def aclose(self) -> None:
        """Nothing to release."""


class InMemoryDeadLetterClaims:
    """A ``DeadLetterClaims`` shared by every consumer in this process (the in-memory broker holds one)."""

    def __init__(self) -> None:
        """An empty claim set."""
        self._claimed: set[tuple[str, int, int]] = set()

    async def claim(self, topic: str, partition: int, offset: int) -> bool:
        """True the first time a record is claimed."""
        key = (topic, partition, offset)
        if key in self._claimed:
            return False
        self._claimed.add(key)
        return True

    async def aclose(self) -> None:
        """Nothing to release."""


class InMemoryRateLimiter:
    """A ``RateLimiter`` for the tasks of one process: the Redis limiter's window, settling and hold.

    The window is a log of the calls granted in the last ``window_s`` seconds (monotonic clock);
    a call waits while ``rpm`` calls, or ``tpm`` tokens with its own, are in it, or while a hold
    is in force. Checks and grants run without an ``await`` in between, so concurrent tasks of
    one event loop cannot overshoot.
    """

    def __init__(self, *, rpm: int = 0, tpm: int = 0, window_s: float = 60.0) -> None:
        """Limit to ``rpm`` requests and ``tpm`` tokens per ``window_s`` seconds (0: that limit is off)."""
        if rpm < 0 or tpm < 0 or window_s <= 0:
            raise ValueError("rpm and tpm must be >= 0 and window_s > 0")
        self.rpm, self.tpm, self.window_s = rpm, tpm, window_s
        self._calls: dict[str, tuple[float, int]] = {}
        """Calls in the window, oldest first: call id -> (monotonic grant time, tokens)."""
        self._hold_until = 0.0

    async def acquire(self, tokens: int) -> RateTicket:
        """Wait for room in the window (and for any hold to pass), then record the call."""
        call_id = uuid.uuid4().hex
        tokens = max(int(tokens), 0)
        if self.tpm:
            tokens = min(
                tokens, self.tpm
            )  # a call larger than the limit goes alone in an empty window
        started = time.monotonic()
        while True:
            wait_s = self._wait_s(tokens)
            if wait_s <= 0:
                self._calls[call_id] = (time.monotonic(), tokens)
                return RateTicket(
                    f"{tokens}:{call_id}",
                    tokens,
                    time.monotonic() - started,
                    int(time.time() * 1000),
                )
            await asyncio.sleep(min(wait_s, self.window_s))

    async def settle(self, ticket: RateTicket, tokens: int) -> None:
        """Record the call's real size (input plus output tokens) in place of its estimate."""
        if not ticket.member or not self.tpm:
            return
        call_id = ticket.member.split(":", 1)[1]
        granted = self._calls.get(call_id)
        if granted is not None:  # else it has left the window already
            self._calls[call_id] = (granted[0], max(int(tokens), 0))

    async def hold(self, seconds: float) -> None:
        """Make every caller of this limiter wait ``seconds`` before its next call."""
        ms = int(seconds * 1000)
        if ms <= 0:
            return
        self._hold_until = max(self._hold_until, time.monotonic() + ms / 1000)
        log.info(
            "provider asked to retry after %.3f s: every caller of this process waits", seconds
        )

    async def aclose(self) -> None:
        """Nothing to release."""

    def _wait_s(self, tokens: int) -> float:
        """Seconds until a call of ``tokens`` may go (<= 0: now); drops calls that left the window."""
        now = time.monotonic()
        if self._hold_until > now:
            return self._hold_until - now
        for call_id, (granted_at, _) in list(self._calls.items()):
            if granted_at > now - self.window_s:
                break
            del self._calls[call_id]
        if not self._calls:
            return 0.0
        oldest_at = next(iter(self._calls.values()))[0]
        free_in_s = oldest_at + self.window_s - now + 0.001
        if self.rpm and len(self._calls) >= self.rpm:
            return free_in_s
        if self.tpm and sum(t for _, t in self._calls.values()) + tokens > self.tpm:
            return free_in_s
        return 0.0
