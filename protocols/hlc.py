"""The value type of a hybrid-logical-clock timestamp (the clock itself lives in mesh.gossip)."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["HlcTimestamp"]


class HlcTimestamp(NamedTuple):
    """A hybrid logical clock reading: wall milliseconds, then a logical counter.

    Tuples compare field by field, so ``a < b`` is the HLC order. Ties between different
    nodes are broken by the caller (the origin id), not here.
    """

    wall_ms: int
    """Physical component, milliseconds since the Unix epoch (max seen, not the local clock)."""

    logical: int = 0
    """Logical counter that orders events within the same ``wall_ms``."""

    def pack(self) -> list[int]:
        """The wire form, ``[wall_ms, logical]``."""
        return [self.wall_ms, self.logical]

    @classmethod
    def unpack(cls, value: object) -> HlcTimestamp:
        """Parse the wire form; raise ``ValueError`` if it is not two non-negative ints."""
        if (
            not isinstance(value, list | tuple)
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        ):
            raise ValueError(f"hlc must be [wall_ms, logical] of non-negative ints, got {value!r}")
        return cls(int(value[0]), int(value[1]))

    def __str__(self) -> str:
        return f"{self.wall_ms}.{self.logical}"
