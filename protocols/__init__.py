"""Wire contracts of agent-mesh: pure data and codecs, no I/O, nothing imported from mesh/."""

from protocols.canonical import CanonicalEncodingError, canonical_bytes
from protocols.codec import (
    DEFAULT_MAX_ENVELOPE_BYTES,
    EnvelopeCodec,
    EnvelopeDecodeError,
    format_validation_error,
)
from protocols.envelope import SCHEMA_VERSION, Envelope, new_envelope_id
from protocols.events import (
    DeadLetter,
    EditedVariable,
    EffectInDoubt,
    EscalationDecided,
    EscalationKind,
    StepCompleted,
    StepEscalated,
    StepFailed,
    StepProgress,
    StepResumeRequested,
    StepStarted,
    TokenUsage,
    TraceEvent,
    VariableRecord,
    WorkflowCompleted,
    WorkflowSubmitted,
    deterministic_event_id,
)
from protocols.gossip import (
    DeltaBody,
    GossipDelta,
    GossipDigest,
    GossipSyncRequest,
    RegisterStamp,
    RegisterState,
    SetMeta,
    SetState,
    SetTag,
)
from protocols.hlc import HlcTimestamp
from protocols.limits import LimitExceeded, Limits, check_structure, current_limits, set_limits
from protocols.registry import Payload, kind_of, payload_type, register_kind, registered_kinds
from protocols.task_event import (
    TASK_EVENT_SCHEMA,
    TASK_EVENT_SCHEMA_ID,
    TASK_EVENT_TYPE,
    WORKFLOW_ID_PATTERN,
    task_event_schema,
)
from protocols.topics import Topics
from protocols.votes import (
    Ballot,
    FactDecided,
    Proposal,
    QuarantineEvent,
    ballot_signing_bytes,
    canonical_hash,
)
from protocols.workflow import (
    StepLimits,
    StepSpec,
    WorkflowBudget,
    WorkflowSpec,
    WorkflowSpecError,
    load_workflow_spec,
    parse_workflow_spec,
)

__all__ = [
    # envelope and codec
    "DEFAULT_MAX_ENVELOPE_BYTES",
    "SCHEMA_VERSION",
    "Envelope",
    "EnvelopeCodec",
    "EnvelopeDecodeError",
    "HlcTimestamp",
    "format_validation_error",
    "new_envelope_id",
    # payload registry
    "Payload",
    "kind_of",
    "payload_type",
    "register_kind",
    "registered_kinds",
    # workflow events
    "DeadLetter",
    "EditedVariable",
    "EscalationDecided",
    "EscalationKind",
    "StepCompleted",
    "EffectInDoubt",
    "StepEscalated",
    "StepFailed",
    "StepProgress",
    "StepResumeRequested",
    "StepStarted",
    "TokenUsage",
    "TraceEvent",
    "VariableRecord",
    "WorkflowCompleted",
    "WorkflowSubmitted",
    "deterministic_event_id",
    # workflow spec
    "StepLimits",
    "StepSpec",
    "WorkflowBudget",
    "WorkflowSpec",
    "WorkflowSpecError",
    "load_workflow_spec",
    "parse_workflow_spec",
    # structural limits on outside input
    "LimitExceeded",
    "Limits",
    "check_structure",
    "current_limits",
    "set_limits",
    # topics
    "Topics",
    # task events (CloudEvents from any producer)
    "TASK_EVENT_SCHEMA",
    "TASK_EVENT_SCHEMA_ID",
    "TASK_EVENT_TYPE",
    "WORKFLOW_ID_PATTERN",
    "task_event_schema",
    # gossip
    "DeltaBody",
    "GossipDelta",
    "GossipDigest",
    "GossipSyncRequest",
    "RegisterStamp",
    "RegisterState",
    "SetMeta",
    "SetState",
    "SetTag",
    # votes
    "Ballot",
    "FactDecided",
    "Proposal",
    "QuarantineEvent",
    "ballot_signing_bytes",
    "canonical_hash",
    # canonical encoding (what is hashed or signed)
    "CanonicalEncodingError",
    "canonical_bytes",
]
