"""A workflow's state folded from its event log; the same fold serves agents and the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mesh.store.run_index import RunSummary, StepSummary
from protocols import (
    EffectInDoubt,
    Envelope,
    EscalationDecided,
    StepCompleted,
    StepEscalated,
    StepFailed,
    StepProgress,
    StepResumeRequested,
    StepSpec,
    StepStarted,
    TokenUsage,
    WorkflowCompleted,
    WorkflowSpec,
    WorkflowSubmitted,
)

__all__ = ["StepStatusName", "WorkflowView", "run_summary", "trace_id_of"]

_OWNER_ONLY = frozenset({StepProgress.KIND, StepCompleted.KIND, StepFailed.KIND, StepEscalated.KIND,
                         EffectInDoubt.KIND})

StepStatusName = Literal["waiting", "ready", "running", "paused", "completed", "failed"]


@dataclass
class WorkflowView:
    """Everything the log says about one workflow. Applying an event twice changes nothing."""

    workflow_id: str
    spec: WorkflowSpec | None = None
    trace: dict[str, str] = field(default_factory=dict)
    completed: dict[str, StepCompleted] = field(default_factory=dict)
    failed: dict[str, StepFailed] = field(default_factory=dict)
    started: dict[str, list[StepStarted]] = field(default_factory=dict)
    progress: dict[str, StepProgress] = field(default_factory=dict)
    turns_seen: dict[str, int] = field(default_factory=dict)
    escalated: dict[str, StepEscalated] = field(default_factory=dict)
    resume_requests: dict[str, int] = field(default_factory=dict)
    """Decisions accepted per step (each answered the pause that was current when it arrived)."""
    decisions: dict[str, EscalationDecided] = field(default_factory=dict)
    """The latest accepted decision per step."""
    decided_by: dict[str, str] = field(default_factory=dict)
    """Signed sender (client id) of the latest accepted decision per step."""
    usage: dict[str, TokenUsage] = field(default_factory=dict)
    """Latest known token usage and cost per step (from its progress, escalation and result)."""
    in_doubt: dict[str, list[EffectInDoubt]] = field(default_factory=dict)
    """Effects found in doubt on resume, per step, with how each was settled."""
    finished: WorkflowCompleted | None = None
    seen: set[str] = field(default_factory=set)
    ignored: list[str] = field(default_factory=list)
    """Why events were not folded (a step event from someone who does not own the step)."""
    created_ms: int = 0
    """Log time of the first folded event (Unix ms; 0 when the caller gave none)."""
    updated_ms: int = 0
    """Log time of the latest folded event."""
    finished_ms: int = 0
    """Log time of ``WorkflowCompleted``."""
    submitted_by: str = ""

    def apply(self, env: Envelope, *, at_ms: int = 0) -> bool:
        """Fold one event; False when it was a duplicate, not a workflow event, or not authorized.

        Step results (progress, completed, failed, escalated) count only from the step's current
        owner, the sender of its latest ``StepStarted``: an owner publishes ``StepStarted`` before
        anything else about the step, in the same partition, so the order is guaranteed. This
        keeps a zombie's late result and a result made up by another (authenticated) sender out.
        ``at_ms`` is the event's log time (the Kafka record timestamp), kept for the run index.
        """
        if env.id in self.seen:
            return False
        step = env.step_id
        if env.kind in _OWNER_ONLY:
            starts = self.started.get(step)
            owner = starts[-1].owner if starts else None
            if env.sender != owner:
                self.ignored.append(f"{env.kind} for {step!r} from {env.sender!r}, not its owner {owner!r}")
                return False
        self.seen.add(env.id)
        kind = env.kind
        if kind == WorkflowSubmitted.KIND:
            sub = env.payload_model(WorkflowSubmitted)
            if self.spec is None:
                self.spec = sub.spec
                self.trace = dict(env.trace)
                self.submitted_by = sub.submitted_by
        elif kind == StepStarted.KIND:
            self.started.setdefault(step, []).append(env.payload_model(StepStarted))
            self.escalated.pop(step, None)
        elif kind == StepProgress.KIND:
            prog = env.payload_model(StepProgress)
            self.progress[step] = prog
            self.turns_seen[step] = max(self.turns_seen.get(step, 0), prog.turn)
            self.usage[step] = prog.usage
        elif kind == StepCompleted.KIND:
            done = self.completed.setdefault(step, env.payload_model(StepCompleted))
            self.usage[step] = done.usage
        elif kind == StepFailed.KIND:
            failed = self.failed.setdefault(step, env.payload_model(StepFailed))
            self.usage[step] = failed.usage
        elif kind == StepEscalated.KIND:
            esc = self.escalated[step] = env.payload_model(StepEscalated)
            self.usage[step] = esc.usage
        elif kind == EffectInDoubt.KIND:
            self.in_doubt.setdefault(step, []).append(env.payload_model(EffectInDoubt))
        elif kind == EscalationDecided.KIND:
            decided = env.payload_model(EscalationDecided)
            pause = self.escalated.get(step)
            if pause is None or not pause.nonce or pause.nonce != decided.nonce:
                # Stale (a pause already decided, or an older one) or for no pause at all.
                current = pause.nonce if pause is not None else "none"
                self.ignored.append(f"decision {decided.decision!r} on {step!r} by {decided.operator!r} for pause "
                                    f"{decided.nonce!r}: not the current pause ({current})")
                return False
            self.decisions[step] = decided
            self.decided_by[step] = env.sender
            self.resume_requests[step] = self.resume_requests.get(step, 0) + 1
            self.escalated.pop(step, None)
        elif kind == StepResumeRequested.KIND:
            # Names no pause, so it could approve a later one: only EscalationDecided resumes.
            self.ignored.append(f"legacy resume request for {step!r} without a nonce: ignored")
            return False
        elif kind == WorkflowCompleted.KIND:
            self.finished = self.finished or env.payload_model(WorkflowCompleted)
        else:
            return False
        if at_ms:
            self.created_ms = self.created_ms or at_ms
            self.updated_ms = max(self.updated_ms, at_ms)
            if kind == WorkflowCompleted.KIND and not self.finished_ms:
                self.finished_ms = at_ms
        return True

    def status_of(self, step_id: str) -> StepStatusName:
        """Where a step is, as far as the log tells."""
        if step_id in self.completed:
            return "completed"
        if step_id in self.failed:
            return "failed"
        if step_id in self.escalated:
            return "paused"
        if step_id in self.started:
            return "running"
        if self.spec is not None and all(d in self.completed for d in self.spec.step(step_id).depends_on):
            return "ready"
        return "waiting"

    def runnable(self, role: str) -> list[StepSpec]:
        """Steps of ``role`` whose dependencies completed and that have not ended."""
        if self.spec is None or self.finished is not None:
            return []
        return [
            s for s in self.spec.steps
            if s.role == role
            and s.id not in self.completed
            and s.id not in self.failed
            and all(d in self.completed for d in s.depends_on)
        ]

    def settled_for(self, role: str) -> bool:
        """Nothing left for ``role`` to do in this workflow (so its events may be committed).

        Without the spec nothing is known of the role's steps: not settled until the workflow
        finished. (A member reads a workflow without its ``WorkflowSubmitted`` only when the group's
        offset already passed it, which happens once the role was settled; answering "settled" on
        no evidence let a member commit past the events of running workflows.)
        """
        if self.finished is not None:
            return True
        if self.spec is None:
            return False
        return all(s.id in self.completed or s.id in self.failed for s in self.spec.steps if s.role == role)

    def all_completed(self) -> bool:
        """Every step completed."""
        return self.spec is not None and all(s.id in self.completed for s in self.spec.steps)

    @property
    def status(self) -> str:
        """``pending``, ``running``, ``paused``, ``succeeded`` or ``failed``."""
        if self.finished is not None:
            return self.finished.status
        if self.failed:
            return "failed"
        if self.spec is not None and self.all_completed():
            return "succeeded"
        if self.escalated:
            return "paused"
        return "running" if self.started else "pending"

    def step_usage(self, step_id: str) -> TokenUsage:
        """Tokens and cost of one step as far as the log tells."""
        return self.usage.get(step_id) or TokenUsage()

    def total_usage(self, *, excluding: str = "") -> TokenUsage:
        """Tokens and cost of every step (but ``excluding``)."""
        total = TokenUsage()
        for step_id, used in self.usage.items():
            if step_id != excluding:
                total = total + used
        return total

    def effects_in_doubt(self) -> dict[str, int]:
        """In-doubt effects by resolution (``reconciled``, ``absent``, ``repeated``)."""
        counts: dict[str, int] = {}
        for events in self.in_doubt.values():
            for e in events:
                counts[e.resolution] = counts.get(e.resolution, 0) + 1
        return counts

    def resumes(self) -> int:
        """Times a step was taken over from a checkpoint by a new owner."""
        return sum(1 for starts in self.started.values() for s in starts if s.resumed_from_turn > 0)


def trace_id_of(trace: dict[str, str]) -> str:
    """The trace id (32 hex) in a W3C ``traceparent``, or "" (engineer "trace" may carry it otherwise)."""
    explicit = trace.get("trace_id", "")
    if explicit:
        return explicit
    parts = trace.get("traceparent", "").split("-")
    if len(parts) >= 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        return parts[1].lower()
    return ""


def run_summary(view: WorkflowView) -> RunSummary:
    """What the run index keeps of a view (``mesh/store/run_index.py`` documents the schema)."""
    steps = []
    for step in view.spec.steps if view.spec is not None else ():
        starts = view.started.get(step.id, [])
        done = view.completed.get(step.id)
        last = ""
        pause = view.escalated.get(step.id)
        used = view.step_usage(step.id)
        if pause is not None:
            last = pause.reason
        elif step.id in view.failed:
            last = view.failed[step.id].error
        elif (prog := view.progress.get(step.id)) is not None:
            last = f"{prog.action}: {prog.detail}"
        steps.append(StepSummary(
            id=step.id, role=step.role, status=view.status_of(step.id),
            owner=starts[-1].owner if starts else "", epoch=starts[-1].epoch if starts else 0,
            turns=done.turns if done else view.turns_seen.get(step.id, 0),
            resumes=sum(1 for s in starts if s.resumed_from_turn > 0),
            last=" ".join(last.split())[:200],
            input_tokens=used.input_tokens, output_tokens=used.output_tokens, cost_usd=used.cost_usd,
            escalation_nonce=pause.nonce if pause is not None else "",
            escalation_kind=pause.kind if pause is not None else "",
        ))
    total = view.total_usage()
    budget = view.spec.budget if view.spec is not None else None
    return RunSummary(
        workflow_id=view.workflow_id, name=view.spec.name if view.spec is not None else "", status=view.status,
        events=len(view.seen), created_ms=view.created_ms, updated_ms=view.updated_ms,
        finished_ms=view.finished_ms, trace_id=trace_id_of(dict(view.trace)), submitted_by=view.submitted_by,
        steps=tuple(steps), input_tokens=total.input_tokens, output_tokens=total.output_tokens,
        cost_usd=total.cost_usd,
        budget_tokens=(budget.max_tokens or 0) if budget is not None else 0,
        budget_cost_usd=(budget.max_cost_usd or 0.0) if budget is not None else 0.0,
    )
