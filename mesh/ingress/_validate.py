"""Turning the bytes of one task event into a workflow to submit, or a reason to refuse it."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from protocols import (
    TASK_EVENT_SCHEMA,
    WorkflowSpec,
    WorkflowSpecError,
    load_workflow_spec,
)

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "TaskEventRejected",
    "TaskRequest",
    "WorkflowCatalog",
    "event_digest",
    "parse_task_event",
]

log = logging.getLogger("mesh.ingress")

DEFAULT_MAX_EVENT_BYTES = 1_048_576
"""Largest task event accepted (the broker's default ``max.message.bytes``)."""

_MAX_ERROR_CHARS = 300

_VALIDATOR = jsonschema.Draft202012Validator(TASK_EVENT_SCHEMA)


class TaskEventRejected(Exception):
    """A task event that will never be valid: dead-letter it with ``reason`` and go on."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message[:_MAX_ERROR_CHARS])
        self.reason = reason
        """Short code: ``oversize``, ``malformed``, ``schema``, ``unknown_workflow``, ``invalid_spec``."""


@dataclass(frozen=True)
class TaskRequest:
    """A valid task event, resolved to the workflow it asks for."""

    source: str
    """CloudEvents ``source``."""
    event_id: str
    """CloudEvents ``id``."""
    workflow_id: str
    """The workflow id to submit under (given, or derived from source and id)."""
    spec: WorkflowSpec
    """The workflow to run."""
    variables: Mapping[str, Any] = field(default_factory=dict)
    """Initial variables overriding the spec's."""
    traceparent: str = ""
    """The producer's W3C trace context, if it sent one (CloudEvents tracing extension)."""

    @property
    def dedupe_id(self) -> str:
        """A fixed-size digest of (source, id): the CloudEvents identity of the event."""
        return event_digest(self.source, self.event_id)


def event_digest(source: str, event_id: str) -> str:
    """32 hex chars identifying (source, id); safe as a Redis key part whatever the producer sent."""
    return hashlib.blake2b(f"{source}\x1f{event_id}".encode(), digest_size=16).hexdigest()


class WorkflowCatalog:
    """Workflow specs a task event may name, by spec name (and file stem), loaded once."""

    def __init__(self, specs: Mapping[str, WorkflowSpec] | None = None) -> None:
        """Serve ``specs`` by name."""
        self._specs = dict(specs or {})

    @classmethod
    def from_dir(cls, directory: Path | None) -> WorkflowCatalog:
        """Every ``*.yaml``/``*.yml``/``*.json`` spec under ``directory``; invalid files are skipped, logged."""
        specs: dict[str, WorkflowSpec] = {}
        if directory is None or not directory.is_dir():
            return cls(specs)
        for path in sorted(directory.iterdir()):
            if path.suffix not in (".yaml", ".yml", ".json"):
                continue
            try:
                spec = load_workflow_spec(path)
            except WorkflowSpecError as exc:
                log.warning("skipping workflow spec %s: %s", path, exc)
                continue
            specs.setdefault(spec.name, spec)
            specs.setdefault(path.stem, spec)
        return cls(specs)

    def get(self, name: str) -> WorkflowSpec | None:
        """The spec called ``name``, or None."""
        return self._specs.get(name)

    def names(self) -> list[str]:
        """Names served, sorted."""
        return sorted(self._specs)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _describe(error: ValidationError) -> str:
    """One line naming where and which rule failed, never the offending value (it may be a secret)."""
    where = error.json_path
    rule, expected = error.validator, error.validator_value
    if rule == "required":
        what = error.message  # names the missing property, not a value
    elif rule in ("additionalProperties", "propertyNames") and error.validator_value is False:
        what = error.message  # names the unexpected properties
    elif rule == "propertyNames":
        what = f"property names must match {error.validator_value.get('pattern', '')}"
    elif rule == "oneOf":
        what = "must hold exactly one of 'workflow' or 'spec'"
    elif rule == "type":
        what = f"must be of type {expected}"
    elif rule == "const":
        what = f"must be {json.dumps(expected)}"
    elif rule == "pattern":
        what = f"must match {expected}"
    elif rule in ("minLength", "maxLength", "maxProperties", "minProperties"):
        what = f"violates {rule} {expected}"
    else:
        what = f"fails {rule}"
    return f"{where}: {what}"


def parse_task_event(
    value: bytes | None,
    catalog: WorkflowCatalog,
    *,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> TaskRequest:
    """Validate one record value as a task event; raise ``TaskEventRejected`` saying why not."""
    if value is None:
        raise TaskEventRejected("record has no value (tombstone)", reason="malformed")
    if len(value) > max_bytes:
        raise TaskEventRejected(f"event of {len(value)} bytes exceeds {max_bytes}", reason="oversize")
    try:
        event = json.loads(value.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise TaskEventRejected(f"not UTF-8 at byte {exc.start}", reason="malformed") from None
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        text = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        pos = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise TaskEventRejected(f"not JSON: {text}{pos}", reason="malformed") from None
    try:
        errors = sorted(_VALIDATOR.iter_errors(event), key=lambda e: (len(e.path), e.json_path))
    except RecursionError:
        raise TaskEventRejected("event nested too deeply", reason="malformed") from None
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise TaskEventRejected(f"not a task event: {_describe(first)}{more}", reason="schema")
    data: dict[str, Any] = event["data"]
    if "workflow" in data:
        spec = catalog.get(data["workflow"])
        if spec is None:
            known = ", ".join(catalog.names()) or "none"
            raise TaskEventRejected(
                f"unknown workflow {data['workflow']!r}; known: {known}", reason="unknown_workflow"
            )
    else:
        try:
            spec = WorkflowSpec.parse(data["spec"], source="in data.spec")
        except WorkflowSpecError as exc:
            raise TaskEventRejected(str(exc), reason="invalid_spec") from None
    source, event_id = event["source"], event["id"]
    workflow_id = data.get("workflow_id") or _derived_workflow_id(spec.name, source, event_id)
    return TaskRequest(
        source=source,
        event_id=event_id,
        workflow_id=workflow_id,
        spec=spec,
        variables=dict(data.get("variables") or {}),
        traceparent=str(event.get("traceparent", "")),
    )


def _derived_workflow_id(name: str, source: str, event_id: str) -> str:
    # Deterministic: the same event, re-read after a crash, maps to the same workflow, whose
    # WorkflowSubmitted has a deterministic id too, so a re-publish folds to nothing.
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40] or "wf"
    return f"{safe}-{event_digest(source, event_id)[:16]}"
