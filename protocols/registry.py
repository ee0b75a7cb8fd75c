"""Registry of envelope kinds: each kind names the pydantic model of its payload."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

__all__ = ["Payload", "kind_of", "payload_type", "register_kind", "registered_kinds"]


class Payload(BaseModel):
    """Base of every payload model: immutable, and unknown fields are a schema error."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    KIND: ClassVar[str] = ""
    """Filled by ``register_kind``; not a field on the wire."""


_KINDS: dict[str, type[Payload]] = {}

P = TypeVar("P", bound=type[Payload])


def register_kind(kind: str) -> Callable[[P], P]:
    """Class decorator that registers a payload model under ``kind``."""

    def decorate(cls: P) -> P:
        existing = _KINDS.get(kind)
        if existing is not None and existing is not cls:
            raise ValueError(f"kind {kind!r} is already registered to {existing.__name__}")
        _KINDS[kind] = cls
        cls.KIND = kind
        return cls

    return decorate


def payload_type(kind: str) -> type[Payload] | None:
    """The payload model registered for ``kind``, or None."""
    return _KINDS.get(kind)


def kind_of(payload: Payload) -> str:
    """The registered kind of a payload instance."""
    kind = type(payload).KIND
    if not kind:
        raise ValueError(f"{type(payload).__name__} is not a registered payload kind")
    return kind


def registered_kinds() -> frozenset[str]:
    """Every registered kind."""
    return frozenset(_KINDS)
