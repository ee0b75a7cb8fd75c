"""Errors of mesh.security."""

from __future__ import annotations

from typing import Literal

from mesh.errors import ConfigError, EnvelopeRejected

__all__ = ["EnvelopeRejected", "KeyringError", "RejectionReason"]

RejectionReason = Literal["unsigned", "forged", "replayed", "equivocation"]
"""Why the verifier rejected an envelope (``EnvelopeRejected.reason``, the one class of
``mesh.errors``); the same codes as ``protocols.events.DeadLetter.reason``."""


class KeyringError(ConfigError):
    """A key could not be loaded or parsed (bad hex, wrong length, unreadable file)."""
