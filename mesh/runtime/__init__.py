"""The agent runtime: the turn loop, checkpoint/resume, re-hydration, validation, injection,
retries, spinning detection and escalation, and the role worker that runs it over the bus."""

from mesh.runtime.actions import (
    Action,
    ActionContext,
    ActionError,
    ActionOutcome,
    Executor,
    NewVariable,  # noqa: F401  (the name of ContextVariable in roles written before it; not in __all__)
    RetryableActionError,
)
from mesh.runtime.client import DecisionError, MeshClient, Pause, new_workflow_id
from mesh.runtime.history import HistoryArchiver, HistoryOptions, read_history
from mesh.runtime.injection import inject_params
from mesh.runtime.options import PhaseTemperatures, RuntimeOptions
from mesh.runtime.prompt import StackPromptBuilder
from mesh.runtime.sanitize import one_line_error
from mesh.runtime.spinning import decision_signature, spinning_reason
from mesh.runtime.state import HistoryDigest, StepState, TurnRecord
from mesh.runtime.step_runner import (
    BuiltPrompt,
    OwnershipLost,
    Rehydration,
    StepRunner,
)
from mesh.runtime.step_runner import PromptBuilder as StepPromptBuilder
from mesh.runtime.validation import InvalidDecision, check_params, schema_errors
from mesh.runtime.variables import ContextVariable
from mesh.runtime.view import WorkflowView
from mesh.runtime.worker import AgentWorker, WorkerOptions, secret_key

__all__ = [
    # actions a role offers
    "Action",
    "ActionContext",
    "ActionError",
    "ActionOutcome",
    "Executor",
    "RetryableActionError",
    # a context variable, from discovery to re-hydration
    "ContextVariable",
    # the turn loop
    "BuiltPrompt",
    "OwnershipLost",
    "StepPromptBuilder",
    "Rehydration",
    "RuntimeOptions",
    "PhaseTemperatures",
    "StepRunner",
    "StepState",
    "TurnRecord",
    "HistoryArchiver",
    "HistoryDigest",
    "HistoryOptions",
    "read_history",
    # decisions: validation, injection, spinning
    "InvalidDecision",
    "check_params",
    "schema_errors",
    "inject_params",
    "decision_signature",
    "spinning_reason",
    "one_line_error",
    # choreography
    "AgentWorker",
    "WorkerOptions",
    "WorkflowView",
    "secret_key",
    # client side
    "MeshClient",
    "Pause",
    "DecisionError",
    "new_workflow_id",
    "StackPromptBuilder",
]
