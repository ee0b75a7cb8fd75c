"""Read a campaign's history back from where each process left it: Kafka topics, audit log, Redis.

Each reader appends to a :class:`~mesh.chaos.History`; none trusts what the campaign believes.
Topic readers use a fresh consumer group from the beginning, verify signatures with the mesh's
guard (a forged record is not history) and never dead-letter anything themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import msgpack

from mesh.bus import Bus, Delivery, EnvelopeGuard, SubscriptionOptions
from mesh.chaos._history import History
from mesh.errors import CheckpointNotFound, MeshError
from mesh.store import step_key
from mesh.store.base import StateStore
from protocols import DeadLetter, Envelope, EnvelopeCodec, TraceEvent

__all__ = [
    "flood_digest",
    "read_audit_log",
    "read_dead_letters",
    "read_gossip_maps",
    "read_store",
    "read_topic",
    "read_trace",
    "read_workflow_log",
    "secret_digest",
]

_RAW_CAP = 64 * 1024


def flood_digest(raw: bytes | None, *, max_envelope_bytes: int = 262_144) -> str:
    """The digest a dead letter's (possibly truncated) raw bytes are matched by."""
    cap = min(_RAW_CAP, max_envelope_bytes // 2 - 4096)
    return hashlib.sha256((raw or b"")[:cap]).hexdigest()


def secret_digest(value: Any) -> str:
    """How a secret value appears in a history: a short digest, never the value."""
    return "sha256:" + hashlib.sha256(repr(value).encode()).hexdigest()[:16]


async def read_topic(
    bus: Bus,
    topic: str,
    *,
    group: str,
    on_delivery: Callable[[Delivery], None],
    guard: EnvelopeGuard | None = None,
    idle_ms: int = 3000,
    timeout_s: float = 300.0,
    empty_after_s: float = 45.0,
) -> int:
    """Read ``topic`` from the beginning until it stays quiet for ``idle_ms``; return records read.

    A topic that yields nothing for ``empty_after_s`` counts as empty: joining the group and
    getting partitions takes seconds on a starved box, so this is generous.
    """
    sub = await bus.subscribe(
        [topic],
        group=group,
        options=SubscriptionOptions(
            from_beginning=True,
            session_timeout_ms=10000,
            heartbeat_interval_ms=1000,
            guard=guard,
            dead_letter=False,
        ),
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    quiet_since = loop.time()
    seen = 0
    try:
        while loop.time() < deadline:
            batch = await sub.poll(timeout_ms=500)
            if batch:
                quiet_since = loop.time()
                for d in batch:
                    on_delivery(d)
                    seen += 1
            elif seen and loop.time() - quiet_since > idle_ms / 1000:
                break
            elif not seen and loop.time() - quiet_since > max(idle_ms / 1000, empty_after_s):
                break  # an empty topic (or the group never got its partitions)
    finally:
        await sub.aclose()
    return seen


def _log_data(env: Envelope) -> dict[str, Any]:
    p = dict(env.payload)
    data: dict[str, Any] = {"id": env.id}
    if env.kind == "workflow.submitted":
        spec = p.get("spec") or {}
        data["steps"] = [
            {"id": s.get("id"), "role": s.get("role"), "depends_on": list(s.get("depends_on", []))}
            for s in spec.get("steps", [])
        ]
        data["submitted_by"] = p.get("submitted_by", "")
    elif env.kind == "workflow.step_completed":
        data.update(turns=p.get("turns", 0), owner=p.get("owner", ""), resumes=p.get("resumes", 0))
        data["variables"] = {
            v.get("name"): (None if v.get("secret") else v.get("value"))
            for v in p.get("variables", ())
        }
    else:
        for name in ("owner", "epoch", "resumed_from_turn", "turn", "action", "outcome", "error", "turns",
                     "reason", "status", "steps", "role", "resolution", "idempotency_key", "detail"):  # fmt: skip
            if name in p:
                data[name] = p[name]
    return data


async def read_workflow_log(
    history: History, bus: Bus, topic: str, *, group: str, guard: EnvelopeGuard | None = None
) -> int:
    """Append every verified event of the workflow log (source ``log``)."""

    def add(d: Delivery) -> None:
        env = d.envelope
        history.record("log", env.kind, at_ms=d.timestamp_ms, workflow_id=env.workflow_id, step_id=env.step_id,
                       actor=env.sender, partition=d.partition, offset=d.offset, **_log_data(env))  # fmt: skip

    return await read_topic(bus, topic, group=group, on_delivery=add, guard=guard)


async def read_trace(
    history: History, bus: Bus, topic: str, *, group: str, guard: EnvelopeGuard | None = None
) -> int:
    """Append the trace-event topic (source ``trace``; kind = the event's name)."""

    def add(d: Delivery) -> None:
        env = d.envelope
        if env.kind != TraceEvent.KIND:
            return
        event = env.payload_model(TraceEvent)
        attrs = dict(event.attributes)
        history.record("trace", event.name, at_ms=d.timestamp_ms, actor=env.sender,
                       workflow_id=str(attrs.pop("workflow_id", env.workflow_id) or ""),
                       step_id=str(attrs.pop("step_id", env.step_id) or ""), **attrs)  # fmt: skip

    return await read_topic(bus, topic, group=group, on_delivery=add, guard=guard)


async def read_dead_letters(
    history: History,
    bus: Bus,
    topic: str,
    *,
    group: str,
    flood: Iterable[str] = (),
    max_envelope_bytes: int = 262_144,
) -> int:
    """Append the dead-letter topic (source ``dlq``), naming the refused record's claimed sender.

    ``flood`` holds ``flood_digest`` of records the campaign itself sent as hostile input; their
    letters are marked ``flood`` (expected), whatever sender they claim.
    """
    codec = EnvelopeCodec(max_bytes=max(max_envelope_bytes, 1 << 20))
    hostile = set(flood)

    def add(d: Delivery) -> None:
        if d.envelope.kind != DeadLetter.KIND:
            return
        letter = d.envelope.payload_model(DeadLetter)
        sender, kind, wf, step = "", "", "", ""
        try:
            refused = codec.decode(letter.raw)
            sender, kind, wf, step = (
                refused.sender,
                refused.kind,
                refused.workflow_id,
                refused.step_id,
            )
        except Exception:  # undecodable bytes are what many letters hold
            pass
        history.record("dlq", "dead_letter", at_ms=d.timestamp_ms, actor=letter.consumer or d.envelope.sender,
                       workflow_id=wf, step_id=step, sender=sender, event_kind=kind, reason=letter.reason,
                       error=letter.error[:200], source_topic=letter.source_topic,
                       flood=flood_digest(letter.raw, max_envelope_bytes=max_envelope_bytes) in hostile)  # fmt: skip

    return await read_topic(bus, topic, group=group, on_delivery=add, idle_ms=2000)


def read_audit_log(history: History, path: Path) -> int:
    """Append every line of a mock service's JSONL audit log (source ``audit``, kind ``METHOD /path``)."""
    n = 0
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        return 0
    with handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line
            at_ms = 0
            try:
                at_ms = int(
                    datetime.fromisoformat(
                        str(entry.get("ts", "")).replace("Z", "+00:00")
                    ).timestamp()
                    * 1000
                )
            except ValueError:
                pass
            key = str(entry.get("idempotency_key") or "")
            history.record(
                "audit", f"{entry.get('method')} {entry.get('path')}", at_ms=at_ms,
                workflow_id=key.split(":", 1)[0] if key.count(":") >= 2 else "",
                **{k: v for k, v in entry.items() if k not in ("ts", "method", "path") and v is not None},
            )  # fmt: skip
            n += 1
    return n


def _turn_and_status(data: bytes) -> tuple[int, str]:
    try:
        raw = msgpack.unpackb(data, raw=False)
        return int(raw.get("turn", 0)), str(raw.get("status", ""))
    except Exception:  # a checkpoint the checker cannot read is reported by its turn 0
        return 0, "unreadable"


async def read_store(
    history: History, store: StateStore, steps: Mapping[str, Sequence[str]]
) -> int:
    """Append every kept version of each step checkpoint (source ``store``, kind ``checkpoint``).

    ``steps`` maps a workflow id to its step ids. A key with no version at all is recorded as
    ``checkpoint.missing``.
    """
    n = 0
    for wf, step_ids in steps.items():
        for step in step_ids:
            key = step_key(wf, step)
            try:
                latest = await store.read(key)
            except CheckpointNotFound:
                history.record("store", "checkpoint.missing", workflow_id=wf, step_id=step)
                continue
            for version in range(1, latest.version + 1):
                try:
                    ck = latest if version == latest.version else await store.read(key, version)
                except CheckpointNotFound:
                    continue  # older than the kept window
                turn, status = _turn_and_status(ck.data)
                history.record("store", "checkpoint", at_ms=ck.written_at_ms, workflow_id=wf, step_id=step,
                               actor=ck.owner, version=ck.version, epoch=ck.epoch, turn=turn, status=status,
                               latest=version == latest.version)  # fmt: skip
                n += 1
    return n


async def read_gossip_maps(
    history: History,
    load: Callable[[str, str], Awaitable[Any]],
    workflows: Iterable[str],
    agents: Iterable[str],
) -> int:
    """Append each agent's persisted context map of each workflow (source ``gossip``, kind ``map``).

    ``load(workflow_id, agent_id)`` returns a ``ContextMap`` or None (an agent that never saw the
    workflow has none). Secret values appear as ``secret_digest``.
    """
    n = 0
    agent_ids = list(agents)
    for wf in workflows:
        for agent in agent_ids:
            try:
                cmap = await load(wf, agent)
            except MeshError as exc:
                history.record(
                    "gossip", "map.unreadable", workflow_id=wf, actor=agent, error=str(exc)[:200]
                )
                continue
            if cmap is None:
                continue
            variables: dict[str, Any] = {}
            for name, entry in cmap.items(now_ms=0):
                value = entry.value
                if isinstance(value, set | frozenset | list | tuple):
                    value = sorted(map(str, value))
                variables[name] = secret_digest(value) if getattr(entry, "secret", False) else value
            history.record("gossip", "map", workflow_id=wf, actor=agent, variables=variables)
            n += 1
    return n
