"""One trust object per agent: the peer's gossip, its votes and the log's guard read one keyring."""

from __future__ import annotations

import asyncio
import time

import pytest

from mesh.bus import InMemoryBroker, InMemoryBus
from mesh.errors import UsageError
from mesh.gossip import GossipNodeOptions
from mesh.peer import Peer
from mesh.runtime.trust import AgentTrust
from mesh.security import EnvelopeRejected, Keyring, generate_keypair
from protocols import Envelope, GossipDigest, Topics
from protocols.hlc import HlcTimestamp

WF = "wf-trust-unit"


def _digest_from(trust: AgentTrust) -> Envelope:
    digest = GossipDigest(buckets=(b"",) * 8, entries=0)
    now = HlcTimestamp(time.time_ns() // 1_000_000, 0)
    return trust.sign(Envelope.of(digest, sender=trust.agent_id, workflow_id=WF, hlc=now))


async def test_gossip_votes_and_the_log_guard_share_the_trusts_keyring() -> None:
    alice, bob = generate_keypair("alice"), generate_keypair("bob")
    trust = AgentTrust(alice, keyring=Keyring({"alice": alice.public_key}))
    peer = Peer(trust, InMemoryBus(), topics=Topics("t"), validators={"alice", "bob"})
    assert peer.keyring is trust.keyring
    assert peer.verifier.keyring is trust.keyring and trust.verifier.keyring is trust.keyring
    assert peer.quorum is not None and peer.quorum.book.keyring is trust.keyring
    from_bob = _digest_from(AgentTrust(bob, keyring=Keyring({"bob": bob.public_key})))
    # bob is unknown: gossip and the log both refuse him...
    with pytest.raises(EnvelopeRejected):
        peer.verifier.verify(from_bob)
    with pytest.raises(EnvelopeRejected):
        await trust(from_bob)
    # ...and one admission into the trust's keyring admits him everywhere.
    trust.keyring.add("bob", bob.public_key)
    peer.verifier.verify(from_bob)
    await trust(from_bob)
    assert peer.verifier.accepted == trust.verifier.accepted == 1


async def test_a_trust_without_a_key_store_has_nothing_to_refresh() -> None:
    alice = generate_keypair("alice")
    trust = AgentTrust(alice)  # a fresh keyring holding alice's own key
    assert "alice" in trust.keyring and len(trust.keyring) == 1
    await trust.register()
    await trust.refresh()
    await asyncio.wait_for(trust.keep_fresh(), 1)  # returns at once: no store to poll
    assert not trust.registered
    assert trust.ballot_signer().voter == "alice"


async def test_routes_are_fixed_before_the_node_starts() -> None:
    alice = generate_keypair("alice")
    broker, topics = InMemoryBroker(default_partitions=1), Topics("r")
    peer = Peer(
        AgentTrust(alice),
        InMemoryBus(broker, topics=topics),
        topics=topics,
        node_options=GossipNodeOptions(poll_timeout_ms=50, start_timeout_s=2),
    )

    async def handler(envelope: Envelope) -> None:
        return None

    with pytest.raises(UsageError, match="own"):
        peer.node.route(topics.gossip, handler)
    async with peer:
        with pytest.raises(UsageError, match="before start"):
            peer.node.route("other", handler)
