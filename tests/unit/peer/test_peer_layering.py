"""The peer's layering, read from the source (ast): gossip and quorum are siblings, one module signs.

``mesh.peer`` composes gossip, quorum and trust above them; neither ``mesh.gossip`` nor
``mesh.quorum`` may import the other (or anything above them), and only the trust module
(``mesh/runtime/trust.py``) constructs signers and verifiers, so there is one keyring policy.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

MESH = Path(__file__).resolve().parents[3] / "mesh"
TRUST_MODULE = "mesh/runtime/trust.py"
CONSTRUCTORS = {"EnvelopeSigner", "EnvelopeVerifier", "BallotSigner"}
"""Classes whose instances sign or verify; built only by the trust module."""
FORBIDDEN = {
    "mesh.gossip": ("mesh.quorum", "mesh.peer", "mesh.runtime"),
    "mesh.quorum": ("mesh.gossip", "mesh.peer", "mesh.runtime"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(MESH.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports, at any depth (function-level imports included)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            yield node.lineno, base
            if base == "mesh":  # ``from mesh import quorum`` imports the subpackage
                for alias in node.names:
                    yield node.lineno, f"{base}.{alias.name}"


def _sources() -> list[Path]:
    return sorted(MESH.rglob("*.py"))


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_tree_is_where_this_test_looks() -> None:
    assert (MESH / "gossip" / "__init__.py").exists() and (MESH / "quorum" / "__init__.py").exists()
    assert (MESH.parent / TRUST_MODULE).exists()


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_gossip_and_quorum_are_siblings(package: str) -> None:
    offences = [
        f"{path.relative_to(MESH.parent)}:{line} imports {name}"
        for path in _sources()
        if _within(_module_name(path), package)
        for line, name in _imports(path)
        if any(_within(name, banned) for banned in FORBIDDEN[package])
    ]
    assert not offences, "\n".join(offences)


def test_only_the_trust_module_constructs_signers_and_verifiers() -> None:
    offences = []
    for path in _sources():
        rel = path.relative_to(MESH.parent).as_posix()
        if rel == TRUST_MODULE:
            continue
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            if name in CONSTRUCTORS:
                offences.append(f"{rel}:{node.lineno} constructs {name}")
    assert not offences, "\n".join(offences)
