"""The history of a fault campaign: every process's events, in one list, saved as JSONL.

Sources, each read back from where the process left it (never from the campaign's own belief):

* ``log``: the workflow event log (Kafka), with the record timestamps.
* ``trace``: the trace-event topic (``step.started``, ``turn.completed``, in-doubt effects...).
* ``dlq``: the dead-letter topic (what a consumer refused, and who sent it).
* ``votes``: proposals and decisions of the quorum, when a scenario votes.
* ``audit``: the mock services' audit log (every HTTP call, fsynced before it was answered).
* ``store``: every kept version of every step checkpoint in Redis (epoch, owner, turn, status).
* ``gossip``: each agent's persisted context map of each workflow, at the end.
* ``fault`` and ``process``: what the campaign did (signals, restarts, cuts) and how each process
  ended; the campaign's own records, used to tell an injected fault from a crash.

The checker (``mesh.chaos.check``) reads nothing else, so a saved history can be checked again
(``mesh chaos check history.jsonl``) and a synthetic one can hold any anomaly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Event", "History", "SOURCES"]

SOURCES: tuple[str, ...] = (
    "log",
    "trace",
    "dlq",
    "votes",
    "audit",
    "store",
    "gossip",
    "fault",
    "process",
)
"""Every source a history event may come from."""


@dataclass(frozen=True)
class Event:
    """One thing one process did, as its own record says."""

    source: str
    """Where it was read (one of ``SOURCES``)."""

    kind: str
    """What happened: an envelope kind (``workflow.step_started``), ``POST /auth/token``,
    ``checkpoint``, ``fault.sigkill``, ``process.exit``..."""

    at_ms: int = 0
    """When, Unix milliseconds (the Kafka record time, the audit line time, the store write time)."""

    workflow_id: str = ""
    """The workflow it belongs to, when it belongs to one."""

    step_id: str = ""
    """The step, when it is about one."""

    actor: str = ""
    """Who did it: the envelope's sender, the agent id of a process, the checkpoint's writer."""

    data: Mapping[str, Any] = field(default_factory=dict)
    """The rest, JSON-safe: payload fields, HTTP status, epoch, turn..."""

    seq: int = 0
    """Position in the history (order of reading within a source; the log keeps partition order)."""

    def get(self, name: str, default: Any = None) -> Any:
        """A field of ``data``."""
        return self.data.get(name, default)

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON object."""
        return {
            "seq": self.seq, "source": self.source, "kind": self.kind, "at_ms": self.at_ms,
            "workflow_id": self.workflow_id, "step_id": self.step_id, "actor": self.actor,
            "data": dict(self.data),
        }  # fmt: skip

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Event:
        """Inverse of ``to_json``."""
        return cls(
            source=str(obj["source"]), kind=str(obj["kind"]), at_ms=int(obj.get("at_ms", 0)),
            workflow_id=str(obj.get("workflow_id", "")), step_id=str(obj.get("step_id", "")),
            actor=str(obj.get("actor", "")), data=dict(obj.get("data", {})), seq=int(obj.get("seq", 0)),
        )  # fmt: skip

    def brief(self) -> str:
        """One line that names the event (for anomaly evidence)."""
        where = "/".join(p for p in (self.workflow_id, self.step_id) if p)
        fields = ", ".join(f"{k}={v}" for k, v in sorted(self.data.items()) if _short(v))
        who = f" by {self.actor}" if self.actor else ""
        return (
            f"#{self.seq} {self.source} {self.kind}{who} {where} [{fields}] @{self.at_ms}".replace(
                "  ", " "
            )
        )


def _short(value: Any) -> bool:
    return isinstance(value, (int, float, bool, str)) and len(str(value)) <= 80


class History:
    """An ordered list of events, appended by source readers and read by the checker."""

    def __init__(self, events: Iterable[Event] = ()) -> None:
        """A history holding ``events`` (renumbered in order)."""
        self._events: list[Event] = []
        for event in events:
            self.add(event)

    def add(self, event: Event) -> Event:
        """Append one event; it gets the next ``seq``."""
        numbered = Event(
            source=event.source, kind=event.kind, at_ms=event.at_ms, workflow_id=event.workflow_id,
            step_id=event.step_id, actor=event.actor, data=event.data, seq=len(self._events) + 1,
        )  # fmt: skip
        self._events.append(numbered)
        return numbered

    def record(self, source: str, kind: str, /, **fields: Any) -> Event:
        """Append an event built from keyword fields (``at_ms``, ``workflow_id``, ``step_id``,
        ``actor`` are the event's own; everything else goes to ``data``, ``source`` and ``kind``
        included: a trace event's attributes may carry any name)."""
        own = {
            k: fields.pop(k) for k in ("at_ms", "workflow_id", "step_id", "actor") if k in fields
        }
        return self.add(Event(source=source, kind=kind, data=fields, **own))

    def __iter__(self) -> Iterator[Event]:
        return iter(self._events)

    def __len__(self) -> int:
        return len(self._events)

    def of(self, source: str, *kinds: str) -> list[Event]:
        """Events of one source (and of these kinds, if given), in history order."""
        return [e for e in self._events if e.source == source and (not kinds or e.kind in kinds)]

    def workflows(self) -> list[str]:
        """Workflow ids submitted in the log, in submission order."""
        seen: dict[str, None] = {}
        for e in self.of("log", "workflow.submitted"):
            seen.setdefault(e.workflow_id, None)
        return list(seen)

    def save(self, path: Path) -> None:
        """Write one JSON object per line."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as out:
            for event in self._events:
                out.write(
                    json.dumps(event.to_json(), separators=(",", ":"), sort_keys=True, default=str)
                    + "\n"
                )

    @classmethod
    def load(cls, path: Path) -> History:
        """Read a history saved by ``save``."""
        with path.open(encoding="utf-8") as handle:
            return cls(Event.from_json(json.loads(line)) for line in handle if line.strip())
