"""The replicated values: last-writer-wins registers and add-wins (observed-remove) sets."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import msgpack

from mesh.security._redaction import REDACTED
from protocols.gossip import RegisterStamp, RegisterState, SetMeta, SetState, SetTag
from protocols.hlc import HlcTimestamp
from protocols.votes import canonical_hash

__all__ = ["EntryStatus", "OrSet", "SetTagKey", "VariableEntry"]

EntryStatus = Literal["tentative", "accepted"]
_STATUS_RANK = {"tentative": 0, "accepted": 1}
_MASK = REDACTED

_ZERO = HlcTimestamp(0, 0)

SetTagKey = tuple[HlcTimestamp, str]
"""A set add's unique tag: ``(hlc, origin)``."""


@dataclass(frozen=True, slots=True)
class VariableEntry:
    """One version of a context variable (a last-writer-wins register).

    Versions are totally ordered by ``order_key``: HLC, then origin id, then status (accepted
    beats tentative for the same write), then value hash (so even two different values a faulty
    origin wrote under one stamp resolve the same way everywhere). The highest version wins.
    """

    name: str
    """Variable name."""
    value: Any
    """The value, or a short preview when the full value is in cold storage (``cold_ref``)."""
    hlc: HlcTimestamp
    """When the origin wrote it."""
    origin: str
    """Agent id of the writer."""
    value_hash: str = ""
    """``canonical_hash`` of the full value; computed when empty."""
    priority: int = 1
    """Context priority 0-3 (0 = never evicted)."""
    expires_at_ms: int | None = None
    """Wall-clock expiry in Unix milliseconds."""
    secret: bool = False
    """Masked in repr, str and every rendered view."""
    status: EntryStatus = "tentative"
    """``accepted`` once a quorum voted for this version."""
    cold_ref: str = ""
    """Cold-storage key of the full value, when it was over its token budget."""
    deleted: bool = False
    """A tombstone left by a delete."""
    _order: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.priority <= 3:
            raise ValueError(f"priority of {self.name!r} must be 0-3, got {self.priority}")
        if not self.value_hash:
            object.__setattr__(self, "value_hash", canonical_hash(self.value))
        object.__setattr__(
            self, "_order", (self.hlc, self.origin, _STATUS_RANK[self.status], self.value_hash)
        )

    @property
    def order_key(self) -> tuple[Any, ...]:
        """The total order of versions (higher wins)."""
        return self._order

    def is_live(self, now_ms: int | None = None) -> bool:
        """Not deleted and, when ``now_ms`` is given, not expired."""
        if self.deleted:
            return False
        return now_ms is None or self.expires_at_ms is None or now_ms < self.expires_at_ms

    def accepted(self) -> VariableEntry:
        """This version with status ``accepted``."""
        return replace(self, status="accepted")

    def stamp(self) -> RegisterStamp:
        """The per-key digest of this version."""
        return RegisterStamp(hlc=self.hlc, origin=self.origin, status=self.status, value_hash=self.value_hash)

    def to_state(self) -> RegisterState:
        """The wire form."""
        return RegisterState(
            name=self.name,
            value=self.value,
            hlc=self.hlc,
            origin=self.origin,
            value_hash=self.value_hash,
            priority=self.priority,
            expires_at_ms=self.expires_at_ms,
            secret=self.secret,
            status=self.status,
            cold_ref=self.cold_ref,
            deleted=self.deleted,
        )

    @classmethod
    def from_state(cls, state: RegisterState) -> VariableEntry:
        """Build from the wire form."""
        return cls(
            name=state.name,
            value=state.value,
            hlc=HlcTimestamp(*state.hlc),
            origin=state.origin,
            value_hash=state.value_hash,
            priority=state.priority,
            expires_at_ms=state.expires_at_ms,
            secret=state.secret,
            status=state.status,
            cold_ref=state.cold_ref,
            deleted=state.deleted,
        )

    def __repr__(self) -> str:
        value = _MASK if self.secret else self.value
        return (
            f"VariableEntry(name={self.name!r}, value={value!r}, hlc={self.hlc}, origin={self.origin!r}, "
            f"priority={self.priority}, secret={self.secret}, status={self.status!r}"
            f"{', cold' if self.cold_ref else ''}{', deleted' if self.deleted else ''})"
        )

    __str__ = __repr__


def stamp_order(stamp: RegisterStamp) -> tuple[Any, ...]:
    """The same order as ``VariableEntry.order_key``, from a stamp."""
    return (HlcTimestamp(*stamp.hlc), stamp.origin, _STATUS_RANK[stamp.status], stamp.value_hash)


