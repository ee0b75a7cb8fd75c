"""Compression of old history into summaries, with hysteresis, and a deterministic summarizer."""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from mesh.context.blocks import Block, Kind, Priority, Region
from mesh.context.budget import Budget
from mesh.context.ledger import Action, Row
from mesh.context.noise import noise_score
from mesh.context.sanitize import sanitize_error
from mesh.context.tokens import TokenCounter, default_counter
from mesh.errors import UsageError
from mesh.store.base import BlobStore

__all__ = [
    "CompressionOptions",
    "CompressionResult",
    "Compressor",
    "ExtractiveSummarizer",
    "Summarizer",
]


@runtime_checkable
class Summarizer(Protocol):
    """Turns text into a shorter text; the seam between the context engine and an LLM.

    The LLM-backed implementation lives in ``mesh.llm``; :class:`ExtractiveSummarizer` is the
    deterministic default. Implementations should return at most ``max_tokens`` tokens; a
    result that does not shrink the text is rejected by the compressor, never truncated.
    """

    async def summarize(self, text: str, *, max_tokens: int) -> str:
        """A summary of ``text`` in at most ``max_tokens`` tokens."""
        ...


_SENTENCE_SPLIT = re.compile(r"(?<=[.!?;])\s+")
_MAX_SENTENCE_WORDS = 32  # longer runs (logs without punctuation) are cut into pieces
_WORD = re.compile(r"[A-Za-z_][\w\-./:]*|\d[\w\-./:]*")
_NUMBER = re.compile(r"\d+")
_SUMMARY_HEAD = "Summary of earlier history (extractive):"


class ExtractiveSummarizer:
    """Deterministic summarizer: keeps the most informative distinct sentences, in order.

    Sentences are deduplicated (numbers ignored, so ``retry 1``..``retry 9`` are one sentence,
    shown once with a ``(xN)`` count). Each is scored by its rare words and identifiers per
    word, with a bonus for recency and for error lines (one of each is worth keeping); the best
    are taken, in their original order, while they fit ``max_tokens``.
    """

    def __init__(self, counter: TokenCounter | None = None) -> None:
        self.counter = counter or default_counter()

    async def summarize(self, text: str, *, max_tokens: int) -> str:
        """A summary of ``text`` in at most ``max_tokens`` tokens."""
        return self.summarize_sync(text, max_tokens=max_tokens)

    def summarize_sync(self, text: str, *, max_tokens: int) -> str:
        """Same as :meth:`summarize`, for callers without an event loop."""
        if max_tokens <= 0:
            raise UsageError(f"max_tokens must be positive, got {max_tokens}")
        sentences: list[str] = []
        for line in text.splitlines():
            for sentence in _SENTENCE_SPLIT.split(line):
                words = sentence.split()
                for i in range(0, len(words), _MAX_SENTENCE_WORDS):
                    sentences.append(" ".join(words[i : i + _MAX_SENTENCE_WORDS]))
        if not sentences:
            return ""
        # Deduplicate, remembering how often each shape occurred and where it last did.
        shape_of = [_NUMBER.sub("#", s.lower()) for s in sentences]
        occurrences = Counter(shape_of)
        last_index: dict[str, int] = {}
        for i, shape in enumerate(shape_of):
            last_index[shape] = i
        unique = [i for i, shape in enumerate(shape_of) if last_index[shape] == i]
        doc_freq = Counter(w.lower() for i in unique for w in set(_WORD.findall(sentences[i])))
        n = len(sentences)

        def score(i: int) -> float:
            words = _WORD.findall(sentences[i])
            if not words:
                return 0.0
            info = sum(
                1.0 / doc_freq[w.lower()] + (0.5 if any(ch.isdigit() for ch in w) else 0.0)
                for w in words
            )
            recency = 0.5 * i / n
            error = 0.5 if "error" in shape_of[i] or "fail" in shape_of[i] else 0.0
            return info / math.sqrt(len(words)) + recency + error

        ranked = sorted(unique, key=lambda i: (-score(i), -i))
        count = self.counter.count
        used = count(_SUMMARY_HEAD) + 1
        chosen: list[int] = []
        for i in ranked:
            line = self._line(sentences[i], occurrences[shape_of[i]])
            cost = count(line) + 2  # "\n- " joins each line
            if used + cost <= max_tokens:
                chosen.append(i)
                used += cost
        if not chosen:
            return ""
        chosen.sort()
        body = "\n".join(
            "- " + self._line(sentences[i], occurrences[shape_of[i]]) for i in chosen
        )
        return f"{_SUMMARY_HEAD}\n{body}"

    @staticmethod
    def _line(sentence: str, times: int) -> str:
        return sentence if times == 1 else f"{sentence} (x{times})"


