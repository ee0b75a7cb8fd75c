"""Blocks: the unit the prompt is assembled from, with its priority, region and kind."""

from __future__ import annotations

import hashlib
import itertools
import json
from enum import IntEnum, StrEnum
from typing import Any

from mesh.errors import UsageError

__all__ = ["COLD_KEY_PREFIX", "Block", "Kind", "Priority", "Region", "cold_key"]

COLD_KEY_PREFIX = "ctx/block/"
"""Prefix of the cold-storage key under which an evicted block's original is kept."""


def cold_key(block_id: str) -> str:
    """The cold-storage key that restores the block with this id."""
    return COLD_KEY_PREFIX + block_id


class Priority(IntEnum):
    """How hard the builder fights to keep a block (lower value is more important)."""

    P0 = 0
    """Never evicted: mission, rules, current task. If P0 does not fit, assembly fails."""
    P1 = 1
    """Kept if at all possible: critical variables, working memory."""
    P2 = 2
    """Compressed first: history, tool calls and results."""
    P3 = 3
    """Dropped first: logs, stale errors."""


class Region(IntEnum):
    """Where a block sits in the prompt; recall is best at the top and the bottom."""

    TOP = 0
    """System prompt, mission, rules, critical variables."""
    MIDDLE = 1
    """Compressed history and low-resolution logs, rendered under HISTORICAL CONTEXT."""
    BOTTOM = 2
    """Current task, working memory and the goal recitation, under CURRENT CONTEXT."""


class Kind(StrEnum):
    """What a block holds; it picks the default priority and region."""

    SYSTEM = "system"
    MISSION = "mission"
    RULES = "rules"
    VARIABLE = "variable"
    HISTORY = "history"
    SUMMARY = "summary"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    ERROR = "error"
    LOG = "log"
    TASK = "task"
    MEMORY = "memory"
    GOAL = "goal"


_DEFAULTS: dict[Kind, tuple[Priority, Region]] = {
    Kind.SYSTEM: (Priority.P0, Region.TOP),
    Kind.MISSION: (Priority.P0, Region.TOP),
    Kind.RULES: (Priority.P0, Region.TOP),
    Kind.VARIABLE: (Priority.P1, Region.TOP),
    Kind.HISTORY: (Priority.P2, Region.MIDDLE),
    Kind.SUMMARY: (Priority.P2, Region.MIDDLE),
    Kind.TOOL_CALL: (Priority.P2, Region.MIDDLE),
    Kind.TOOL_RESULT: (Priority.P2, Region.MIDDLE),
    Kind.ERROR: (Priority.P3, Region.MIDDLE),
    Kind.LOG: (Priority.P3, Region.MIDDLE),
    Kind.TASK: (Priority.P0, Region.BOTTOM),
    Kind.MEMORY: (Priority.P1, Region.BOTTOM),
    Kind.GOAL: (Priority.P0, Region.BOTTOM),
}

# Creation order for blocks that are not given one; shared by all blocks of the process.
_SEQ = itertools.count()
_SEQ_BITS = 56


