"""The eviction ledger: every dropped, compressed or decayed block, accounted in tokens."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mesh.context.blocks import COLD_KEY_PREFIX, Block, Kind, Priority

__all__ = ["EvictionLedger", "LedgerAction", "LedgerEntry"]


class LedgerAction(StrEnum):
    """What happened to a block."""

    DROPPED = "dropped"
    """Left out of the prompt; a marker stands where it was."""
    COMPRESSED = "compressed"
    """Replaced, with neighbours, by a shorter summary."""
    COMPRESSION_REJECTED = "compression_rejected"
    """A summary was tried but did not shrink the text; the block was kept."""
    DECAYED = "decayed"
    """An unreferenced variable moved to cold storage, leaving a one-line digest."""


Action = LedgerAction
"""The name ``compression`` and ``decay`` use (``mesh.runtime.Action`` is a role's action)."""


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One block that lost tokens (or a rejected attempt to make it lose some)."""

    action: Action
    """What happened."""
    block_id: str
    """The block's id."""
    kind: Kind
    """The block's kind."""
    priority: Priority
    """The block's priority."""
    turn: int
    """The turn that produced the block."""
    tokens_before: int
    """Tokens of the block before."""
    tokens_after: int
    """Tokens it still takes (0 when dropped; its share of the summary when compressed)."""
    reason: str
    """Why, in a few words."""
    restore_key: str
    """Cold-storage key that restores the original."""

    @property
    def tokens_removed(self) -> int:
        """Tokens this entry took out of the prompt."""
        return self.tokens_before - self.tokens_after


_REASON_BUDGET = "did not fit the token budget"

# A row is (action, block, tokens_before, tokens_after, reason): tuples are cheap to make by
# the thousand on the hot path; LedgerEntry objects are built only when someone reads them.
Row = tuple[Action, Block, int, int, str]


class EvictionLedger:
    """Every token that entered the builder: kept, dropped, or saved by compression.

    ``kept_tokens + dropped_tokens + saved_tokens == input_tokens`` always holds. Markers,
    headings and separators are scaffolding, reported apart as ``overhead_tokens``.
    """

    __slots__ = (
        "_dropped",
        "_dropped_counts",
        "_entries",
        "_rows",
        "input_tokens",
        "kept_tokens",
        "overhead_tokens",
    )

    def __init__(
        self,
        rows: Iterable[Row] = (),
        *,
        input_tokens: int = 0,
        kept_tokens: int = 0,
        overhead_tokens: int = 0,
    ) -> None:
        self._rows: list[Row] = list(rows)
        # Blocks dropped by assembly are kept as two parallel lists, not rows: assembly may
        # drop thousands per call and turns them into entries only when someone reads them.
        self._dropped: list[Block] = []
        self._dropped_counts: list[int] = []
        self._entries: tuple[LedgerEntry, ...] | None = None
        self.input_tokens = input_tokens
        self.kept_tokens = kept_tokens
        self.overhead_tokens = overhead_tokens

    def _all_rows(self) -> list[Row]:
        reason = _REASON_BUDGET
        dropped = Action.DROPPED
        return self._rows + [
            (dropped, b, n, 0, reason)
            for b, n in zip(self._dropped, self._dropped_counts, strict=True)
        ]

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        """All entries, in the order they were recorded (assembly's drops come last)."""
        if self._entries is None or len(self._entries) != len(self):
            self._entries = tuple(
                LedgerEntry(
                    action=action,
                    block_id=block.id,
                    kind=block.kind,
                    priority=block.priority,
                    turn=block.turn,
                    tokens_before=before,
                    tokens_after=after,
                    reason=reason,
                    restore_key=COLD_KEY_PREFIX + block.id,
                )
                for action, block, before, after, reason in self._all_rows()
            )
        return self._entries

    def __iter__(self) -> Iterator[LedgerEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self._rows) + len(self._dropped)

    def record(self, action: Action, block: Block, before: int, after: int, reason: str) -> None:
        """Add one entry."""
        self._rows.append((action, block, before, after, reason))

    def extend(self, rows: Iterable[Row]) -> None:
        """Add many entries at once (already in row form)."""
        self._rows.extend(rows)

    def record_dropped(self, blocks: Iterable[Block], counts: Iterable[int]) -> None:
        """Record blocks that did not fit the budget, with their token counts."""
        self._dropped.extend(blocks)
        self._dropped_counts.extend(counts)

    @property
    def dropped_tokens(self) -> int:
        """Tokens of blocks left out of the prompt."""
        return sum(self._dropped_counts) + sum(
            r[2] for r in self._rows if r[0] is Action.DROPPED
        )

    @property
    def saved_tokens(self) -> int:
        """Tokens removed by compression and decay (before minus after)."""
        return sum(
            r[2] - r[3] for r in self._rows if r[0] is Action.COMPRESSED or r[0] is Action.DECAYED
        )

    def dropped_ids(self) -> list[str]:
        """Ids of the dropped blocks."""
        return [r[1].id for r in self._rows if r[0] is Action.DROPPED] + [
            b.id for b in self._dropped
        ]

    def is_balanced(self) -> bool:
        """Whether kept + dropped + saved equals the input, as it always should."""
        return self.kept_tokens + self.dropped_tokens + self.saved_tokens == self.input_tokens

    def as_dict(self) -> dict[str, Any]:
        """Totals for telemetry (span attributes, metrics)."""
        counts: dict[str, int] = {}
        for r in self._rows:
            counts[r[0].value] = counts.get(r[0].value, 0) + 1
        if self._dropped:
            counts["dropped"] = counts.get("dropped", 0) + len(self._dropped)
        return {
            "input_tokens": self.input_tokens,
            "kept_tokens": self.kept_tokens,
            "dropped_tokens": self.dropped_tokens,
            "saved_tokens": self.saved_tokens,
            "overhead_tokens": self.overhead_tokens,
            "entries": counts,
        }

    def lines(self, *, limit: int = 50) -> list[str]:
        """Human-readable lines for a scratchpad, newest first, at most ``limit`` of them."""
        rows = self._all_rows()
        out = []
        for r in reversed(rows[-limit:] if limit else rows):
            action, block, before, after, reason = r
            out.append(
                f"- {action.value} {block.id} (P{int(block.priority)} {block.kind.value}, "
                f"turn {block.turn}): {before} -> {after} tokens, {reason}; "
                f"restore {COLD_KEY_PREFIX}{block.id}"
            )
        if limit and len(rows) > limit:
            out.append(f"- ... {len(rows) - limit} earlier entries")
        return out

    def __repr__(self) -> str:
        return (
            f"EvictionLedger(entries={len(self)}, input={self.input_tokens}, "
            f"kept={self.kept_tokens}, dropped={self.dropped_tokens}, saved={self.saved_tokens})"
        )
