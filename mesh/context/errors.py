"""Errors raised by the context engine, as subclasses of the mesh hierarchy."""

from __future__ import annotations

from mesh.errors import ConfigError, MeshError, PermanentError

__all__ = ["ContextBudgetError", "ContextError", "EncodingUnavailableError"]


class ContextError(MeshError):
    """Base of errors raised by the context engine."""


class ContextBudgetError(ContextError, PermanentError):
    """The P0 blocks (mission, rules, current task) alone do not fit the token budget.

    The builder never truncates P0 content to make it fit: the caller must raise the window,
    shrink the system prompt or the output reserve, or shorten the P0 blocks.
    """

    def __init__(self, message: str, *, required_tokens: int, usable_tokens: int) -> None:
        super().__init__(message)
        self.required_tokens = required_tokens
        self.usable_tokens = usable_tokens


class EncodingUnavailableError(ContextError, ConfigError):
    """The configured tiktoken encoding cannot be loaded offline."""