@dataclass(frozen=True, slots=True)
class CompressionOptions:
    """When and how much history is compressed."""

    trigger_ratio: float = 0.8
    """Compress when the blocks' tokens reach this share of the usable budget."""
    rearm_ratio: float = 0.7
    """After compressing, do not compress again until utilization falls below this share..."""
    cooldown_builds: int = 5
    """...or this many builds have passed (so a failed compression is retried eventually)."""
    noise_threshold: float = 0.7
    """Also compress when the history's noise score is above this..."""
    noise_min_ratio: float = 0.5
    """...once utilization is at least this share: with room to spare, summarizing only loses."""
    oldest_share: float = 0.5
    """Share of the compressible history (by tokens, oldest first) summarized at once."""
    max_input_tokens: int = 32_000
    """At most this many tokens go to the summarizer at once."""
    summary_ratio: float = 0.2
    """The summary may take this share of the tokens it replaces..."""
    max_summary_tokens: int = 1024
    """...and at most this many tokens."""
    min_blocks: int = 2
    """Summarizing fewer blocks than this is not worth a summarizer call."""
    priorities: frozenset[Priority] = field(default_factory=lambda: frozenset({Priority.P2, Priority.P3}))
    """Priorities of the middle-region blocks that may be summarized."""

    def __post_init__(self) -> None:
        if not 0 < self.rearm_ratio <= self.trigger_ratio:
            raise UsageError("need 0 < rearm_ratio <= trigger_ratio")
        if not 0 <= self.noise_min_ratio <= self.trigger_ratio:
            raise UsageError("need 0 <= noise_min_ratio <= trigger_ratio")
        if not 0 < self.oldest_share <= 1 or not 0 < self.summary_ratio < 1:
            raise UsageError("oldest_share must be in (0, 1] and summary_ratio in (0, 1)")
        if Priority.P0 in self.priorities:
            raise UsageError("P0 blocks are never compressed")


@dataclass(frozen=True, slots=True)
class CompressionResult:
    """What one compression pass did."""

    blocks: tuple[Block, ...]
    """The block set after the pass (sources replaced by their summary)."""
    rows: tuple[Row, ...]
    """Ledger rows: compressed sources, or a rejected attempt."""
    fired: bool
    """Whether a summary was attempted."""
    reason: str
    """Why it fired or not (``utilization``, ``noise``, ``below trigger``, ``disarmed``...)."""


