"""Test kit for your own roles and workflows: no Kafka, no Redis, no paid model.

Tooling, not runtime: no product module of ``mesh`` imports this package (a test pins it).
``InMemoryMesh`` runs a workflow of your roles in one process over the in-memory bus and store
(the same worker and turn loop as ``mesh agent run``). ``FakeAnthropicServer`` is a local Messages
API that the real ``anthropic`` SDK talks to, scripted with ``FakeReply`` and recording every
request (``python -m mesh.testing.fake_anthropic`` serves it as a process). ``MockService`` is an
HTTP service for executors, answered in memory and recording calls (with a duplicate-effect
count). ``PeerProcess`` runs one ``mesh.peer.Peer`` on real Kafka (and Redis) in a child process
(``python -m mesh.testing.peer_process``) for fault injection: SIGKILL it, restart it. The
example under "Testing your roles" in the README uses only ``mesh.roles`` and ``mesh.testing``.
"""

from mesh.testing._anthropic import (
    FakeAnthropicServer,
    FakeReply,
    NeedleResponder,
    RecordedRequest,
    Responder,
    first_tool_responder,
)
from mesh.testing._mesh import InMemoryMesh, WorkflowTimeout, reasoner_for
from mesh.testing._peer_process import PeerProcess, PeerProcessConfig
from mesh.testing._service import MockService, ServiceCall

__all__ = [
    # a mesh of your roles in one process
    "InMemoryMesh",
    "WorkflowTimeout",
    # a fake model provider (the Anthropic Messages API)
    "FakeAnthropicServer",
    "FakeReply",
    "RecordedRequest",
    "Responder",
    "first_tool_responder",
    "NeedleResponder",
    "reasoner_for",
    # mock outside services
    "MockService",
    "ServiceCall",
    # a real peer (gossip, votes, trust on Kafka) in a process of its own, for fault injection
    "PeerProcess",
    "PeerProcessConfig",
]
