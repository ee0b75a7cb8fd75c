"""The replicated context-variable map of one workflow (a state-based CRDT with deltas)."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
from pydantic import ValidationError

from mesh.errors import DecodeError
from mesh.gossip._clock import HybridLogicalClock
from mesh.gossip._entries import OrSet, VariableEntry, stamp_order
from protocols.codec import format_validation_error
from protocols.gossip import DeltaBody, RegisterStamp
from protocols.votes import canonical_hash

__all__ = ["ContextMap", "Delta", "bucket_of"]

_FORMAT = 1
"""Version of the ``to_bytes`` layout."""


def bucket_of(name: str, bucket_count: int) -> int:
    """The digest bucket of a variable name (the same on every peer)."""
    digest = hashlib.blake2b(name.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % bucket_count


@dataclass(frozen=True, slots=True)
class Delta:
    """A batch of register versions and set states; merging it is idempotent."""

    registers: tuple[VariableEntry, ...] = ()
    sets: tuple[OrSet, ...] = ()

    def __len__(self) -> int:
        return len(self.registers) + len(self.sets)

    def to_body(self) -> DeltaBody:
        """The wire model."""
        return DeltaBody(
            registers=tuple(e.to_state() for e in self.registers),
            sets=tuple(s.to_state() for s in self.sets),
        )

    def to_msgpack(self) -> bytes:
        """The uncompressed wire bytes."""
        return msgpack.packb(self.to_body().model_dump(mode="python"), use_bin_type=True)

    @classmethod
    def from_body(cls, body: DeltaBody) -> Delta:
        """Build from the wire model."""
        return cls(
            registers=tuple(VariableEntry.from_state(r) for r in body.registers),
            sets=tuple(OrSet.from_state(s) for s in body.sets),
        )

    @classmethod
    def from_msgpack(cls, data: bytes) -> Delta:
        """Parse uncompressed wire bytes; raise ``DecodeError`` saying what is wrong."""
        try:
            raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise DecodeError(f"malformed gossip delta: {type(exc).__name__}: {exc}", reason="malformed") from None
        try:
            return cls.from_body(DeltaBody.model_validate(raw))
        except ValidationError as exc:
            raise DecodeError(format_validation_error(exc, prefix="gossip delta"), reason="schema") from None
        except ValueError as exc:
            raise DecodeError(f"gossip delta: {exc}", reason="schema") from None

    def __repr__(self) -> str:
        return f"Delta({len(self.registers)} registers, {len(self.sets)} sets)"


class ContextMap:
    """Context variables of one workflow, replicated between agents.

    Registers are last-writer-wins by ``VariableEntry.order_key``; sets are add-wins
    (``OrSet``). ``merge`` is commutative, associative and idempotent, so replicas that received
    the same deltas are equal whatever the order or duplication. ``version`` counts local
    changes (own writes and merged news) so ``delta_since(version)`` yields what changed since;
    ``digest``/``stamps``/``missing_for`` drive anti-entropy between peers that lost deltas.
    Expired entries stay in the state (replicas must agree on them) but reads hide them.
    """

    def __init__(self, workflow_id: str, replica_id: str, *, clock: HybridLogicalClock | None = None) -> None:
        """An empty map of ``workflow_id`` kept by agent ``replica_id``."""
        self.workflow_id = workflow_id
        self.replica_id = replica_id
        self.clock = clock or HybridLogicalClock()
        self._registers: dict[str, VariableEntry] = {}
        self._sets: dict[str, OrSet] = {}
        self._changed_at: dict[tuple[str, str], int] = {}
        self._version = 0

    @property
    def version(self) -> int:
        """Local change counter (not comparable between replicas)."""
        return self._version

    # -- local writes ---------------------------------------------------------------------

    def set(
        self,
        name: str,
        value: Any,
        *,
        priority: int = 1,
        expires_at_ms: int | None = None,
        secret: bool = False,
        cold_ref: str = "",
        value_hash: str = "",
    ) -> VariableEntry:
        """Write a new tentative version of ``name``."""
        entry = VariableEntry(
            name=name,
            value=value,
            hlc=self.clock.now(),
            origin=self.replica_id,
            value_hash=value_hash,
            priority=priority,
            expires_at_ms=expires_at_ms,
            secret=secret,
            cold_ref=cold_ref,
        )
        self._put_register(entry)
        return entry

    def delete(self, name: str) -> VariableEntry:
        """Remove ``name`` (a tombstone version, so the delete replicates)."""
        previous = self._registers.get(name)
        entry = VariableEntry(
            name=name,
            value=None,
            hlc=self.clock.now(),
            origin=self.replica_id,
            secret=previous.secret if previous else False,
            deleted=True,
        )
        self._put_register(entry)
        return entry

    def add(self, name: str, *elements: Any, priority: int | None = None, secret: bool | None = None) -> OrSet:
        """Add elements to the set ``name`` (created on first use)."""
        s = self._sets.setdefault(name, OrSet(name))
        for element in elements:
            s.add(element, (self.clock.now(), self.replica_id))
        if priority is not None or secret is not None:
            s.set_meta(self.clock.now(), self.replica_id, priority=priority, secret=secret)
        self._touch("s", name)
        return s

    def discard(self, name: str, *elements: Any) -> OrSet:
        """Remove elements from the set ``name`` (only the adds this replica has seen)."""
        s = self._sets.setdefault(name, OrSet(name))
        if sum(s.remove(element) for element in elements):
            self._touch("s", name)
        return s

    def mark_accepted(self, name: str, value_hash: str) -> bool:
        """Flip the current version of ``name`` to accepted if its value hash is ``value_hash``.

        A set is matched by ``canonical_hash`` of its element list. Returns whether it flipped;
        a newer write since the vote stays tentative (it was not what was voted on).
        """
        entry = self._registers.get(name)
        if entry is not None and entry.value_hash == value_hash and entry.status != "accepted":
            self._registers[name] = entry.accepted()
            self._touch("r", name)
            return True
        s = self._sets.get(name)
        if s is not None and canonical_hash(s.value) == value_hash and s.mark_accepted():
            self._touch("s", name)
            return True
        return False

    # -- reads ----------------------------------------------------------------------------

    def get(self, name: str, *, now_ms: int | None = None) -> VariableEntry | None:
        """The live version of the register ``name`` (None if absent, deleted or expired)."""
        entry = self._registers.get(name)
        return entry if entry is not None and entry.is_live(now_ms) else None

    def value(self, name: str, default: Any = None, *, now_ms: int | None = None) -> Any:
        """The value of ``name``: a register's value or a set's elements."""
        entry = self.get(name, now_ms=now_ms)
        if entry is not None:
            return entry.value
        s = self._sets.get(name)
        if s is not None and (now_ms is None or s.expires_at_ms is None or now_ms < s.expires_at_ms):
            return s.value
        return default

    def set_of(self, name: str) -> OrSet | None:
        """The set ``name``, if any."""
        return self._sets.get(name)

    def entry(self, name: str) -> VariableEntry | None:
        """The latest register version of ``name``, tombstones included."""
        return self._registers.get(name)

    def items(self, *, now_ms: int | None = None) -> Iterator[tuple[str, VariableEntry | OrSet]]:
        """Live variables by name, registers then sets, each sorted by name."""
        for name in sorted(self._registers):
            entry = self._registers[name]
            if entry.is_live(now_ms):
                yield name, entry
        for name in sorted(self._sets):
            yield name, self._sets[name]

    def secret_values(self) -> list[Any]:
        """Every secret value held (for log scrubbing); never log the result."""
        values: list[Any] = [e.value for e in self._registers.values() if e.secret and not e.deleted]
        for s in self._sets.values():
            if s.secret:
                values.extend(s.value)
        return values

    def __len__(self) -> int:
        return len(self._registers) + len(self._sets)

    # -- replication ----------------------------------------------------------------------

    def delta_since(self, version: int = 0) -> Delta:
        """Everything that changed after local ``version`` (0 = the whole state)."""
        registers = tuple(
            self._registers[name]
            for (kind, name), at in sorted(self._changed_at.items())
            if kind == "r" and at > version
        )
        sets = tuple(
            self._sets[name].copy()
            for (kind, name), at in sorted(self._changed_at.items())
            if kind == "s" and at > version
        )
        return Delta(registers, sets)

    def merge(self, delta: Delta) -> list[str]:
        """Join a delta into this replica; return the names that changed."""
        changed = []
        newest = None
        for entry in delta.registers:
            newest = entry.hlc if newest is None or entry.hlc > newest else newest
            mine = self._registers.get(entry.name)
            if mine is None or entry.order_key > mine.order_key:
                self._put_register(entry)
                changed.append(entry.name)
        for incoming in delta.sets:
            mine_set = self._sets.get(incoming.name)
            if mine_set is None:
                self._sets[incoming.name] = incoming.copy()
                self._touch("s", incoming.name)
                changed.append(incoming.name)
            elif mine_set.merge(incoming):
                self._touch("s", incoming.name)
                changed.append(incoming.name)
            for tag in incoming.tags():
                newest = tag[0] if newest is None or tag[0] > newest else newest
        if newest is not None:
            # Later local writes must order after what was seen (a rewrite must win over it).
            self.clock.observe(newest)
        return changed

    def digest(self, bucket_count: int = 16) -> list[bytes]:
        """One 8-byte hash per bucket of keys (empty bytes for an empty bucket)."""
        hashers: dict[int, Any] = {}
        for kind, name, stamp in self._stamp_bytes():
            h = hashers.setdefault(bucket_of(name, bucket_count), hashlib.blake2b(digest_size=8))
            h.update(msgpack.packb([kind, name, stamp], use_bin_type=True))
        return [hashers[i].digest() if i in hashers else b"" for i in range(bucket_count)]

    def stamps(self, buckets: Collection[int] | None, bucket_count: int) -> tuple[dict[str, RegisterStamp], dict[str, bytes]]:
        """Per-key stamps of registers and state hashes of sets in ``buckets`` (None = all)."""

        def wanted(name: str) -> bool:
            return buckets is None or bucket_of(name, bucket_count) in buckets

        registers = {n: e.stamp() for n, e in self._registers.items() if wanted(n)}
        sets = {n: s.state_hash() for n, s in self._sets.items() if wanted(n)}
        return registers, sets

    def missing_for(
        self,
        registers: dict[str, RegisterStamp],
        sets: dict[str, bytes],
        buckets: Collection[int] | None,
        bucket_count: int,
    ) -> Delta:
        """What a peer with these stamps (for ``buckets``) lacks or holds older versions of."""
        mine_r, mine_s = self.stamps(buckets, bucket_count)
        out_r = tuple(
            self._registers[n]
            for n, stamp in sorted(mine_r.items())
            if n not in registers or stamp_order(registers[n]) < stamp_order(stamp)
        )
        out_s = tuple(self._sets[n].copy() for n, h in sorted(mine_s.items()) if sets.get(n) != h)
        return Delta(out_r, out_s)

    def is_behind(self, registers: dict[str, RegisterStamp], sets: dict[str, bytes]) -> bool:
        """Whether a peer with these stamps has something this replica lacks."""
        for name, stamp in registers.items():
            mine = self._registers.get(name)
            if mine is None or stamp_order(stamp) > mine.order_key:
                return True
        return any(name not in self._sets or self._sets[name].state_hash() != h for name, h in sets.items())

    # -- persistence ----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The full state as msgpack (for Redis); ``from_bytes`` restores it."""
        body = self.delta_since(0).to_body().model_dump(mode="python")
        return msgpack.packb({"format": _FORMAT, "workflow_id": self.workflow_id, "state": body}, use_bin_type=True)

    @classmethod
    def from_bytes(
        cls, data: bytes, *, replica_id: str, clock: HybridLogicalClock | None = None
    ) -> ContextMap:
        """Restore a map saved by ``to_bytes``; raise ``DecodeError`` if the bytes are not one."""
        try:
            raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise DecodeError(f"malformed context map: {exc}", reason="malformed") from None
        if not isinstance(raw, dict) or raw.get("format") != _FORMAT or not isinstance(raw.get("workflow_id"), str):
            raise DecodeError(f"context map bytes are not format {_FORMAT}", reason="version")
        try:
            delta = Delta.from_body(DeltaBody.model_validate(raw.get("state")))
        except (ValidationError, ValueError) as exc:
            raise DecodeError(f"context map state is invalid: {exc}", reason="schema") from None
        restored = cls(raw["workflow_id"], replica_id, clock=clock)
        restored.merge(delta)
        return restored

    # -- helpers --------------------------------------------------------------------------

    def _put_register(self, entry: VariableEntry) -> None:
        self._registers[entry.name] = entry
        self._touch("r", entry.name)

    def _touch(self, kind: str, name: str) -> None:
        self._version += 1
        self._changed_at[(kind, name)] = self._version

    def _stamp_bytes(self) -> Iterator[tuple[str, str, Any]]:
        # Sorted: the digest must not depend on the order entries arrived in.
        for name, e in sorted(self._registers.items()):
            yield "r", name, [e.hlc.wall_ms, e.hlc.logical, e.origin, e.status, e.value_hash]
        for name, s in sorted(self._sets.items()):
            yield "s", name, s.state_hash()

    def state_equal(self, other: ContextMap) -> bool:
        """Whether two replicas hold the same state (ignores replica id and version)."""
        return self == other

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ContextMap):
            return NotImplemented
        return (
            self.workflow_id == other.workflow_id
            and self._registers == other._registers
            and self._sets == other._sets
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        # Names only: values (and secrets) never reach a repr.
        return (
            f"ContextMap(workflow_id={self.workflow_id!r}, replica={self.replica_id!r}, "
            f"registers={sorted(self._registers)}, sets={sorted(self._sets)}, version={self._version})"
        )

    __str__ = __repr__

