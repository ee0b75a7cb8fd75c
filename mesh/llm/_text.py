"""Small deterministic text and schema helpers shared by the rule reasoner and the fake server."""

from __future__ import annotations

import re
from typing import Any

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """Sentences and lines of ``text``, stripped, empty ones dropped."""
    return [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]


def extractive_summary(text: str, *, max_chars: int) -> str:
    """Leading whole sentences of ``text`` that fit in ``max_chars`` (the first one cut if needed)."""
    if max_chars <= 0:
        return ""
    out: list[str] = []
    used = 0
    for sentence in split_sentences(text):
        extra = len(sentence) + (1 if out else 0)
        if used + extra > max_chars:
            if not out:
                out.append(sentence[:max_chars].rstrip())
            break
        out.append(sentence)
        used += extra
    return " ".join(out)


def example_value(schema: dict[str, Any], name: str = "value") -> Any:
    """A plausible value for a JSON schema: default, const, enum/examples, else by type."""
    for key in ("default", "const"):
        if key in schema:
            return schema[key]
    for key in ("enum", "examples"):
        if schema.get(key):
            return schema[key][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        return example_object(schema)
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "null":
        return None
    if schema.get("format") == "uri":
        return f"https://example.invalid/{name}"
    return f"example-{name}"


def example_object(schema: dict[str, Any]) -> dict[str, Any]:
    """Fill the required properties of an object schema (all of them if none are required)."""
    properties: dict[str, Any] = schema.get("properties") or {}
    names = schema.get("required") or list(properties)
    return {name: example_value(properties.get(name) or {}, name) for name in names}
