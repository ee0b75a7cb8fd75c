"""The context variable: one type from an action's discovery to a dependant's re-hydration.

An action reports what it found as ``ContextVariable``s (``ActionOutcome.variables``); the step
holds them in ``StepState.variables`` (checkpointed); its result carries them on the wire as
``protocols.VariableRecord``; a dependant step re-hydrates them from that record (and from the
workflow's gossip map, ``mesh.gossip.VariableVersion``). Each of those conversions is written
once, here, so no field is lost or a secret's value leaked by a hand-built copy elsewhere.

The gossip version is a different thing on purpose: a versioned register of a CRDT (HLC, writer,
vote status, cold-storage ref), not the step's view of a value. Only the conversions meet here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from mesh.security import REDACTED
from protocols import VariableRecord

if TYPE_CHECKING:
    from mesh.gossip import OrSet, VariableVersion

__all__ = ["GOSSIP_MIN_PRIORITY", "ContextVariable"]

GOSSIP_MIN_PRIORITY = 2
"""A value re-hydrated from gossip rather than from an ancestor's result is evicted from the
prompt first: its priority is raised to at least this (it may still be tentative)."""


@dataclass(slots=True)
class ContextVariable:
    """A context variable: what an action discovered and what a step knows.

    ``value`` is the real value in memory, secrets included (executors need the token); it is
    masked in ``repr``, sealed in checkpoints (``StepState.to_bytes``) and never put on the wire
    or in gossip (``to_record``, ``to_gossip``).
    """

    name: str
    """Variable name, e.g. ``auth_token``."""
    value: Any
    """The value (a secret's too, in memory only)."""
    secret: bool = False
    """Secrets are stored by reference and never rendered in logs, spans, events or scratchpads."""
    priority: int = 1
    """Context priority 0-3: 0 is never evicted."""
    expires_at_ms: int | None = None
    """Wall-clock expiry, Unix milliseconds."""
    origin: str = ""
    """Where the step got it: the step that discovered it, ``workflow``, ``gossip:<agent> (<status>)``,
    ``operator:<name>``. Set by the runtime; an action leaves it empty."""
    last_used_turn: int = 0
    """Last turn that used it (injected or read): its decay clock (``mesh.runtime.decay``). Set by the runtime."""

    def __post_init__(self) -> None:
        if not 0 <= self.priority <= 3:
            raise ValueError(f"priority of variable {self.name!r} must be 0-3, got {self.priority}")

    def __repr__(self) -> str:
        value = REDACTED if self.secret else self.value
        return (
            f"ContextVariable(name={self.name!r}, value={value!r}, secret={self.secret}, priority={self.priority}, "
            f"expires_at_ms={self.expires_at_ms}, origin={self.origin!r}, last_used_turn={self.last_used_turn})"
        )

    __str__ = __repr__

    # -- in the step ------------------------------------------------------------------------

    def adopted(self, *, origin: str, turn: int) -> ContextVariable:
        """A copy for the step's state: discovered (or refreshed) by ``origin`` at ``turn``.

        A copy, so the runtime's bookkeeping never changes the object an action returned.
        """
        return replace(self, origin=origin, last_used_turn=turn)

    # -- checkpoint ---------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, name: str, raw: Mapping[str, Any]) -> ContextVariable:
        """Read one entry of a checkpoint's ``variables`` map (the map's key is the name).

        Reads every layout written so far: entries before this type existed had no ``name``
        field, and no check of ``priority`` (one outside 0-3 is clamped, so the step still
        loads). Fields this version does not know (a newer writer's) are ignored.
        """
        known = {key: raw[key] for key in CHECKPOINT_FIELDS if key in raw}
        if "priority" in known:
            known["priority"] = min(max(int(known["priority"]), 0), 3)
        return cls(name, **known)

    # -- wire (StepCompleted) -----------------------------------------------------------------

    def to_record(self, *, ref: str = "") -> VariableRecord:
        """The wire form in a step's result. A secret travels as ``ref`` (the state-store key the
        caller sealed its value under), never its value; ``origin`` and use are local."""
        return VariableRecord(
            name=self.name,
            value=None if self.secret else self.value,
            secret=self.secret,
            priority=self.priority,
            expires_at_ms=self.expires_at_ms,
            ref=ref if self.secret else "",
        )

    @classmethod
    def from_record(
        cls, record: VariableRecord, *, origin: str, secret_value: Any = None
    ) -> ContextVariable:
        """Re-hydrate a variable from a dependency's result: ``origin`` is that step's id; a
        secret's value is ``secret_value``, which the caller read from the store by ``record.ref``."""
        return cls(
            record.name,
            secret_value if record.secret else record.value,
            secret=record.secret,
            priority=record.priority,
            expires_at_ms=record.expires_at_ms,
            origin=origin,
        )

    # -- gossip (mesh.gossip.VariableVersion) ------------------------------------------------

    def to_gossip(self, *, ref: str = "") -> dict[str, Any]:
        """Keyword arguments of ``GossipNode.set_variable`` (after the workflow id) that gossip it.

        Like the wire form: a secret is gossiped as its store ``ref``, never its value.
        """
        return {
            "name": self.name,
            "value": (ref or None) if self.secret else self.value,
            "secret": self.secret,
            "priority": self.priority,
            "expires_at_ms": self.expires_at_ms,
        }

    @classmethod
    def from_gossip(cls, version: VariableVersion | OrSet) -> ContextVariable | None:
        """A variable from the workflow's gossip map (a register version or an add-wins set), or
        None when it holds nothing a step may use: a secret (gossip holds only its store ref) or
        a delete. Its priority is at least ``GOSSIP_MIN_PRIORITY``; its origin names the writer
        and the vote status (``gossip:agent-7 (tentative)``)."""
        if version.secret or getattr(version, "deleted", False):
            return None
        writer = getattr(version, "origin", "?")  # a set has one writer per element, none overall
        return cls(
            version.name,
            version.value,
            priority=max(version.priority, GOSSIP_MIN_PRIORITY),
            expires_at_ms=version.expires_at_ms,
            origin=f"gossip:{writer} ({version.status})",
        )


CHECKPOINT_FIELDS = tuple(f.name for f in fields(ContextVariable) if f.name != "name")
"""The fields of a variable in a checkpoint: all but the name, which is the key of its entry."""
