"""Layering: ``mesh`` never imports ``agents`` (not by import, not by a module name in a string);
``agents`` reaches the ``mesh`` command and role lookup through entry points instead."""

from __future__ import annotations

import ast
import importlib
import re
import tomllib
from pathlib import Path

import pytest

from mesh.plugins import COMMANDS_GROUP, ROLES_GROUP

ROOT = Path(__file__).resolve().parents[2]
_MODULE_NAME = re.compile(r"^agents(\.[A-Za-z_]\w*)+(:\w+)?$")


def _agents_references(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] == "agents"]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "agents"
        ):
            found.append(f"from {node.module} import ...")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _MODULE_NAME.match(node.value)
        ):
            found.append(f"module name {node.value!r}")
    return [f"{path.relative_to(ROOT)}:{ref}" for ref in found]


def test_mesh_never_imports_agents() -> None:
    offences = [
        ref for path in sorted((ROOT / "mesh").rglob("*.py")) for ref in _agents_references(path)
    ]
    assert offences == []


def test_the_walk_finds_each_kind_of_reference(tmp_path: Path) -> None:
    # The walk can fail: each form the layering forbids is caught.
    probe = ROOT / "mesh" / "_layering_probe.py"
    try:
        probe.write_text(
            "import agents.demo\nfrom agents.roles import ROLES\n"
            "def f():\n    from agents import campaign\n    return 'agents.roles'\n"
        )
        refs = _agents_references(probe)
    finally:
        probe.unlink()
    assert [r.split(":", 1)[1] for r in refs] == [
        "import agents.demo",
        "from agents.roles import ...",
        "from agents import ...",
        "module name 'agents.roles'",
    ]


def _declared(group: str) -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(data["project"]["entry-points"][group])


@pytest.mark.parametrize("group", [COMMANDS_GROUP, ROLES_GROUP])
def test_the_declared_entry_points_resolve(group: str) -> None:
    declared = _declared(group)
    assert declared, f"pyproject.toml declares nothing under {group}"
    for value in declared.values():
        module, _, attr = value.partition(":")
        target = importlib.import_module(module)
        if attr:
            assert callable(getattr(target, attr))
        else:
            assert {"identity", "fetch", "validate", "report"} <= set(target.ROLES)


def test_agents_register_the_demo_and_the_campaign_commands() -> None:
    import typer

    from agents.cli import register
    from mesh.chaos.cli import app as chaos_app

    app = typer.Typer()
    before = {c.name for c in chaos_app.registered_commands}
    try:
        register(app)
        assert [c.name for c in app.registered_commands] == ["demo"]
        assert {c.name for c in chaos_app.registered_commands} >= {"list", "run", "check"}
    finally:
        chaos_app.registered_commands[:] = [
            c for c in chaos_app.registered_commands if c.name in before
        ]
