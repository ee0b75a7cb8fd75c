"""Context engine: every prompt built as a priority stack within a tiktoken budget.

Blocks carry text with a priority (P0 never evicted .. P3 dropped first), a region (top,
middle, bottom) and a kind. :func:`assemble` (sync) and :class:`PromptBuilder` (async, with
compression) fit them into a :class:`Budget`, leave a marker where anything was evicted and
account for every token in an :class:`EvictionLedger`. Errors are sanitized to one line and
secrets redacted before text becomes a block; idle variables decay to cold storage (a ``mesh.store.BlobStore``).
"""

from mesh.context.assembly import CURRENT_HEADING, HISTORICAL_HEADING, AssembledPrompt, assemble
from mesh.context.blocks import Block, Kind, Priority, Region, cold_key
from mesh.context.budget import Budget
from mesh.context.builder import PromptBuilder
from mesh.context.compression import (
    CompressionOptions,
    CompressionResult,
    Compressor,
    ExtractiveSummarizer,
    Summarizer,
)
from mesh.context.decay import DecayManager, DecayResult
from mesh.context.errors import ContextBudgetError, ContextError, EncodingUnavailableError
from mesh.context.ledger import EvictionLedger, LedgerAction, LedgerEntry
from mesh.context.noise import NoiseSignals, noise_score, noise_signals
from mesh.context.sanitize import (
    REDACTED,
    Attempt,
    Redactor,
    collapse_failures,
    redact,
    sanitize_error,
)
from mesh.context.tokens import DEFAULT_ENCODING, CalibrationOptions, TokenCounter, default_counter

__all__ = [
    # blocks
    "Block",
    "Kind",
    "Priority",
    "Region",
    "cold_key",
    # counting and budget
    "DEFAULT_ENCODING",
    "Budget",
    "CalibrationOptions",
    "TokenCounter",
    "default_counter",
    # assembly
    "CURRENT_HEADING",
    "HISTORICAL_HEADING",
    "AssembledPrompt",
    "PromptBuilder",
    "assemble",
    # ledger
    "LedgerAction",
    "EvictionLedger",
    "LedgerEntry",
    # compression and noise
    "CompressionOptions",
    "CompressionResult",
    "Compressor",
    "ExtractiveSummarizer",
    "NoiseSignals",
    "Summarizer",
    "noise_score",
    "noise_signals",
    # sanitizing
    "REDACTED",
    "Attempt",
    "Redactor",
    "collapse_failures",
    "redact",
    "sanitize_error",
    # decay to cold storage (a mesh.store.BlobStore)
    "DecayManager",
    "DecayResult",
    # errors
    "ContextBudgetError",
    "ContextError",
    "EncodingUnavailableError",
]