def _packed(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


@dataclass(frozen=True, slots=True)
class _Meta:
    hlc: HlcTimestamp = _ZERO
    origin: str = ""
    priority: int = 1
    expires_at_ms: int | None = None
    secret: bool = False
    status: EntryStatus = "tentative"

    def order(self) -> tuple[Any, ...]:
        return (self.hlc, self.origin, _STATUS_RANK[self.status], self.priority, self.secret, self.expires_at_ms or 0)


class OrSet:
    """An add-wins set: a remove takes away only the adds it has seen, so a concurrent add wins.

    Each add carries a unique tag ``(hlc, origin)``; a remove tombstones the tags it observed.
    Adds whose tag is tombstoned are dropped, so the state is ``(live adds, tombstones)`` and
    merge is a union of both: commutative, associative and idempotent. Metadata (priority,
    secret, expiry, status) is a last-writer-wins register of its own.
    """

    __slots__ = ("_adds", "_meta", "_removed", "name")

    def __init__(self, name: str) -> None:
        """An empty set called ``name``."""
        self.name = name
        self._adds: dict[SetTagKey, Any] = {}
        self._removed: set[SetTagKey] = set()
        self._meta = _Meta()

    # -- reads ----------------------------------------------------------------------------

    @property
    def secret(self) -> bool:
        """Whether the elements are secret."""
        return self._meta.secret

    @property
    def priority(self) -> int:
        """Context priority 0-3."""
        return self._meta.priority

    @property
    def status(self) -> EntryStatus:
        """``accepted`` once a quorum voted for the set's current metadata."""
        return self._meta.status

    @property
    def expires_at_ms(self) -> int | None:
        """Wall-clock expiry in Unix milliseconds."""
        return self._meta.expires_at_ms

    @property
    def value(self) -> list[Any]:
        """The elements, in a stable order (by packed bytes), without duplicates."""
        unique = {_packed(element): element for element in self._adds.values()}
        return [unique[key] for key in sorted(unique)]

    def __contains__(self, element: object) -> bool:
        return any(e == element for e in self._adds.values())

    def state_hash(self) -> bytes:
        """A hash of the full state, for digests."""
        h = hashlib.blake2b(digest_size=16)
        for tag in sorted(self._adds):
            h.update(_packed([tag[0].wall_ms, tag[0].logical, tag[1], self._adds[tag]]))
        h.update(b"\x00")
        for tag in sorted(self._removed):
            h.update(_packed([tag[0].wall_ms, tag[0].logical, tag[1]]))
        h.update(b"\x00")
        h.update(_packed(list(self._meta.order())))
        return h.digest()

    # -- local changes --------------------------------------------------------------------

    def add(self, element: Any, tag: SetTagKey) -> None:
        """Add ``element`` under a fresh unique ``tag``."""
        self._adds[tag] = element

    def remove(self, element: Any) -> int:
        """Tombstone every observed add of ``element``; return how many tags it removed."""
        tags = [tag for tag, e in self._adds.items() if e == element]
        for tag in tags:
            del self._adds[tag]
            self._removed.add(tag)
        return len(tags)

    def set_meta(
        self,
        hlc: HlcTimestamp,
        origin: str,
        *,
        priority: int | None = None,
        secret: bool | None = None,
        expires_at_ms: int | None = None,
        status: EntryStatus | None = None,
    ) -> None:
        """Write new metadata at ``hlc`` (unspecified fields keep their current values)."""
        m = self._meta
        self._meta = _Meta(
            hlc=hlc,
            origin=origin,
            priority=m.priority if priority is None else priority,
            secret=m.secret if secret is None else secret,
            expires_at_ms=m.expires_at_ms if expires_at_ms is None else expires_at_ms,
            status=m.status if status is None else status,
        )

    def mark_accepted(self) -> bool:
        """Flip the current metadata version to accepted; False if it already was."""
        if self._meta.status == "accepted":
            return False
        self._meta = replace(self._meta, status="accepted")
        return True

    # -- replication ----------------------------------------------------------------------

    def merge(self, other: OrSet) -> bool:
        """Join ``other`` into this set; return whether anything changed."""
        before = self.state_hash()
        self._removed |= other._removed
        for tag, element in other._adds.items():
            if tag in self._removed:
                continue
            mine = self._adds.get(tag)
            # One tag, two elements only happens with a faulty origin; pick one deterministically.
            if mine is None or (mine != element and _packed(element) > _packed(mine)):
                self._adds[tag] = element
        for tag in [t for t in self._adds if t in self._removed]:
            del self._adds[tag]
        if other._meta.order() > self._meta.order():
            self._meta = other._meta
        return self.state_hash() != before

    def copy(self) -> OrSet:
        """An independent copy."""
        clone = OrSet(self.name)
        clone._adds = dict(self._adds)
        clone._removed = set(self._removed)
        clone._meta = self._meta
        return clone

    def tags(self) -> Iterable[SetTagKey]:
        """Tags of the live adds."""
        return self._adds.keys()

    def to_state(self) -> SetState:
        """The wire form."""
        m = self._meta
        return SetState(
            name=self.name,
            adds=tuple((SetTag(hlc=tag[0], origin=tag[1]), self._adds[tag]) for tag in sorted(self._adds)),
            removed=tuple(SetTag(hlc=t[0], origin=t[1]) for t in sorted(self._removed)),
            meta=SetMeta(
                hlc=m.hlc,
                origin=m.origin,
                priority=m.priority,
                expires_at_ms=m.expires_at_ms,
                secret=m.secret,
                status=m.status,
            ),
        )

    @classmethod
    def from_state(cls, state: SetState) -> OrSet:
        """Build from the wire form."""
        s = cls(state.name)
        s._removed = {(HlcTimestamp(*t.hlc), t.origin) for t in state.removed}
        for tag, element in state.adds:
            key = (HlcTimestamp(*tag.hlc), tag.origin)
            if key in s._removed:
                continue
            mine = s._adds.get(key)
            if mine is None or (mine != element and _packed(element) > _packed(mine)):
                s._adds[key] = element
        m = state.meta
        s._meta = _Meta(
            hlc=HlcTimestamp(*m.hlc),
            origin=m.origin,
            priority=m.priority,
            expires_at_ms=m.expires_at_ms,
            secret=m.secret,
            status=m.status,
        )
        return s

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OrSet) and self.name == other.name and self.state_hash() == other.state_hash()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = _MASK if self.secret else self.value
        return f"OrSet(name={self.name!r}, elements={shown!r}, status={self.status!r})"

    __str__ = __repr__
