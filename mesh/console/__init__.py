"""The operator's console: a web app and read-only JSON API over the mesh (``mesh console``).

It reads Redis (run index, checkpoints, gossip maps, votes, scratchpads on disk) and tails Kafka
for live updates; it never holds the data key, so secret values cannot reach a browser. Writes
(decisions on escalations) need the bearer token and are signed events on the workflow log.
"""

from mesh.console._app import Decide, DecisionRequest, create_app
from mesh.console._data import ConsoleData, TimelineEvent, decode_checkpoint, decode_context_map
from mesh.console._serve import build_app, mesh_decide, serve
from mesh.console._settings import ConsoleSettings

__all__ = [
    # the app
    "ConsoleSettings",
    "build_app",
    "create_app",
    "serve",
    # what it reads
    "ConsoleData",
    "TimelineEvent",
    "decode_checkpoint",
    "decode_context_map",
    # decisions
    "Decide",
    "DecisionRequest",
    "mesh_decide",
]