class Block:
    """One immutable piece of prompt text.

    ``priority`` and ``region`` default from ``kind``. ``group`` ties blocks that must stay
    together (a tool call and its result): they are kept or evicted as one unit and rendered
    next to each other. ``turn`` is the agent turn that produced the block; ``seq`` is its
    creation order (taken from a process-wide counter when omitted) and orders blocks within a
    region. The content digest is computed once, here, and keys the token-count cache.
    """

    __slots__ = (
        "digest",
        "group",
        "id",
        "kind",
        "order",
        "priority",
        "rank",
        "region",
        "seq",
        "text",
        "turn",
    )

    id: str
    text: str
    kind: Kind
    priority: Priority
    region: Region
    group: str | None
    turn: int
    seq: int
    digest: bytes
    order: int
    rank: int

    def __init__(
        self,
        id: str,
        text: str,
        *,
        kind: Kind | str = Kind.HISTORY,
        priority: Priority | int | None = None,
        region: Region | int | None = None,
        group: str | None = None,
        turn: int = 0,
        seq: int | None = None,
    ) -> None:
        if not isinstance(id, str) or not id:
            raise UsageError("a block needs a non-empty string id")
        if not isinstance(text, str):
            raise UsageError(f"block {id!r}: text must be a str, got {type(text).__name__}")
        kind = Kind(kind)
        default_priority, default_region = _DEFAULTS[kind]
        prio = default_priority if priority is None else Priority(priority)
        reg = default_region if region is None else Region(region)
        if not isinstance(turn, int) or turn < 0:
            raise UsageError(f"block {id!r}: turn must be a non-negative int, got {turn!r}")
        if seq is None:
            seq = next(_SEQ)
        elif not 0 <= seq < 1 << _SEQ_BITS:
            raise UsageError(f"block {id!r}: seq must be in [0, 2**{_SEQ_BITS}), got {seq}")
        setattr_ = object.__setattr__
        setattr_(self, "id", id)
        setattr_(self, "text", text)
        setattr_(self, "kind", kind)
        setattr_(self, "priority", prio)
        setattr_(self, "region", reg)
        setattr_(self, "group", group)
        setattr_(self, "turn", turn)
        setattr_(self, "seq", seq)
        setattr_(
            self,
            "digest",
            hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest(),
        )
        # One int sorts blocks into render order (region, then creation) without a key tuple.
        setattr_(self, "order", (int(reg) << _SEQ_BITS) | seq)
        # Eviction rank: lower is kept first (priority, then newest first).
        setattr_(self, "rank", (int(prio) << _SEQ_BITS) | ((1 << _SEQ_BITS) - 1 - seq))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Block is immutable; use replace() to change {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Block is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Block):
            return NotImplemented
        return (
            self.id == other.id
            and self.digest == other.digest
            and self.kind == other.kind
            and self.priority == other.priority
            and self.region == other.region
            and self.group == other.group
            and self.turn == other.turn
            and self.seq == other.seq
        )

    def __hash__(self) -> int:
        return hash((self.id, self.digest, self.seq))

    def __repr__(self) -> str:
        preview = self.text if len(self.text) <= 40 else self.text[:37] + "..."
        return (
            f"Block(id={self.id!r}, kind={self.kind.value}, priority=P{int(self.priority)}, "
            f"region={self.region.name}, turn={self.turn}, seq={self.seq}, text={preview!r})"
        )

    def replace(self, **changes: Any) -> Block:
        """A copy with some fields changed (the creation order is kept unless given)."""
        fields: dict[str, Any] = {
            "text": self.text,
            "kind": self.kind,
            "priority": self.priority,
            "region": self.region,
            "group": self.group,
            "turn": self.turn,
            "seq": self.seq,
        }
        block_id = changes.pop("id", self.id)
        unknown = set(changes) - set(fields)
        if unknown:
            raise UsageError(f"unknown Block fields: {sorted(unknown)}")
        fields.update(changes)
        return Block(block_id, **fields)

    @property
    def cold_key(self) -> str:
        """The cold-storage key under which this block's original is kept when evicted."""
        return COLD_KEY_PREFIX + self.id

    def to_bytes(self) -> bytes:
        """Serialize for cold storage (JSON, UTF-8)."""
        return json.dumps(
            {
                "id": self.id,
                "text": self.text,
                "kind": self.kind.value,
                "priority": int(self.priority),
                "region": int(self.region),
                "group": self.group,
                "turn": self.turn,
                "seq": self.seq,
            },
            ensure_ascii=False,
        ).encode("utf-8", "surrogatepass")

    @classmethod
    def from_bytes(cls, data: bytes) -> Block:
        """Inverse of :meth:`to_bytes`."""
        raw = json.loads(data.decode("utf-8", "surrogatepass"))
        return cls(
            raw["id"],
            raw["text"],
            kind=raw["kind"],
            priority=raw["priority"],
            region=raw["region"],
            group=raw["group"],
            turn=raw["turn"],
            seq=raw["seq"],
        )
