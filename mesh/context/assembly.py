"""Priority-stack assembly: fit blocks into a budget, evicting by priority, never silently.

Layout, top to bottom (recall is best at the edges of a prompt):

* TOP: system prompt, mission, rules, critical variables, with no heading;
* MIDDLE: history under ``HISTORICAL CONTEXT`` (for reference only);
* BOTTOM: current task, working memory and goal under ``CURRENT CONTEXT`` (actionable).

Selection is greedy over units (a block, or blocks sharing a ``group`` such as a tool call and
its result): P0 units are always kept; the others are taken by priority, newest first, while
they fit. Every run of evicted units leaves one marker line where it stood, and every evicted
block gets a ledger entry. The cost of a marker is charged during selection (keeping a unit
can split a run into two), so the result never exceeds the budget. Token counts come from the
counter's cache; nothing is re-encoded on a warm call. Cost: one sort, O(n log n).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress
from operator import attrgetter

from mesh.context.blocks import Block, Priority, Region
from mesh.context.budget import Budget
from mesh.context.errors import ContextBudgetError
from mesh.context.ledger import EvictionLedger, Row
from mesh.context.tokens import TokenCounter, default_counter

__all__ = [
    "CURRENT_HEADING",
    "HISTORICAL_HEADING",
    "SEPARATOR",
    "AssembledPrompt",
    "assemble",
]

HISTORICAL_HEADING = "## HISTORICAL CONTEXT (for reference only; do not act on it)"
"""Heading above the middle region."""

CURRENT_HEADING = "## CURRENT CONTEXT (actionable)"
"""Heading above the bottom region."""

SEPARATOR = "\n\n"
"""What joins blocks, markers and headings."""

_HEADINGS = {Region.TOP: None, Region.MIDDLE: HISTORICAL_HEADING, Region.BOTTOM: CURRENT_HEADING}
_ORDER = attrgetter("order")
_SEQ_BITS = 56  # as in blocks: order and rank keep the region or priority above this bit
_P1_RANK = int(Priority.P1) << _SEQ_BITS
_INVERT = bytes([1, 0]) + bytes(254)  # translate table: 0 -> 1, 1 -> 0


@dataclass(frozen=True, slots=True)
class AssembledPrompt:
    """The result of one assembly."""

    text: str
    """The prompt text."""
    tokens: int
    """Upper bound of the text's token count (cached block counts plus scaffolding)."""
    budget: Budget
    """The budget it was assembled into."""
    ledger: EvictionLedger
    """What was dropped or compressed, and the token accounting."""
    kept: tuple[Block, ...]
    """Blocks present in the text, in render order."""
    blocks: tuple[Block, ...]
    """The block set after compression: the state to carry into the next turn."""

    @property
    def utilization(self) -> float:
        """Share of the usable budget the prompt takes."""
        return self.tokens / self.budget.usable


def _marker_text(n: int, tokens: int, t0: int, t1: int) -> str:
    turns = f"turn {t0}" if t0 == t1 else f"turns {t0}-{t1}"
    noun = "block" if n == 1 else "blocks"
    return f"[evicted {n} {noun} ({tokens} tokens, {turns}); restore from the eviction ledger]"


class _MarkerCosts:
    """Token counts of marker lines, cached by shape.

    In cl100k-style encodings every run of 1-3 digits is one token and digits never merge with
    their neighbours, so a marker's count depends only on how many digits its numbers have.
    """

    def __init__(self, counter: TokenCounter) -> None:
        self.counter = counter
        self._by_shape: dict[tuple[int, ...], int] = {}
        # Warm calls on the same history produce the same markers: remember them whole.
        self._by_value: dict[tuple[int, int, int, int], tuple[str, int]] = {}

    def cost(self, n: int, tokens: int, t0: int, t1: int) -> tuple[str, int]:
        key = (n, tokens, t0, t1)
        hit = self._by_value.get(key)
        if hit is not None:
            return hit
        text = _marker_text(n, tokens, t0, t1)
        shape = (len(str(n)), n == 1, len(str(tokens)), len(str(t0)), t0 == t1, len(str(t1)))
        c = self._by_shape.get(shape)
        if c is None:
            c = self._by_shape[shape] = self.counter.count(text)
        if len(self._by_value) >= 65_536:
            self._by_value.clear()
        self._by_value[key] = (text, c)
        return text, c

    def bound(self, max_n: int, max_tokens: int, max_turn: int) -> int:
        """Most tokens any marker can take given the largest numbers it may show."""
        big_n, big_tok, big_turn = (10 ** len(str(x)) - 1 for x in (max_n, max_tokens, max_turn))
        return max(
            self.cost(n, tok, t0, t1)[1]
            for n in (1, big_n)
            for tok in (big_tok,)
            for t0, t1 in ((big_turn, big_turn), (big_turn, big_turn - 1 if big_turn else 0))
        )


