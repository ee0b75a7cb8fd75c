"""Task events for the ingress tests: one good event and generated bad ones, each with the reason."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from typing import Any

from protocols import TASK_EVENT_TYPE

WORKFLOW = "patient-reconciliation"


def good_event(*, source: str = "urn:test:producer", event_id: str = "", workflow_id: str = "",
               variables: dict[str, Any] | None = None, workflow: str = WORKFLOW) -> dict[str, Any]:
    """A valid task event naming ``workflow``."""
    data: dict[str, Any] = {"workflow": workflow, "variables": variables or {}}
    if workflow_id:
        data["workflow_id"] = workflow_id
    return {
        "specversion": "1.0", "type": TASK_EVENT_TYPE, "source": source,
        "id": event_id or uuid.uuid4().hex, "time": "2026-11-29T12:00:00Z",
        "datacontenttype": "application/json", "data": data,
    }


def line(event: Any) -> str:
    """One JSON line (the console producer sends one record per line)."""
    return json.dumps(event, separators=(",", ":"))


def _drop(event: dict[str, Any], *path: str) -> dict[str, Any]:
    out = json.loads(json.dumps(event))
    target = out
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return out


def _with(event: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    out = json.loads(json.dumps(event))
    target = out
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return out


def bad_events(seed: int = 0) -> Iterator[tuple[str, str, str]]:
    """(label, JSON-ish text of one line, expected dead-letter reason), generated around a good event.

    Covers every required attribute missing, each one of the wrong type or value, bad data shapes,
    unknown workflows, invalid inline specs, and text that is not JSON at all.
    """
    rnd = random.Random(seed)
    base = good_event(event_id="bad-base")
    text = line(base)
    # not JSON: truncations at random points, trailing garbage, a bare word, NaN
    for cut in sorted(rnd.sample(range(1, len(text) - 1), 3)):
        yield f"truncated at {cut}", text[:cut], "malformed"
    yield "trailing garbage", text + "}", "malformed"
    yield "bare word", "hello", "malformed"
    yield "NaN constant", text.replace('"bad-base"', "NaN"), "malformed"
    # JSON but not a task event
    for value in ([base], "event", 42, None, True):
        yield f"top level {type(value).__name__}", line(value), "schema"
    for attr in ("specversion", "type", "source", "id", "data"):
        yield f"missing {attr}", line(_drop(base, attr)), "schema"
    for attr, wrong in (("specversion", "0.3"), ("specversion", 1.0), ("type", "com.example.other"),
                        ("source", ""), ("id", ""), ("id", 7), ("data", []), ("data", "patient-reconciliation")):
        yield f"{attr}={wrong!r}", line(_with(base, wrong, attr)), "schema"
    yield "extension with object value", line(_with(base, {"x": 1}, "myext")), "schema"
    yield "data with neither workflow nor spec", line(_drop(base, "data", "workflow")), "schema"
    yield "data with workflow and spec", line(_with(base, {"name": "x"}, "data", "spec")), "schema"
    yield "unknown data field", line(_with(base, 1, "data", "priority")), "schema"
    yield "variables not an object", line(_with(base, [1, 2], "data", "variables")), "schema"
    yield "workflow_id with a space", line(_with(base, "a b", "data", "workflow_id")), "schema"
    yield "workflow_id too long", line(_with(base, "w" * 101, "data", "workflow_id")), "schema"
    # valid shape, but nothing to run
    yield "unknown workflow", line(_with(base, "no-such-workflow", "data", "workflow")), "unknown_workflow"
    inline = _drop(base, "data", "workflow")
    yield "inline spec without steps", line(_with(inline, {"name": "x", "mission": "m"}, "data", "spec")), "invalid_spec"
    cyclic = {"name": "cyc", "mission": "m", "steps": [
        {"id": "a", "role": "r", "task": "t", "depends_on": ["b"]},
        {"id": "b", "role": "r", "task": "t", "depends_on": ["a"]}]}
    yield "inline spec with a cycle", line(_with(inline, cyclic, "data", "spec")), "invalid_spec"
