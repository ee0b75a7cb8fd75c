"""Gossip of context variables: hybrid logical clock, replicated map (CRDT), anti-entropy.

Each workflow's context variables live in a ``ContextMap`` on every agent that takes part.
Registers are last-writer-wins by (HLC, origin); collections are add-wins sets. Agents
broadcast compressed deltas on local writes and a digest every anti-entropy period; a peer that
finds a differing bucket sends its per-key stamps and is pushed what it misses. Dissemination
is AP: replicas diverge during a partition and converge after it heals.
"""

from mesh.gossip._agent import GossipAgent, GossipOptions, GossipTransport
from mesh.gossip._clock import ClockDriftError, HybridLogicalClock, wall_clock_ms
from mesh.gossip._codec import DEFAULT_COMPRESS_MIN_BYTES, decode_delta, encode_delta
from mesh.gossip._cold import (
    ColdValueError,
    ColdValues,
    CompactedValue,
    CompactionOptions,
    approx_tokens,
)
from mesh.gossip._entries import EntryStatus, OrSet
from mesh.gossip._entries import VariableEntry as VariableVersion
from mesh.gossip._map import ContextMap, Delta, bucket_of
from mesh.gossip._memory import MemoryGossipNetwork, NetworkFaults
from mesh.gossip._persist import ContextMapArchive
from mesh.gossip.node import GossipNode, GossipNodeOptions

__all__ = [
    # clock
    "ClockDriftError",
    "HybridLogicalClock",
    "wall_clock_ms",
    # replicated map
    "ContextMap",
    "Delta",
    "EntryStatus",
    "OrSet",
    "VariableVersion",
    "bucket_of",
    # wire compression
    "DEFAULT_COMPRESS_MIN_BYTES",
    "decode_delta",
    "encode_delta",
    # semantic compression
    "ColdValueError",
    "ColdValues",
    "CompactedValue",
    "CompactionOptions",
    "approx_tokens",
    # dissemination
    "GossipAgent",
    "GossipOptions",
    "GossipTransport",
    "MemoryGossipNetwork",
    "NetworkFaults",
    # persistence (the store itself is mesh.store.ContextMapStore)
    "ContextMapArchive",
    # over the bus (votes and trust are composed above, by mesh.peer.Peer)
    "GossipNode",
    "GossipNodeOptions",
]