_marker_costs: dict[int, _MarkerCosts] = {}


def _markers_for(counter: TokenCounter) -> _MarkerCosts:
    m = _marker_costs.get(id(counter))
    if m is None or m.counter is not counter:
        m = _marker_costs[id(counter)] = _MarkerCosts(counter)
    return m


def assemble(
    blocks: Sequence[Block],
    budget: Budget,
    *,
    counter: TokenCounter | None = None,
) -> AssembledPrompt:
    """Assemble ``blocks`` into a prompt that fits ``budget`` (sync, no compression).

    Raises:
        ContextBudgetError: the P0 blocks alone do not fit.
    """
    counter = counter or default_counter()
    return _assemble(blocks, budget, counter, prior_rows=(), input_tokens=None, state=blocks)


def _assemble(
    blocks: Sequence[Block],
    budget: Budget,
    counter: TokenCounter,
    *,
    prior_rows: Sequence[Row],
    input_tokens: int | None,
    state: Sequence[Block],
) -> AssembledPrompt:
    usable = budget.usable
    ordered = sorted(blocks, key=_ORDER)
    n_blocks = len(ordered)
    counts, costs = counter.counts_and_costs(ordered)
    sep = counter.count(SEPARATOR)
    markers = _markers_for(counter)
    turns = [b.turn for b in ordered]
    groups = [b.group for b in ordered]

    # -- units: one per block, or one per group (rendered at its first member) -----------------
    # Parallel lists indexed by unit. They start as the block lists; each group folds its
    # followers into its first member (the leader), and the followers are filtered out.
    u_cost = [c + sep for c in costs]
    u_rank = [b.rank for b in ordered]
    u_count: list[int] = counts
    u_tmin: list[int] = turns
    u_tmax: list[int] = turns
    u_size: list[int] | None = None  # blocks per unit; None when every unit is one block
    u_block: list[int] | None = None  # leader block index per unit; None when identity
    followers: dict[int, list[int]] = {}
    if groups.count(None) != n_blocks:
        leader_of: dict[str, int] = {}
        not_follower = bytearray(b"\x01") * n_blocks
        u_count, u_tmin, u_tmax = list(counts), list(turns), list(turns)
        sizes = [1] * n_blocks
        for i in [i for i, g in enumerate(groups) if g is not None]:
            g = groups[i]
            lead = leader_of.get(g)  # type: ignore[arg-type]
            if lead is None:
                leader_of[g] = i  # type: ignore[index]
                continue
            if lead in followers:
                followers[lead].append(i)
            else:
                followers[lead] = [i]
            not_follower[i] = 0
            sizes[lead] += 1
            u_cost[lead] += u_cost[i]
            u_count[lead] += counts[i]
            if u_rank[i] < u_rank[lead]:
                u_rank[lead] = u_rank[i]
            if turns[i] < u_tmin[lead]:
                u_tmin[lead] = turns[i]
            if turns[i] > u_tmax[lead]:
                u_tmax[lead] = turns[i]
        if followers:
            u_cost = list(compress(u_cost, not_follower))
            u_rank = list(compress(u_rank, not_follower))
            u_count = list(compress(u_count, not_follower))
            u_tmin = list(compress(u_tmin, not_follower))
            u_tmax = list(compress(u_tmax, not_follower))
            u_size = list(compress(sizes, not_follower))
            u_block = list(compress(range(n_blocks), not_follower))
    n_units = len(u_cost)

    # -- regions: contiguous unit ranges, each with its heading --------------------------------
    segments: list[tuple[int, int, str | None]] = []
    heading_cost = 0
    for region in Region:
        # Units stay sorted by their leader's render order, so regions are contiguous ranges.
        lo = bisect_left(ordered, int(region) << _SEQ_BITS, key=_ORDER)
        hi = bisect_left(ordered, (int(region) + 1) << _SEQ_BITS, key=_ORDER)
        if u_block is not None:
            lo, hi = bisect_left(u_block, lo), bisect_left(u_block, hi)
        if hi > lo:
            heading = _HEADINGS[region]
            segments.append((lo, hi, heading))
            if heading is not None:
                heading_cost += counter.count(heading) + sep
    is_first = bytearray(n_units)
    is_last = bytearray(n_units)
    for lo, hi, _ in segments:
        is_first[lo] = 1
        is_last[hi - 1] = 1

    # -- P0 is kept unconditionally; the rest must fit around it and its markers ----------------
    by_rank = sorted(range(n_units), key=u_rank.__getitem__)
    n_p0 = bisect_left(by_rank, _P1_RANK, key=u_rank.__getitem__)
    kept = bytearray(n_units)
    p0_tokens = 0
    for u in by_rank[:n_p0]:
        kept[u] = 1
        p0_tokens += u_cost[u]
    runs = 0
    for lo, hi, _ in segments:
        seg = kept[lo:hi]
        runs += seg.count(b"\x01\x00") + (seg[0] == 0)
    max_turn = max(turns, default=0)
    total_in = sum(counts)
    marker_bound = markers.bound(max(n_blocks, 1), max(total_in, 1), max_turn) + sep
    base = heading_cost + p0_tokens + runs * marker_bound
    if base > usable:
        raise ContextBudgetError(
            f"P0 blocks need {p0_tokens} tokens (plus {base - p0_tokens} of headings and "
            f"eviction markers) but the budget has {usable} usable tokens "
            f"(window {budget.window}); P0 content is never truncated",
            required_tokens=base,
            usable_tokens=usable,
        )

    # -- greedy selection: P1 before P2 before P3, newest first ---------------------------------
    remaining = usable - base
    for u in by_rank[n_p0:]:
        c = u_cost[u]
        if c - marker_bound > remaining:
            continue
        left = not is_first[u] and not kept[u - 1]
        right = not is_last[u] and not kept[u + 1]
        if left and right:
            c += marker_bound  # keeping u splits a run of evicted units: one more marker
        elif not (left or right):
            c -= marker_bound  # u was a run on its own: its marker goes away
        if c <= remaining:
            kept[u] = 1
            remaining -= c

    # -- render: walk each region, kept units verbatim, one marker per evicted run ---------------
    ledger = EvictionLedger(prior_rows)
    parts: list[str] = []
    append = parts.append
    kept_blocks: list[Block] = []
    kept_tokens = 0
    tokens = heading_cost
    for lo, hi, heading in segments:
        if heading is not None:
            append(heading)
        pos = lo
        while pos < hi:
            k = kept.find(1, pos, hi)
            if k == -1:
                k = hi
            if k > pos:  # units pos..k-1 were evicted: one marker for the run
                n_run = k - pos if u_size is None else sum(u_size[pos:k])
                text, c = markers.cost(
                    n_run, sum(u_count[pos:k]), min(u_tmin[pos:k]), max(u_tmax[pos:k])
                )
                append(text)
                tokens += c + sep
            if k < hi:
                tokens += u_cost[k]
                kept_tokens += u_count[k]
                i = k if u_block is None else u_block[k]
                b = ordered[i]
                append(b.text)
                kept_blocks.append(b)
                for j in followers.get(i, ()):
                    b = ordered[j]
                    append(b.text)
                    kept_blocks.append(b)
            pos = k + 1

    # Every block not kept is dropped: pick them out with a byte mask, at C speed.
    if u_block is None:
        dropped_mask = kept.translate(_INVERT)
    else:
        block_kept = bytearray(n_blocks)
        for u in compress(range(n_units), kept):
            i = u_block[u]
            block_kept[i] = 1
            for j in followers.get(i, ()):
                block_kept[j] = 1
        dropped_mask = block_kept.translate(_INVERT)
    ledger.record_dropped(compress(ordered, dropped_mask), compress(counts, dropped_mask))

    ledger.input_tokens = total_in if input_tokens is None else input_tokens
    ledger.kept_tokens = kept_tokens
    ledger.overhead_tokens = tokens - kept_tokens
    return AssembledPrompt(
        text=SEPARATOR.join(parts),
        tokens=tokens,
        budget=budget,
        ledger=ledger,
        kept=tuple(kept_blocks),
        blocks=tuple(state),
    )
