"""Noise score: how much of a text is error chatter, repetition or filler, in [0, 1]."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

__all__ = ["NoiseSignals", "noise_score", "noise_signals"]

# Lines that are error or debug output rather than content the model can use.
_NOISY_LINE = re.compile(
    r"(?i)\b(?:error|exception|traceback|failed|failure|fatal|warn(?:ing)?|debug|trace|"
    r"retry(?:ing)?|timed?\s?out|stack)\b|^\s+(?:File \"|at \S+\()"
)
_SAMPLE_CHARS = 65_536
_NGRAM = 3


@dataclass(frozen=True, slots=True)
class NoiseSignals:
    """The cheap signals behind a noise score, each in [0, 1]."""

    error_share: float
    """Share of words on error, warning, debug or stack-frame lines."""
    duplicate_ratio: float
    """Share of word trigrams that repeat an earlier one."""
    compressibility: float
    """How much zlib shrinks the text beyond what ordinary prose allows (0 for prose)."""

    @property
    def score(self) -> float:
        """Combined score: high when any signal is high (a noisy OR of weighted signals)."""
        keep = (
            (1.0 - 0.9 * self.error_share)
            * (1.0 - 0.7 * self.duplicate_ratio)
            * (1.0 - 0.5 * self.compressibility)
        )
        return min(1.0, max(0.0, 1.0 - keep))


def noise_signals(text: str) -> NoiseSignals:
    """Measure the noise signals of ``text`` (only its last 64 KiB, to stay cheap)."""
    if len(text) > _SAMPLE_CHARS:
        text = text[-_SAMPLE_CHARS:]
    words_total = 0
    words_noisy = 0
    for line in text.splitlines():
        n = len(line.split())
        words_total += n
        if n and _NOISY_LINE.search(line):
            words_noisy += n
    if words_total == 0:
        return NoiseSignals(0.0, 0.0, 0.0)
    words = text.split()
    grams = [tuple(words[i : i + _NGRAM]) for i in range(len(words) - _NGRAM + 1)]
    duplicate = 1.0 - len(set(grams)) / len(grams) if grams else 0.0
    raw = text.encode("utf-8", "surrogatepass")
    compressibility = 0.0
    if len(raw) >= 256:  # zlib's header dominates below this and says nothing
        saved = 1.0 - len(zlib.compress(raw, 6)) / len(raw)
        # Ordinary prose and varied logs compress by about half; only the excess is noise.
        compressibility = min(1.0, max(0.0, (saved - 0.55) / 0.4))
    return NoiseSignals(words_noisy / words_total, duplicate, compressibility)


def noise_score(text: str) -> float:
    """Noise score of ``text`` in [0, 1]; above 0.7 (by default) triggers compression."""
    return noise_signals(text).score
