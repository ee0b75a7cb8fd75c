"""Temporal decay: variables nobody mentions move to cold storage and come back on reference.

Cold storage is a ``mesh.store.BlobStore`` (the one blob-by-key seam: files, S3, memory); give
each step its own namespace with ``mesh.store.PrefixedBlobStore`` when several share one store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mesh.context.blocks import Block, Kind, Priority
from mesh.context.ledger import Action, EvictionLedger
from mesh.context.tokens import TokenCounter, default_counter
from mesh.errors import CheckpointNotFound, UsageError
from mesh.store.base import BlobStore

__all__ = ["DecayManager", "DecayResult"]


@dataclass(frozen=True, slots=True)
class DecayResult:
    """What one decay pass did."""

    blocks: tuple[Block, ...]
    """The block set after the pass."""
    decayed: tuple[str, ...]
    """Variables moved to cold storage in this pass."""
    restored: tuple[str, ...]
    """Variables brought back in this pass."""
    ledger: EvictionLedger
    """``DECAYED`` entries for this pass, with its token accounting."""


class DecayManager:
    """Moves variable blocks that were not referenced for ``idle_turns`` turns to cold storage.

    A variable is a block of kind ``variable``; its id is its name. It is referenced when its
    name appears (as a whole word) in one of the texts passed as ``mentions`` (the current task,
    the last decision, tool calls) or when :meth:`touch` is called; setting it anew (a block
    with other text under the same id) counts too. A decayed variable leaves a one-line digest
    block under the same id; a reference brings the original back. P0 variables never decay.
    One instance per agent step; not for concurrent use.
    """

    def __init__(
        self,
        store: BlobStore,
        *,
        counter: TokenCounter | None = None,
        idle_turns: int = 10,
        preview_chars: int = 32,
    ) -> None:
        if idle_turns < 1:
            raise UsageError(f"idle_turns must be at least 1, got {idle_turns}")
        self.store = store
        self.counter = counter or default_counter()
        self.idle_turns = idle_turns
        self.preview_chars = preview_chars
        self._last_ref: dict[str, int] = {}
        # name -> (digest of the digest block, digest of the original block)
        self._cold: dict[str, tuple[bytes, bytes]] = {}
        self._seen_digest: dict[str, bytes] = {}

    def touch(self, name: str, turn: int) -> None:
        """Record that variable ``name`` was referenced at ``turn``."""
        self._last_ref[name] = max(turn, self._last_ref.get(name, turn))

    def is_cold(self, name: str) -> bool:
        """Whether variable ``name`` currently lives in cold storage."""
        return name in self._cold

    def _digest_text(self, block: Block, turn: int, tokens: int) -> str:
        first = block.text.strip().splitlines()[0] if block.text.strip() else ""
        if len(first) > self.preview_chars:
            first = first[: self.preview_chars - 3] + "..."
        return (
            f"{block.id}: [in cold storage since turn {turn}, {tokens} tokens; "
            f"mention {block.id} to restore] {first}"
        ).rstrip()

    async def apply(
        self, blocks: Sequence[Block], *, turn: int, mentions: Iterable[str] = ()
    ) -> DecayResult:
        """Decay idle variables and restore referenced ones; return the new block set."""
        variables = [b for b in blocks if b.kind is Kind.VARIABLE]
        names = {b.id for b in variables}
        texts = list(mentions)
        if names and texts:
            pattern = re.compile(
                r"(?<![\w])(?:" + "|".join(map(re.escape, sorted(names, key=len, reverse=True))) + r")(?![\w])"
            )
            for text in texts:
                for m in pattern.finditer(text):
                    self.touch(m.group(0), turn)

        ledger = EvictionLedger()
        out: list[Block] = []
        decayed: list[str] = []
        restored: list[str] = []
        count = self.counter.count_block
        input_tokens = 0
        kept_tokens = 0
        for b in blocks:
            n = count(b)
            input_tokens += n
            if b.kind is not Kind.VARIABLE:
                out.append(b)
                kept_tokens += n
                continue
            name = b.id
            cold = self._cold.get(name)
            if cold is not None and b.digest != cold[0]:
                del self._cold[name]  # set anew while cold: the new value is live
                cold = None
                self._last_ref[name] = turn
            if self._seen_digest.get(name) != b.digest and cold is None:
                self._seen_digest[name] = b.digest
                self._last_ref[name] = max(self._last_ref.get(name, b.turn), b.turn)
            last = self._last_ref.setdefault(name, b.turn)

            if cold is not None:
                if last >= turn:  # referenced this turn: bring the original back
                    raw = await read_cold(self.store, b.cold_key)
                    if raw is not None:
                        original = Block.from_bytes(raw)
                        del self._cold[name]
                        self._seen_digest[name] = original.digest
                        out.append(original)
                        kept_tokens += n  # the digest's tokens; the original re-enters the set
                        restored.append(name)
                        continue
                out.append(b)
                kept_tokens += n
                continue

            if b.priority is not Priority.P0 and turn - last >= self.idle_turns:
                digest_block = b.replace(text=self._digest_text(b, turn, n))
                after = count(digest_block)
                if after < n:  # a digest longer than the value is not worth a round trip
                    await self.store.put(b.cold_key, b.to_bytes())
                    self._cold[name] = (digest_block.digest, b.digest)
                    ledger.record(
                        Action.DECAYED, b, n, after, f"not referenced for {turn - last} turns"
                    )
                    out.append(digest_block)
                    decayed.append(name)
                    continue
            out.append(b)
            kept_tokens += n
        ledger.input_tokens = input_tokens
        ledger.kept_tokens = kept_tokens + sum(e.tokens_after for e in ledger.entries)
        return DecayResult(tuple(out), tuple(decayed), tuple(restored), ledger)


async def read_cold(store: BlobStore, name: str) -> bytes | None:
    """The blob ``name`` from cold storage, or None when there is none (``BlobStore.get`` raises)."""
    try:
        return await store.get(name)
    except CheckpointNotFound:
        return None
