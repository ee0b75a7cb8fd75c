"""A real installed distribution (a ``.dist-info`` on a path entry) that registers turn observers.

``install(path)`` writes the package ``turn_log_plugin`` and its metadata under ``path``; with
``path`` on ``sys.path`` (or ``PYTHONPATH`` of an agent process) ``importlib.metadata`` finds its
``agent_mesh.observers`` entry points as it would after ``pip install``. The good observer appends
one JSON line per finished turn to the file named by ``TURN_LOG_PATH``; the broken ones fail to load
or build something that is not an observer.
"""

from __future__ import annotations

from pathlib import Path

PLUGIN = '''
import json, os
from mesh.runtime.observers import TurnObserver


class TurnLog(TurnObserver):
    def __init__(self, agent_id="?", role="?"):
        self.agent_id, self.role = agent_id, role

    async def turn_ended(self, event):
        with open(os.environ["TURN_LOG_PATH"], "a") as f:
            f.write(json.dumps({"agent": self.agent_id, "role": self.role, "workflow": event.workflow_id,
                                "step": event.step_id, "turn": event.turn, "action": event.action,
                                "params": {k: str(v) for k, v in event.params.items()}}) + "\\n")


def make(agent_id, role):
    return TurnLog(agent_id, role)


def not_an_observer(agent_id, role):
    return object()
'''

ENTRY_POINTS = """[agent_mesh.observers]
turn-log = turn_log_plugin:make
a-class = turn_log_plugin:TurnLog
broken-import = turn_log_plugin_missing:make
not-an-observer = turn_log_plugin:not_an_observer
"""


def install_distribution(path: Path, module: str, source: str, entry_points: str) -> Path:
    """Write module ``module`` (``source``) and a distribution of it declaring ``entry_points``
    (an ``entry_points.txt`` body) under ``path``; return ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{module}.py").write_text(source)
    info = path / f"{module}-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    return path


def install(path: Path) -> Path:
    """Write the turn-log plugin and its distribution metadata under ``path``; return ``path``."""
    return install_distribution(path, "turn_log_plugin", PLUGIN, ENTRY_POINTS)
