"""Validation of decisions against a step's action schemas (a JSON-schema subset)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mesh.errors import PermanentError

__all__ = ["InvalidDecision", "check_params", "schema_errors"]


class InvalidDecision(PermanentError):
    """A decision that cannot be executed; the message is fed back to the reasoner to repair it."""


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list, tuple),
    "null": (type(None),),
}


def schema_errors(value: Any, schema: Mapping[str, Any], path: str = "params") -> list[str]:
    """Every violation of ``schema`` by ``value``, as ``path: problem`` strings.

    Supports type, enum, required, properties, additionalProperties (bool), items, minimum,
    maximum, minLength, maxLength, minItems: what action schemas use.
    """
    errors: list[str] = []
    kind = schema.get("type")
    if kind is not None:
        kinds = [kind] if isinstance(kind, str) else list(kind)
        ok = False
        for k in kinds:
            types = _TYPES.get(k, ())
            if isinstance(value, types) and not (k in ("integer", "number") and isinstance(value, bool)):
                ok = True
        if not ok:
            return [f"{path}: expected {' or '.join(kinds)}, got {type(value).__name__} {value!r}"[:200]]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {list(schema['enum'])}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} is below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} is above the maximum {schema['maximum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters")
    if isinstance(value, dict):
        props: Mapping[str, Any] = schema.get("properties") or {}
        for name in schema.get("required") or ():
            if name not in value:
                errors.append(f"{path}.{name}: required parameter is missing")
        if schema.get("additionalProperties") is False:
            for name in value:
                if name not in props:
                    errors.append(f"{path}.{name}: unknown parameter (allowed: {', '.join(props) or 'none'})")
        for name, sub in props.items():
            if name in value:
                errors.extend(schema_errors(value[name], sub, f"{path}.{name}"))
    if isinstance(value, list | tuple):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        items = schema.get("items")
        if isinstance(items, Mapping):
            for i, item in enumerate(value):
                errors.extend(schema_errors(item, items, f"{path}[{i}]"))
    return errors


def check_params(action: str, params: Mapping[str, Any], schema: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """Raise ``InvalidDecision`` naming every problem, or return when the decision is executable."""
    if action not in allowed:
        raise InvalidDecision(f"unknown action {action!r}; allowed actions: {', '.join(allowed)}")
    errors = schema_errors(dict(params), schema)
    if errors:
        raise InvalidDecision(f"invalid parameters for {action!r}: " + "; ".join(errors))
