"""The public surface of mesh.gossip, pinned: changing it must be deliberate."""

from __future__ import annotations

import mesh.gossip as package


def test_gossip_public_names_are_pinned():
    assert sorted(package.__all__) == [
        "ClockDriftError",
        "ColdValueError",
        "ColdValues",
        "CompactedValue",
        "CompactionOptions",
        "ContextMap",
        "ContextMapArchive",
        "DEFAULT_COMPRESS_MIN_BYTES",
        "Delta",
        "EntryStatus",
        "GossipAgent",
        "GossipNode",
        "GossipNodeOptions",
        "GossipOptions",
        "GossipTransport",
        "HybridLogicalClock",
        "MemoryGossipNetwork",
        "NetworkFaults",
        "OrSet",
        "VariableEntry",
        "approx_tokens",
        "bucket_of",
        "decode_delta",
        "encode_delta",
        "wall_clock_ms",
    ]


def test_gossip_every_exported_name_exists_and_is_documented():
    assert len(set(package.__all__)) == len(package.__all__)
    for name in package.__all__:
        obj = getattr(package, name)
        if callable(obj) and getattr(obj, "__module__", "").startswith("mesh."):
            assert obj.__doc__, f"{name} has no docstring"