def _apportion(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder)."""
    whole = sum(weights)
    raw = [total * w / whole for w in weights]
    shares = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (shares[i] - raw[i], i))
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares


class Compressor:
    """Summarizes the oldest share of history when the prompt nears its budget.

    Stateful, with hysteresis: once it fires it stays disarmed until utilization falls below
    ``rearm_ratio`` or ``cooldown_builds`` builds have passed, so a context hovering at the
    trigger is not re-summarized every turn. One instance per agent step; not for concurrent
    use. Originals of compressed blocks are written to the cold store, if one is given, under
    their :attr:`Block.cold_key`.
    """

    def __init__(
        self,
        summarizer: Summarizer | None = None,
        *,
        counter: TokenCounter | None = None,
        cold_store: BlobStore | None = None,
        options: CompressionOptions | None = None,
    ) -> None:
        self.counter = counter or default_counter()
        self.summarizer = summarizer or ExtractiveSummarizer(self.counter)
        self.cold_store = cold_store
        self.options = options or CompressionOptions()
        self._armed = True
        self._builds_since_fire = 0
        self._last_reason = ""

    @property
    def armed(self) -> bool:
        """Whether the next build may compress."""
        return self._armed

    async def compress(self, blocks: Sequence[Block], budget: Budget) -> CompressionResult:
        """Compress if the trigger conditions hold; return the new block set and ledger rows."""
        opts = self.options
        counts = self.counter.count_blocks(blocks)
        utilization = sum(counts) / budget.usable
        self._builds_since_fire += 1
        # Re-arm after the cooldown, or early once a utilization firing brought the context
        # below the re-arm line (a noise firing needs the full cooldown: noise persists).
        if not self._armed and (
            self._builds_since_fire >= opts.cooldown_builds
            or (self._last_reason == "utilization" and utilization < opts.rearm_ratio)
        ):
            self._armed = True
        unchanged = tuple(blocks)
        if not self._armed:
            return CompressionResult(unchanged, (), False, "disarmed")

        # Candidates: compressible history, as units (a tool call stays with its result).
        count_of = {id(b): n for b, n in zip(blocks, counts, strict=True)}
        candidates = sorted(
            (b for b in blocks if b.region is Region.MIDDLE and b.priority in opts.priorities),
            key=lambda b: b.order,
        )
        protected_groups = {
            b.group
            for b in blocks
            if b.group is not None
            and not (b.region is Region.MIDDLE and b.priority in opts.priorities)
        }
        units: list[list[Block]] = []
        by_group: dict[str, list[Block]] = {}
        for b in candidates:
            if b.group is not None:
                if b.group in protected_groups:
                    continue  # part of its unit may not be compressed: leave the unit whole
                if b.group in by_group:
                    by_group[b.group].append(b)
                    continue
                by_group[b.group] = unit = [b]
                units.append(unit)
            else:
                units.append([b])
        if sum(len(u) for u in units) < opts.min_blocks:
            return CompressionResult(unchanged, (), False, "nothing to compress")

        if utilization >= opts.trigger_ratio:
            reason = "utilization"
        elif utilization < opts.noise_min_ratio:
            return CompressionResult(unchanged, (), False, "below trigger")
        else:
            sample = "\n".join(b.text for u in units[-64:] for b in u)
            if noise_score(sample) > opts.noise_threshold:
                reason = "noise"
            else:
                return CompressionResult(unchanged, (), False, "below trigger")

        history_tokens = sum(count_of[id(b)] for u in units for b in u)
        goal = min(opts.max_input_tokens, math.ceil(history_tokens * opts.oldest_share))
        chosen: list[Block] = []
        taken = 0
        for unit in units:
            unit_tokens = sum(count_of[id(b)] for b in unit)
            if chosen and (taken >= goal or taken + unit_tokens > opts.max_input_tokens):
                break
            chosen.extend(unit)
            taken += unit_tokens
        if len(chosen) < opts.min_blocks:
            return CompressionResult(unchanged, (), False, "nothing to compress")

        self._armed = False
        self._builds_since_fire = 0
        self._last_reason = reason
        max_tokens = max(16, min(opts.max_summary_tokens, int(taken * opts.summary_ratio)))
        text = "\n".join(b.text for b in chosen)
        try:
            summary = await self.summarizer.summarize(text, max_tokens=max_tokens)
        except Exception as exc:  # a broken summarizer must not take the turn down with it
            return self._rejected(blocks, chosen, count_of, f"summarizer failed: {sanitize_error(exc)}")

        first = chosen[0]
        t0 = min(b.turn for b in chosen)
        t1 = max(b.turn for b in chosen)
        ids = hashlib.blake2b("\n".join(b.id for b in chosen).encode(), digest_size=6).hexdigest()
        span = f"turn {t0}" if t0 == t1 else f"turns {t0}-{t1}"
        summary_block = Block(
            f"summary-{ids}",
            f"[summary of {len(chosen)} blocks, {span}]\n{summary.strip()}",
            kind=Kind.SUMMARY,
            priority=Priority.P2,
            region=Region.MIDDLE,
            turn=t1,
            seq=first.seq,
        )
        after = self.counter.count_block(summary_block)
        if not summary.strip():
            return self._rejected(blocks, chosen, count_of, "summarizer returned nothing")
        if after >= taken:
            return self._rejected(
                blocks, chosen, count_of, f"summary did not shrink ({after} >= {taken} tokens)"
            )
        if self.cold_store is not None:
            for b in chosen:
                await self.cold_store.put(b.cold_key, b.to_bytes())
        shares = _apportion(after, [count_of[id(b)] for b in chosen])
        why = f"summarized into {summary_block.id} ({reason})"
        rows = tuple(
            (Action.COMPRESSED, b, count_of[id(b)], share, why)
            for b, share in zip(chosen, shares, strict=True)
        )
        gone = {id(b) for b in chosen}
        new_blocks = (*(b for b in blocks if id(b) not in gone), summary_block)
        return CompressionResult(new_blocks, rows, True, reason)

    @staticmethod
    def _rejected(
        blocks: Sequence[Block], chosen: Sequence[Block], count_of: dict[int, int], why: str
    ) -> CompressionResult:
        rows = tuple(
            (Action.COMPRESSION_REJECTED, b, count_of[id(b)], count_of[id(b)], why) for b in chosen
        )
        return CompressionResult(tuple(blocks), rows, True, why)
