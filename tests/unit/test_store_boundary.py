"""Only ``mesh.store`` (and ``mesh.dev``, which runs redis-server) imports redis: the rest receives stores."""

from __future__ import annotations

import ast
from pathlib import Path

MESH = Path(__file__).resolve().parents[2] / "mesh"

ALLOWED = ("store", "dev")
"""Packages of ``mesh`` that may import redis."""


def _redis_imports(path: Path) -> list[str]:
    """Every ``import redis...`` / ``from redis... import`` in ``path``, at any depth (lazy imports too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [
            f"{path.relative_to(MESH.parent)}:{node.lineno}: {n}"
            for n in names
            if n.split(".")[0] == "redis"
        ]
    return found


def test_only_mesh_store_and_mesh_dev_import_redis() -> None:
    offenders = [
        hit
        for path in sorted(MESH.rglob("*.py"))
        if path.relative_to(MESH).parts[0] not in ALLOWED
        for hit in _redis_imports(path)
    ]
    assert offenders == [], "redis imported outside mesh/store and mesh/dev:\n" + "\n".join(
        offenders
    )


def test_the_walk_sees_redis_imports() -> None:
    # The check above can fail: the store's Redis adapter does import redis, lazily or not.
    assert _redis_imports(MESH / "store" / "redis" / "_connection.py")
