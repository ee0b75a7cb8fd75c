"""Every persistence seam of the mesh: checkpoints, blobs, the keyring, gossip maps, vote ledgers,
dead-letter claims and the reasoner's rate limiter.

Each Protocol has an in-memory twin (``mesh.store.memory``) and a Redis adapter
(``mesh.store.redis``; blobs: a file tree or S3), and one contract suite in ``tests/contracts``
runs against each. The rest of the mesh receives these objects and never imports redis.

``StateStore``: versioned checkpoints fenced by an owner epoch.

Why a boundary here: the runtime's crash-safety rests on two promises — a checkpoint once
acknowledged is never lost, and a zombie owner (paused, partitioned) can never overwrite a newer
owner's checkpoint. Those fit in four calls (claim, write, read, expire), so the runtime is the
same over Redis and over the in-memory store used by unit tests. redis exceptions never cross this
boundary: they become ``mesh.errors.StoreError`` subclasses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from mesh.store.retention import SweepResult

from mesh.errors import UsageError

__all__ = [
    "BlobStore",
    "Checkpoint",
    "ContextMapStore",
    "DeadLetterClaims",
    "Endorsement",
    "KeyringStore",
    "RateLimiter",
    "RateTicket",
    "StateStore",
    "VoteLedger",
    "agent_key",
    "hash_tag",
    "step_key",
    "workflow_tag",
]


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


@runtime_checkable
class KeyringStore(Protocol):
    """Published key records by agent id (one shared table), so agents that start later find each other.

    Why a boundary here: the keyring carries keys, it does not vouch for them; whether a record is
    admitted is ``mesh.security``'s policy. The store only keeps the latest record text per agent
    id, so any shared table (a Redis hash, a dict) fits. Errors are ``StoreUnavailable``.
    """

    async def publish(self, agent_id: str, record: str) -> None:
        """Replace ``agent_id``'s record with ``record`` (a ``KeyRecord`` as JSON)."""
        ...

    async def records(self) -> dict[str, str]:
        """Every published record text, by agent id."""
        ...

    async def aclose(self) -> None:
        """Release connections (a client shared with other stores stays open)."""
        ...


@runtime_checkable
class ContextMapStore(Protocol):
    """Each gossip replica's saved map per workflow, and the list of them to restore after a crash.

    Why a boundary here: a gossip node restores every map of its agent on start, so besides save
    and load it needs the list of workflows the replica held; a finished workflow's map leaves that
    list and expires. Maps are opaque bytes here (``mesh.gossip`` holds the format and seals the
    secret values). Errors are ``StoreUnavailable`` (the node retries later).
    """

    async def save(self, workflow_id: str, replica_id: str, data: bytes) -> None:
        """Index ``workflow_id`` for ``replica_id`` and store its map (index first: a crash in between
        leaves an entry whose map loads as None, never a map the restart cannot find)."""
        ...

    async def load(self, workflow_id: str, replica_id: str) -> bytes | None:
        """The saved map, or None."""
        ...

    async def workflows(self, replica_id: str) -> list[str]:
        """Workflow ids of every map indexed for ``replica_id``, sorted."""
        ...

    async def retire(self, workflow_id: str, replica_id: str, ttl_s: int) -> None:
        """A finished workflow's map: out of the index (not restored), expiring after ``ttl_s`` seconds."""
        ...

    async def aclose(self) -> None:
        """Release connections (a client shared with other stores stays open)."""
        ...


@dataclass(frozen=True, slots=True)
class Endorsement:
    """The ledger's answer to "may I endorse this value in this slot and epoch?"."""

    status: Literal["ok", "stale", "taken"]
    """``ok``: endorsed (now or before); ``stale``: a later epoch was voted; ``taken``: another value."""
    value_hash: str = ""
    """The value endorsed in that slot and epoch (the earlier one when ``taken``)."""
    floor: int = 0
    """The highest epoch this validator voted in for the slot."""


