"""The one exception hierarchy of agent-mesh.

Grouped by how a caller should react, not by where the error came from:

* ``MeshError`` is the root; catch it to catch everything the runtime raises on purpose.
* ``UsageError`` and its subclasses are programming or configuration mistakes: fix the call,
  do not retry.
* ``TransientError`` subclasses are runtime failures that may succeed on retry
  (``retryable = True``).
* ``PermanentError`` subclasses are runtime failures that will fail the same way again
  (``retryable = False``).

Retryability is data (the ``retryable`` class attribute), never string matching. Foreign
exceptions (aiokafka, redis, httpx, anthropic) are translated into these at the boundary of the
module that talks to them and never leak past it.
"""

from __future__ import annotations

__all__ = [
    "BusError",
    "BusUnavailable",
    "CheckpointNotFound",
    "ConfigError",
    "DecodeError",
    "EnvelopeRejected",
    "MeshError",
    "PermanentError",
    "ReplicationTimeout",
    "ServiceStartError",
    "StaleEpochError",
    "StoreAccessDenied",
    "StoreError",
    "StoreUnavailable",
    "TransientError",
    "UsageError",
]


class MeshError(Exception):
    """Root of every error agent-mesh raises on purpose."""

    retryable: bool = False
    """Whether the same operation may succeed if tried again."""


class UsageError(MeshError):
    """A mistake in how the library or CLI was called; retrying will not help."""


class ConfigError(UsageError):
    """A setting is missing or invalid."""


class TransientError(MeshError):
    """A runtime failure that may go away on retry (network blip, broker leader change)."""

    retryable = True


class PermanentError(MeshError):
    """A runtime failure that will happen again on retry."""

    retryable = False


class DecodeError(PermanentError):
    """Bytes from the wire could not be turned into a valid envelope or payload.

    ``reason`` is a short machine-friendly code (``malformed``, ``oversize``, ``unknown_kind``,
    ``schema``, ...); the message says what and where.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class EnvelopeRejected(DecodeError):
    """An envelope refused by a guard (signature, replay window, quarantined sender): it goes to
    the dead-letter topic with ``reason``, never to a handler; permanent, like any bad input.

    Raised by ``mesh.security``'s verifier and by any ``mesh.bus.EnvelopeGuard``; ``reason`` uses
    the codes of ``protocols.events.DeadLetter.reason`` (``unsigned``, ``forged``, ``replayed``,
    ``equivocation``, ...).
    """

    def __init__(self, message: str, *, reason: str, sender: str = "", envelope_id: str = "") -> None:
        super().__init__(message, reason=reason)
        self.sender = sender
        self.envelope_id = envelope_id


class BusError(MeshError):
    """Base of errors raised by a message bus."""


class BusUnavailable(BusError, TransientError):
    """The broker could not be reached or did not answer in time."""


class StoreError(MeshError):
    """Base of errors raised by a state store."""


class StoreUnavailable(StoreError, TransientError):
    """The state store could not be reached or did not answer in time."""


class StoreAccessDenied(StoreError, PermanentError):
    """The state store refused this client: wrong credentials, a missing ACL permission, or a TLS
    certificate it does not trust (or that does not trust it). Fix the setting; do not retry."""


class ReplicationTimeout(StoreUnavailable):
    """A write was applied on the primary but fewer replicas than required confirmed it in time.

    It was not acknowledged: a failover may still lose it. Retrying writes it again (a new version).
    """


class StaleEpochError(StoreError, PermanentError):
    """A write was fenced off: a newer owner epoch already holds the record.

    The writer is a zombie (it lost ownership while paused or partitioned); it must stop
    working on the record, not retry.
    """

    def __init__(self, message: str, *, attempted_epoch: int, current_epoch: int) -> None:
        super().__init__(message)
        self.attempted_epoch = attempted_epoch
        self.current_epoch = current_epoch


class CheckpointNotFound(StoreError, PermanentError):
    """No checkpoint exists for the requested key or version."""


class ServiceStartError(PermanentError):
    """A local development service (Kafka, Redis) failed to start; the message has its log tail."""
