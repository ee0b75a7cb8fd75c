"""The peer: one agent's gossip, votes and trust composed above ``mesh.gossip`` and ``mesh.quorum``.

``mesh.gossip`` disseminates context variables, ``mesh.quorum`` votes on facts; they never import
each other. The agent's trust object (``mesh.runtime.trust.AgentTrust``) is the only builder of
signers and verifiers and owns the keyring refresh policy. ``Peer`` composes the three over one
bus subscription; an agent process builds one and hands its gossip node to the role worker.
"""

from mesh.peer._peer import VARIABLE_FACT, Peer, PeerOptions, PeerTrust, default_checkers

__all__ = [
    # the composition
    "Peer",
    "PeerOptions",
    "PeerTrust",
    # voting on gossiped variables
    "VARIABLE_FACT",
    "default_checkers",
]