@runtime_checkable
class VoteLedger(Protocol):
    """What a validator voted, persisted before the ballot leaves the process.

    Why a boundary here: a validator's safety rests on never endorsing two values for one slot and
    epoch, and never voting twice differently on one proposal. Kept only in memory, both promises
    die with the process: after a restart it would endorse a second value and be quarantined by
    its peers as an equivocator. Every method is atomic and first-writer-wins, so two incarnations
    of one validator racing (a zombie and its successor) still record one answer. Errors are
    ``StoreUnavailable``: a validator that cannot persist its vote does not vote.
    """

    async def endorse(
        self, workflow_id: str, slot: str, epoch: int, value_hash: str
    ) -> Endorsement:
        """Endorse ``value_hash`` in ``slot`` at ``epoch`` unless another value or a later epoch holds it."""
        ...

    async def record_ballot(
        self, workflow_id: str, proposal_id: str, verdict: str, reason: str
    ) -> tuple[str, str]:
        """Record the verdict on ``proposal_id``; return the one recorded first ``(verdict, reason)``."""
        ...

    async def recorded_ballot(self, workflow_id: str, proposal_id: str) -> tuple[str, str] | None:
        """The verdict recorded on ``proposal_id`` ``(verdict, reason)``, or None."""
        ...

    async def aclose(self) -> None:
        """Release connections (a client shared with other stores stays open)."""
        ...


@runtime_checkable
class DeadLetterClaims(Protocol):
    """Decides which consumer dead-letters a bad record: the first to claim it.

    Why a boundary here: every role is its own consumer group over the workflow log and every
    gossip node reads gossip and votes, so one bad record is refused by many consumers; each must
    skip it, but only the first should dead-letter it. The claim is keyed by (topic, partition,
    offset), the record's identity in the log, and needs state shared between processes (Redis
    ``SET NX`` with a TTL); the in-memory twin keeps the same contract inside one process.

    ``claim`` may be awaited concurrently from many consumers and processes; exactly one call per
    (topic, partition, offset) returns True while the claim lives. It does not raise when the
    shared state cannot be reached: it returns True, since a duplicate dead letter is better than
    a lost one.
    """

    async def claim(self, topic: str, partition: int, offset: int) -> bool:
        """True for the first caller of this record, False for every later one."""
        ...

    async def aclose(self) -> None:
        """Release connections (a client shared with other stores stays open)."""
        ...


@dataclass(frozen=True, slots=True)
class RateTicket:
    """A call the limiter let through, with the tokens it reserved."""

    member: str
    """The call's entry in the window ("" when nothing was recorded: no limits, store down)."""
    tokens: int
    """Tokens reserved (the estimate)."""
    waited_s: float
    """Seconds ``acquire`` waited."""
    granted_at_ms: int = 0
    """The limiter's clock at the grant, Unix ms (Redis time for Redis; 0 when nothing was recorded)."""


@runtime_checkable
class RateLimiter(Protocol):
    """Paces reasoner calls: requests and tokens per sliding window, and a hold every caller honours.

    Why a boundary here: a provider's limits apply to the API key, not to one process. Ten agents
    that each stay under the limit exceed it together, and a 429 seen by one agent says the others
    should wait too, so the window and the hold live in shared state (Redis); the in-memory twin
    paces the tasks of one process the same way.

    ``acquire`` may be awaited concurrently from many tasks and processes; each returns when its
    call may go. ``settle`` and ``hold`` never wait for the window. None of them raises when the
    shared state cannot be reached: the call goes through unpaced (the provider's own limits
    still apply) and the limiter logs it.
    """

    async def acquire(self, tokens: int) -> RateTicket:
        """Wait until one more request of about ``tokens`` tokens fits (and no hold is in force)."""
        ...

    async def settle(self, ticket: RateTicket, tokens: int) -> None:
        """Replace the call's estimate by what the provider reported (input plus output tokens)."""
        ...

    async def hold(self, seconds: float) -> None:
        """Nobody calls for ``seconds`` (the provider's ``Retry-After``)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
