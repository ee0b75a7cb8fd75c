"""Errors of the reasoner layer, grouped by how the turn loop should react.

Every failure of a model provider is translated into one of these at the boundary of
``mesh/llm``; ``anthropic`` exceptions never leak past it. Messages carry the HTTP status and
the provider's error type and text, never the API key or request headers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mesh.errors import MeshError, PermanentError, TransientError, UsageError

if TYPE_CHECKING:
    from mesh.llm.decision import Usage

__all__ = [
    "DecisionFormatError",
    "ReasonerAuthError",
    "ReasonerError",
    "ReasonerRequestError",
    "ReasonerUnavailable",
]


class ReasonerError(MeshError):
    """Base of errors raised by a reasoner.

    ``status_code`` is the provider's HTTP status when there was one; ``None`` for
    connection failures and local checks.
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class ReasonerUnavailable(ReasonerError, TransientError):
    """The model provider is overloaded, rate limiting, failing or unreachable (after retries).

    ``retry_after_s`` is the provider's ``retry-after`` (or ``retry-after-ms``) when it sent one.
    """

    def __init__(self, message: str, *, status_code: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after_s = retry_after_s


class DecisionFormatError(ReasonerError, PermanentError):
    """The model answered, but not with a usable decision (no tool call, bad input, unknown action).

    The turn loop feeds ``str(error)`` back as ``ReasonerRequest.repair_hint``; ``raw`` is what
    the model said, for the scratchpad.
    """

    def __init__(
        self, message: str, *, raw: str = "", status_code: int | None = None, usage: Usage | None = None
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.raw = raw
        self.usage = usage
        """What the unusable answer cost, as the provider reported it (None when unknown)."""


class ReasonerRequestError(ReasonerError, PermanentError):
    """The provider rejected the request itself (400, 404, 413, 422): fix the request, not retry."""


class ReasonerAuthError(ReasonerError, UsageError):
    """The provider refused the credentials (401, 403) or none were configured."""
