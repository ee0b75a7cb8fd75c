"""Test kit for your own roles and workflows: no Kafka, no Redis, no paid model.

``InMemoryMesh`` runs a workflow of your roles in one process over the in-memory bus and store
(the same worker and turn loop as ``mesh agent run``). ``FakeAnthropicServer`` is a local Messages
API that the real ``anthropic`` SDK talks to, scripted with ``FakeReply`` and recording every
request. ``MockService`` is an HTTP service for executors, answered in memory and recording calls
(with a duplicate-effect count). The example under "Testing your roles" in the README uses only
``mesh.roles`` and ``mesh.testing``.
"""

from mesh.llm.fake_anthropic import (
    FakeAnthropicServer,
    FakeReply,
    RecordedRequest,
    first_tool_responder,
)
from mesh.testing._mesh import InMemoryMesh, WorkflowTimeout, reasoner_for
from mesh.testing._service import MockService, ServiceCall

__all__ = [
    # a mesh of your roles in one process
    "InMemoryMesh",
    "WorkflowTimeout",
    # a fake model provider (the Anthropic Messages API)
    "FakeAnthropicServer",
    "FakeReply",
    "RecordedRequest",
    "first_tool_responder",
    "reasoner_for",
    # mock outside services
    "MockService",
    "ServiceCall",
]
