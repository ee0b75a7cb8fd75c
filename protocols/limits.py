"""Structural limits on outside input, checked before any recursive work touches it.

A record or a spec is data from outside: its nesting depth, its size in nodes and the shape of its
step graph are bounded here, iteratively (no Python recursion, so no ``RecursionError`` however
deep the input), before a validator, a ``repr`` or a graph walk recurses into it. The defaults fit
real workflows with a wide margin; each can be changed with an environment variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = ["LimitExceeded", "Limits", "check_structure", "current_limits", "set_limits"]


class LimitExceeded(ValueError):
    """A value is deeper or larger than a limit allows; ``reason`` is a short code."""

    def __init__(self, message: str, *, reason: str = "limit") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on decoded records and workflow specs (environment variable in brackets)."""

    max_depth: int = 64
    """Deepest nesting of maps and lists in a record or spec (``MESH_MAX_NESTING_DEPTH``)."""

    max_nodes: int = 200_000
    """Most maps, lists and scalars one record or spec may hold (``MESH_MAX_VALUE_NODES``);
    it also stops YAML alias bombs, whose nodes are counted as expanded."""

    max_steps: int = 1000
    """Most steps in one workflow spec (``MESH_MAX_SPEC_STEPS``)."""

    max_dependencies: int = 256
    """Most ``depends_on`` entries of one step, its fan-in (``MESH_MAX_STEP_DEPENDENCIES``)."""

    max_spec_bytes: int = 1_048_576
    """Largest spec file or text accepted, in bytes (``MESH_MAX_SPEC_BYTES``)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """Defaults overridden by ``MESH_*`` variables; a bad value raises ``ValueError`` naming it."""
        env = os.environ if environ is None else environ
        changes: dict[str, int] = {}
        for f in fields(cls):
            name = _ENV[f.name]
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            try:
                value = int(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not an integer") from None
            if value < 1:
                raise ValueError(f"{name}={value} must be at least 1")
            changes[f.name] = value
        return replace(cls(), **changes)


_ENV = {
    "max_depth": "MESH_MAX_NESTING_DEPTH",
    "max_nodes": "MESH_MAX_VALUE_NODES",
    "max_steps": "MESH_MAX_SPEC_STEPS",
    "max_dependencies": "MESH_MAX_STEP_DEPENDENCIES",
    "max_spec_bytes": "MESH_MAX_SPEC_BYTES",
}

_current: Limits | None = None


def current_limits() -> Limits:
    """The limits in force: read from the environment on first use, or set by ``set_limits``."""
    global _current
    if _current is None:
        _current = Limits.from_env()
    return _current


def set_limits(limits: Limits | None) -> None:
    """Replace the limits in force (None: read the environment again on next use)."""
    global _current
    _current = limits


def check_structure(value: Any, *, what: str, limits: Limits | None = None) -> None:
    """Raise ``LimitExceeded`` if ``value`` nests deeper or holds more nodes than allowed.

    Iterative, and it stops at the first limit crossed, so its cost is bounded by the limits
    whatever the input (shared sub-objects, as YAML aliases make, are counted once per use).
    """
    lim = limits or current_limits()
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > lim.max_nodes:
            raise LimitExceeded(f"{what} holds more than {lim.max_nodes} values", reason="too_large")
        if isinstance(item, dict):
            children: Any = item.items()
        elif isinstance(item, list | tuple | set | frozenset):
            children = item
        else:
            continue
        if depth > lim.max_depth:
            raise LimitExceeded(f"{what} nests deeper than {lim.max_depth} levels", reason="too_deep")
        if isinstance(item, dict):
            for k, v in children:
                stack.append((k, depth + 1))
                stack.append((v, depth + 1))
        else:
            stack.extend((child, depth + 1) for child in children)
