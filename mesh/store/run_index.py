"""The run index: one small document per workflow, kept current by the agents as they fold events.

Why a boundary here: ``mesh status``, ``mesh watch``, ``mesh runs`` (and the operator console to
come) must answer "where is workflow X" and "what ran lately" without replaying the workflow log
from offset zero, which costs time proportional to everything ever submitted. Agents already fold
every event into a ``WorkflowView``; they also write its summary here, and readers read one key.

The index is a *view*, never a source of truth: the log is. A reader that finds no entry (Redis
down, entry expired, agents not running yet) falls back to the log.

Schema (Redis; ``P`` is the key prefix, ``mesh:`` by default)::

    P run:{<workflow_id>}   hash
        events      int     how many distinct events were folded into ``doc`` (a version: writes
                            with fewer or equal events are refused, so a lagging agent never moves
                            a run back)
        updated_ms  int     wall time of the last folded event, Unix ms
        status      str     pending | running | paused | succeeded | failed
        doc         JSON    a ``RunSummary`` (below), ``"v": 1``
    P runs                  sorted set: member workflow id, score ``updated_ms``

The hash carries the workflow id as a hash tag, like the checkpoint keys, so the conditional write
is one single-slot script on Redis Cluster. The sorted set is updated after the hash (not in the same
script: it lives in another slot); a member whose hash has expired is removed by the next listing.
A finished run's hash gets the workflow's retention TTL (``expire``).

``RunSummary`` JSON: ``workflow_id``, ``name``, ``status``, ``created_ms``, ``updated_ms``,
``finished_ms`` (0 while running), ``trace_id`` ("" when unknown), ``submitted_by``, ``events``,
``steps``: a list of ``{id, role, status, owner, epoch, turns, resumes, last, input_tokens,
output_tokens, cost_usd, escalation_nonce, escalation_kind}`` in spec order; the run's
``input_tokens``, ``output_tokens`` and ``cost_usd`` are the sums over its steps, and
``budget_tokens``/``budget_cost_usd`` its declared budget (0: none). ``escalation_nonce`` and
``escalation_kind`` are set while a step is paused: a decision on it must carry that nonce
(``MeshClient.decide_escalation``). Fields added later default to 0 / "" when an older document
lacks them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

from mesh.errors import StoreError

__all__ = ["InMemoryRunIndex", "RunIndex", "RunSummary", "StepSummary"]

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class StepSummary:
    """One step of a run, as far as the log tells."""

    id: str
    role: str
    status: str
    """waiting | ready | running | paused | completed | failed"""
    owner: str = ""
    """Agent id of the current (latest) owner."""
    epoch: int = 0
    """Owner epoch of the latest start (fences checkpoint writes)."""
    turns: int = 0
    resumes: int = 0
    """Times the step was taken over from a checkpoint."""
    last: str = ""
    """Last progress, failure or escalation, one line."""
    input_tokens: int = 0
    """Reasoner input tokens of the step (provider-reported, else counted)."""
    output_tokens: int = 0
    """Reasoner output tokens of the step."""
    cost_usd: float = 0.0
    """Estimated cost of the step's reasoner calls, US dollars."""
    escalation_nonce: str = ""
    """While paused: the nonce a decision on this pause must carry."""
    escalation_kind: str = ""
    """While paused: spinning | budget | invalid_decision | reasoner_unavailable."""


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One workflow in the run index (the ``doc`` of its hash)."""

    workflow_id: str
    name: str
    status: str
    """pending | running | paused | succeeded | failed"""
    events: int
    """Distinct events folded; the version of this summary."""
    created_ms: int = 0
    updated_ms: int = 0
    finished_ms: int = 0
    trace_id: str = ""
    """Trace id of the workflow's root span (32 hex), when known."""
    submitted_by: str = ""
    steps: tuple[StepSummary, ...] = field(default_factory=tuple)
    input_tokens: int = 0
    """Reasoner input tokens of all steps."""
    output_tokens: int = 0
    """Reasoner output tokens of all steps."""
    cost_usd: float = 0.0
    """Estimated cost of all steps, US dollars."""
    budget_tokens: int = 0
    """The workflow's token budget (0: none)."""
    budget_cost_usd: float = 0.0
    """The workflow's cost budget in US dollars (0: none)."""

    @property
    def finished(self) -> bool:
        """Whether the run has ended (succeeded or failed)."""
        return self.status in ("succeeded", "failed")

    def to_json(self) -> str:
        """The stored document."""
        doc = asdict(self)
        doc["v"] = SCHEMA_VERSION
        return json.dumps(doc, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> RunSummary:
        """Parse a stored document; ``StoreError`` if it is not one."""
        try:
            doc = json.loads(raw)
            known = set(StepSummary.__dataclass_fields__)
            steps = tuple(StepSummary(**{k: v for k, v in s.items() if k in known}) for s in doc.get("steps", ()))
            return cls(
                workflow_id=str(doc["workflow_id"]), name=str(doc.get("name", "")), status=str(doc["status"]),
                events=int(doc["events"]), created_ms=int(doc.get("created_ms", 0)),
                updated_ms=int(doc.get("updated_ms", 0)), finished_ms=int(doc.get("finished_ms", 0)),
                trace_id=str(doc.get("trace_id", "")), submitted_by=str(doc.get("submitted_by", "")), steps=steps,
                input_tokens=int(doc.get("input_tokens", 0)), output_tokens=int(doc.get("output_tokens", 0)),
                cost_usd=float(doc.get("cost_usd", 0.0)), budget_tokens=int(doc.get("budget_tokens", 0)),
                budget_cost_usd=float(doc.get("budget_cost_usd", 0.0)),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StoreError(f"run index entry is not a run summary: {type(exc).__name__}: {exc}") from None


@runtime_checkable
class RunIndex(Protocol):
    """Latest summary per workflow, and recent workflows by update time."""

    async def record(self, run: RunSummary) -> bool:
        """Store ``run`` unless the index already holds one with as many events or more; True if stored."""
        ...

    async def get(self, workflow_id: str) -> RunSummary | None:
        """The summary of one workflow, or None if the index has none."""
        ...

    async def list(
        self, *, status: str | None = None, name: str | None = None, updated_since_ms: int = 0, limit: int = 50
    ) -> Sequence[RunSummary]:
        """Most recently updated runs first, filtered (``name`` matches as a substring)."""
        ...

    async def expire(self, workflow_id: str, ttl_s: int) -> None:
        """Let a (finished) run's entry disappear after ``ttl_s`` seconds."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def matches(run: RunSummary, status: str | None, name: str | None, since_ms: int) -> bool:
    return (
        (status is None or run.status == status)
        and (name is None or name in run.name or name in run.workflow_id)
        and run.updated_ms >= since_ms
    )


class InMemoryRunIndex:
    """The run index in a dict (unit tests, single-process use); same contract as Redis."""

    def __init__(self, *, clock_ms: Callable[[], int] | None = None) -> None:
        """An empty index; ``clock_ms`` (Unix ms) decides when entries expire."""
        import time

        self._clock = clock_ms or (lambda: int(time.time() * 1000))
        self._runs: dict[str, RunSummary] = {}
        self._expires_at: dict[str, int] = {}

    def _live(self, workflow_id: str) -> RunSummary | None:
        deadline = self._expires_at.get(workflow_id)
        if deadline is not None and self._clock() >= deadline:
            self._runs.pop(workflow_id, None)
            self._expires_at.pop(workflow_id, None)
        return self._runs.get(workflow_id)

    async def record(self, run: RunSummary) -> bool:
        """Store unless an entry with as many events or more exists."""
        current = self._live(run.workflow_id)
        if current is not None and current.events >= run.events:
            return False
        self._runs[run.workflow_id] = run
        return True

    async def get(self, workflow_id: str) -> RunSummary | None:
        """The entry, if any and not expired."""
        return self._live(workflow_id)

    async def list(
        self, *, status: str | None = None, name: str | None = None, updated_since_ms: int = 0, limit: int = 50
    ) -> Sequence[RunSummary]:
        """Newest first, filtered."""
        live = [r for wf in list(self._runs) if (r := self._live(wf)) is not None]
        live.sort(key=lambda r: (r.updated_ms, r.workflow_id), reverse=True)
        return [r for r in live if matches(r, status, name, updated_since_ms)][: max(limit, 0)]

    async def expire(self, workflow_id: str, ttl_s: int) -> None:
        """Expire the entry after ``ttl_s`` seconds."""
        if workflow_id in self._runs:
            self._expires_at[workflow_id] = self._clock() + ttl_s * 1000

    async def aclose(self) -> None:
        """Nothing to release."""
