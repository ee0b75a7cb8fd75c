"""The ingress: task events from any Kafka producer become signed workflow submissions.

A producer writes a CloudEvents JSON event (``protocols.task_event``) to ``<prefix>.tasks``; the
ingress validates it, drops duplicates (same ``source`` and ``id``, remembered in Redis),
publishes the signed ``WorkflowSubmitted`` and dead-letters what it cannot accept, with the reason.
"""

from mesh.ingress._service import (
    Ingress,
    IngressOptions,
    default_workflows_dir,
    run_ingress,
)
from mesh.ingress._service import Outcome as IngressOutcome
from mesh.ingress._validate import (
    DEFAULT_MAX_EVENT_BYTES,
    TaskEventRejected,
    TaskRequest,
    WorkflowCatalog,
    event_digest,
    parse_task_event,
)

__all__ = [
    # the process
    "Ingress",
    "IngressOptions",
    "IngressOutcome",
    "default_workflows_dir",
    "run_ingress",
    # validation
    "DEFAULT_MAX_EVENT_BYTES",
    "TaskEventRejected",
    "TaskRequest",
    "WorkflowCatalog",
    "event_digest",
    "parse_task_event",
]
