"""Extensions found through package entry points: ``mesh`` commands and roles modules.

Why a boundary here: ``mesh`` is the product and never imports the packages built on it (the
example workload in ``agents/``, a user's roles). Those packages declare themselves in their
``pyproject.toml`` instead, and ``mesh`` finds them by entry point group:

- ``agent_mesh.commands``: ``name = "pkg.module:register"``, a callable ``register(app)`` that adds
  commands to the ``mesh`` Typer app (the demo and the fault campaign are registered this way).
- ``agent_mesh.roles``: ``name = "pkg.roles"``, a module with a ``ROLES`` mapping;
  ``mesh agent run --role R`` serves R from it when ``--roles-module`` is not given.
- ``agent_mesh.observers``: ``name = "pkg.module:make"``, a ``mesh.runtime.observers.TurnObserver``
  subclass or a callable ``make(agent_id, role)`` returning one; every agent process adds it to the
  observers of its turn loop (a trace sink, an audit log, a metrics backend).

Entry points are package metadata: after adding one, reinstall the package (``pip install -e .``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from mesh.errors import ConfigError

__all__ = [
    "COMMANDS_GROUP",
    "OBSERVERS_GROUP",
    "ROLES_GROUP",
    "load_observers",
    "load_roles",
    "register_commands",
    "roles_modules",
]

COMMANDS_GROUP = "agent_mesh.commands"
"""Entry point group of ``register(app)`` callables that add ``mesh`` commands."""

ROLES_GROUP = "agent_mesh.roles"
"""Entry point group of roles modules (each with a ``ROLES`` mapping)."""

OBSERVERS_GROUP = "agent_mesh.observers"
"""Entry point group of turn observers (a ``TurnObserver`` subclass or ``make(agent_id, role)``)."""


def _entries(group: str) -> list[EntryPoint]:
    return sorted(entry_points(group=group), key=lambda ep: ep.name)


def register_commands(app: Any) -> list[str]:
    """Let every ``agent_mesh.commands`` plugin add its commands to ``app``; return their names.

    A plugin that fails to load is reported on stderr and skipped: the rest of ``mesh`` works
    without it.
    """
    loaded = []
    for ep in _entries(COMMANDS_GROUP):
        try:
            ep.load()(app)
        except Exception as exc:  # a broken plugin must not take the whole CLI down
            sys.stderr.write(
                f"mesh: warning: plugin {ep.name} ({ep.value}) not loaded: {type(exc).__name__}: {exc}\n"
            )
            continue
        loaded.append(ep.name)
    return loaded


def roles_modules() -> list[str]:
    """The roles modules registered under ``agent_mesh.roles``, by entry point name."""
    return [ep.value for ep in _entries(ROLES_GROUP)]


def load_roles(module: str = "") -> tuple[str, Mapping[str, Any]]:
    """``(module, ROLES)`` of ``module``, or of the one registered roles module when ``module`` is empty."""
    if not module:
        registered = roles_modules()
        if not registered:
            raise ConfigError(
                f"no roles module: pass --roles-module, or register one under the entry point group {ROLES_GROUP}"
            )
        if len(registered) > 1:
            raise ConfigError(
                f"several roles modules are registered ({', '.join(registered)}); pass --roles-module"
            )
        module = registered[0]
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"cannot import roles module {module!r}: {exc}") from None
    roles = getattr(mod, "ROLES", None)
    if not isinstance(roles, Mapping):
        raise ConfigError(f"roles module {module!r} has no ROLES mapping")
    return module, roles


def load_observers(agent_id: str, role: str) -> list[Any]:
    """One observer from every ``agent_mesh.observers`` plugin, for agent ``agent_id`` serving ``role``.

    An entry that is a class is called with no arguments, anything else with ``(agent_id, role)``.
    A plugin that fails to load or to build is reported on stderr and skipped: the agent runs
    without it, as a broken telemetry sink must not stop the work it watches.
    """
    from mesh.runtime.observers import TurnObserver  # lazily: mesh.runtime imports this module

    observers = []
    for ep in _entries(OBSERVERS_GROUP):
        try:
            target = ep.load()
            observer = target() if isinstance(target, type) else target(agent_id, role)
            if not isinstance(observer, TurnObserver):
                raise TypeError(f"built a {type(observer).__name__}, not a mesh.runtime.observers.TurnObserver")
        except Exception as exc:
            sys.stderr.write(
                f"mesh: warning: observer plugin {ep.name} ({ep.value}) not loaded: {type(exc).__name__}: {exc}\n"
            )
            continue
        observers.append(observer)
    return observers
