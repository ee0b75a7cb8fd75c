"""The public surface of mesh.peer, pinned: changing it must be deliberate."""

from __future__ import annotations

import mesh.peer as package


def test_peer_public_names_are_pinned() -> None:
    assert sorted(package.__all__) == [
        "Peer",
        "PeerOptions",
        "PeerTrust",
        "VARIABLE_FACT",
        "default_checkers",
    ]
    for name in package.__all__:
        assert getattr(package, name) is not None
