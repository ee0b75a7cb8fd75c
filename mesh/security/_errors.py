"""Errors of mesh.security."""

from __future__ import annotations

from typing import Literal

from mesh.errors import ConfigError, DecodeError

__all__ = ["EnvelopeRejected", "KeyringError", "RejectionReason"]

RejectionReason = Literal["unsigned", "forged", "replayed", "equivocation"]
"""Why an envelope was rejected; the same codes as ``protocols.events.DeadLetter.reason``."""


class EnvelopeRejected(DecodeError):
    """An envelope failed verification; it must go to the dead-letter topic, not to a handler.

    A ``DecodeError`` so the consumer treats it like any other bad input: permanent, not retried.
    """

    reason: RejectionReason

    def __init__(self, message: str, *, reason: RejectionReason, sender: str = "", envelope_id: str = "") -> None:
        super().__init__(message, reason=reason)
        self.sender = sender
        self.envelope_id = envelope_id


class KeyringError(ConfigError):
    """A key could not be loaded or parsed (bad hex, wrong length, unreadable file)."""
