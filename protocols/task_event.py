"""Task events: how any Kafka producer asks the mesh to run a workflow (CloudEvents, JSON).

A task event is a CloudEvents 1.0 event in *structured mode*: the whole event is one JSON object
in the Kafka record value (``content-type: application/cloudevents+json``), so a plain producer
(kcat, a Java service, Kafka Connect, Kafka's console producer) can write it without our code or
keys. The ingress (``mesh ingress``) validates it against ``TASK_EVENT_SCHEMA``, deduplicates it by
``source`` + ``id`` (the CloudEvents uniqueness rule) and publishes the signed
``WorkflowSubmitted``. ``mesh schema task-event`` prints the schema.

This module is pure data: the schema and the names. Validation lives in ``mesh.ingress``.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = [
    "TASK_EVENT_SCHEMA",
    "TASK_EVENT_SCHEMA_ID",
    "TASK_EVENT_TYPE",
    "WORKFLOW_ID_PATTERN",
    "task_event_schema",
]

TASK_EVENT_TYPE = "io.agentmesh.workflow.submit"
"""The CloudEvents ``type`` a task event must carry."""

TASK_EVENT_SCHEMA_ID = "https://agent-mesh.dev/schemas/task-event/v1.json"
"""``$id`` of the schema (a name, not a URL anything fetches)."""

WORKFLOW_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
"""Workflow ids a task event may choose: they become Kafka keys and Redis key parts."""

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"

TASK_EVENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": TASK_EVENT_SCHEMA_ID,
    "title": "agent-mesh task event",
    "description": (
        "A CloudEvents 1.0 event in structured JSON mode asking the mesh to run one workflow. "
        "Write it to the task topic (<prefix>.tasks); the ingress validates it, drops duplicates "
        "(same source and id) and submits the workflow. Invalid events go to the dead-letter topic "
        "(<prefix>.dlq) with the reason."
    ),
    "type": "object",
    "required": ["specversion", "type", "source", "id", "data"],
    "properties": {
        "specversion": {"const": "1.0", "description": "CloudEvents version."},
        "type": {"const": TASK_EVENT_TYPE, "description": "What the event asks for."},
        "source": {
            "type": "string",
            "minLength": 1,
            "maxLength": 512,
            "description": "URI-reference of the producer; with id, identifies the event.",
        },
        "id": {
            "type": "string",
            "minLength": 1,
            "maxLength": 256,
            "description": "Event id, unique per source: a re-sent event with the same source and id is dropped.",
        },
        "time": {"type": "string", "format": "date-time", "description": "When it happened (RFC 3339)."},
        "subject": {"type": "string", "maxLength": 512},
        "datacontenttype": {"const": "application/json"},
        "dataschema": {"type": "string", "maxLength": 1024},
        "traceparent": {"type": "string", "maxLength": 128, "description": "W3C trace context (CloudEvents distributed tracing extension)."},
        "tracestate": {"type": "string", "maxLength": 512},
        "data": {
            "type": "object",
            "description": "The workflow to run: a known workflow name or an inline spec, never both.",
            "properties": {
                "workflow": {
                    "type": "string",
                    "pattern": _NAME_PATTERN,
                    "description": "Name of a workflow spec the ingress knows (its --workflows-dir).",
                },
                "spec": {
                    "type": "object",
                    "description": "An inline workflow spec (same fields as a spec file).",
                },
                "variables": {
                    "type": "object",
                    "maxProperties": 256,
                    "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$"},
                    "description": "Initial variables, overriding the spec's.",
                },
                "workflow_id": {
                    "type": "string",
                    "pattern": WORKFLOW_ID_PATTERN,
                    "description": "Workflow id to use (default: derived from source and id, so a replay maps to the same workflow).",
                },
            },
            "oneOf": [{"required": ["workflow"]}, {"required": ["spec"]}],
            "additionalProperties": False,
        },
    },
    # CloudEvents allows extension attributes: lower-case alphanumeric names.
    "propertyNames": {"pattern": "^[a-z0-9]{1,20}$"},
    "additionalProperties": {"type": ["string", "boolean", "integer"]},
}
"""JSON Schema (2020-12) of a task event."""


def task_event_schema() -> dict[str, Any]:
    """A copy of ``TASK_EVENT_SCHEMA`` (callers may mutate it)."""
    return copy.deepcopy(TASK_EVENT_SCHEMA)
