"""The prompt builder the agent turn loop calls: redact, compress if needed, assemble."""

from __future__ import annotations

from collections.abc import Sequence

from mesh.context.assembly import AssembledPrompt, _assemble
from mesh.context.blocks import Block
from mesh.context.budget import Budget
from mesh.context.compression import CompressionOptions, Compressor, Summarizer
from mesh.context.decay import read_cold
from mesh.context.sanitize import Redactor
from mesh.context.tokens import TokenCounter, default_counter
from mesh.store.base import BlobStore

__all__ = ["PromptBuilder"]


class PromptBuilder:
    """Builds every prompt of one agent step within its budget.

    :meth:`assemble` is the pure, synchronous fast path (no compression, no I/O).
    :meth:`build` first redacts secrets (if a redactor is given) and compresses old history
    when the trigger fires, then assembles; its result's ``blocks`` is the new block set to
    carry into the next turn, and its ledger accounts for compression and eviction together.
    Not for concurrent use: the compressor's hysteresis is per step.
    """

    def __init__(
        self,
        counter: TokenCounter | None = None,
        *,
        summarizer: Summarizer | None = None,
        cold_store: BlobStore | None = None,
        compression: CompressionOptions | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.counter = counter or default_counter()
        self.cold_store = cold_store
        self.redactor = redactor
        self.compressor = Compressor(
            summarizer, counter=self.counter, cold_store=cold_store, options=compression
        )
        self._redacted: dict[bytes, str | None] = {}  # digest -> redacted text, None if clean

    def assemble(self, blocks: Sequence[Block], budget: Budget) -> AssembledPrompt:
        """Fit ``blocks`` into ``budget`` without compressing (sync, no I/O)."""
        return _assemble(
            blocks, budget, self.counter, prior_rows=(), input_tokens=None, state=blocks
        )

    async def build(self, blocks: Sequence[Block], budget: Budget) -> AssembledPrompt:
        """Redact, compress when due, and assemble ``blocks`` into ``budget``.

        Raises:
            ContextBudgetError: the P0 blocks alone do not fit.
        """
        if self.redactor is not None:
            blocks = self._redact(blocks)
        input_tokens = sum(self.counter.count_blocks(blocks))
        result = await self.compressor.compress(blocks, budget)
        return _assemble(
            result.blocks,
            budget,
            self.counter,
            prior_rows=result.rows,
            input_tokens=input_tokens,
            state=result.blocks,
        )

    async def restore(self, key: str) -> Block | None:
        """The original of a compressed or decayed block, from its ledger ``restore_key``."""
        if self.cold_store is None:
            return None
        raw = await read_cold(self.cold_store, key)
        return None if raw is None else Block.from_bytes(raw)

    def _redact(self, blocks: Sequence[Block]) -> list[Block]:
        assert self.redactor is not None
        cache = self._redacted
        out = []
        for b in blocks:
            if b.digest in cache:
                clean = cache[b.digest]
            else:
                text = self.redactor.redact(b.text)
                clean = None if text == b.text else text
                if len(cache) > 100_000:
                    cache.clear()
                cache[b.digest] = clean
            out.append(b if clean is None else b.replace(text=clean))
        return out
