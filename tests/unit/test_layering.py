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


# -- tooling: mesh.testing and mesh.evals sit above the runtime ------------------------------------

TOOLING = ("mesh.testing", "mesh.evals")
"""Packages of test and evaluation tooling: no product module imports them."""
NOT_PRODUCT = ("mesh.testing", "mesh.evals", "mesh.dev", "mesh.chaos", "mesh.cli")
"""Modules that are tooling or the command line (the ``mesh`` command wires ``mesh eval`` up)."""


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    """Every module ``path`` (the module ``module``) imports, at any depth: lazy and
    ``TYPE_CHECKING`` imports, relative imports resolved, ``from mesh import testing`` as
    ``mesh.testing``, and ``importlib.import_module("mesh.testing...")`` with a literal name."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def _tooling_imports(path: Path) -> list[str]:
    module = _module_name(path)
    return sorted(
        {
            f"{path.relative_to(ROOT)}:{line} imports {name}"
            for line, name in _imported_modules(path, module)
            if any(_within(name, tool) for tool in TOOLING)
        }
    )


def _product_modules() -> list[Path]:
    return [
        path
        for path in sorted((ROOT / "mesh").rglob("*.py"))
        if not any(_within(_module_name(path), other) for other in NOT_PRODUCT)
    ]


def test_product_modules_never_import_the_tooling() -> None:
    offences = [ref for path in _product_modules() for ref in _tooling_imports(path)]
    assert offences == [], "product modules importing mesh.testing or mesh.evals:\n" + "\n".join(
        offences
    )


def test_the_product_is_what_remains_without_the_tooling() -> None:
    # The walk covers the runtime (not an empty list) and skips exactly the tooling and the CLI.
    names = {_module_name(path) for path in _product_modules()}
    assert {"mesh.llm", "mesh.runtime.agent", "mesh.peer", "mesh.store"} <= names
    assert not any(_within(n, skipped) for n in names for skipped in NOT_PRODUCT)
    assert (ROOT / "mesh" / "testing" / "__init__.py").exists()
    assert (ROOT / "mesh" / "evals" / "__init__.py").exists()


def test_the_tooling_walk_finds_each_kind_of_import() -> None:
    # The check can fail: a probe inside a product package, importing the tooling every way.
    probe = ROOT / "mesh" / "llm" / "_tooling_probe.py"
    try:
        probe.write_text(
            "from typing import TYPE_CHECKING\n"
            "import mesh.testing\n"
            "from mesh.evals import run_retry_eval\n"
            "from mesh import testing\n"
            "if TYPE_CHECKING:\n    from mesh.testing._anthropic import FakeReply\n"
            "def f():\n    from ..evals import cli\n    import importlib\n"
            "    return importlib.import_module('mesh.testing.peer_process')\n"
            "from mesh.testingx import nothing\n"  # a mere prefix is not the package
        )
        refs = _tooling_imports(probe)
        assert probe in _product_modules()
    finally:
        probe.unlink()
    assert [r.split(":", 1)[1] for r in refs] == sorted(
        [
            "2 imports mesh.testing",
            "3 imports mesh.evals",
            "3 imports mesh.evals.run_retry_eval",
            "4 imports mesh.testing",
            "6 imports mesh.testing._anthropic",
            "6 imports mesh.testing._anthropic.FakeReply",
            "8 imports mesh.evals",
            "8 imports mesh.evals.cli",
            "10 imports mesh.testing.peer_process",
        ]
    )
