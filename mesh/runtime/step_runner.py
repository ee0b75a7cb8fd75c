"""The turn loop of one step: observe, decide, act, persist, meta — checkpointed every turn.

Deciding (``mesh.runtime.deciding.Decider``: reasoner calls, repair and retry, the budget check),
checkpointing (``mesh.runtime.checkpointing.Checkpointer``) and making an action call
(``mesh.runtime.executing.ActionRunner``) are units of their own, given this runner's observers.
The loop here orders them: pauses and escalations, in-doubt records of at-most-once calls,
refreshes of expired secrets, folding a turn into the state and reporting it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from mesh.errors import CheckpointNotFound, MeshError
from mesh.llm import (
    ActionSpec,
    Decision,
    Reasoner,
)
from mesh.runtime.actions import Action, ActionError, ActionOutcome
from mesh.runtime.checkpointing import Checkpointer, OwnershipLost
from mesh.runtime.deciding import Decider, NoDecision, TurnMeter
from mesh.runtime.executing import ActionRunner
from mesh.runtime.injection import inject_params
from mesh.runtime.observers import (
    ActionDone,
    EffectCompleted,
    EffectPending,
    EffectSettled,
    KpiObserver,
    Observers,
    OperatorDecision,
    PromptBuilt,
    ScratchpadObserver,
    SecretRefreshed,
    SpanObserver,
    StepClosed,
    StepOpened,
    TraceEventObserver,
    TurnEnded,
    TurnObserver,
    TurnStarted,
)
from mesh.runtime.options import RuntimeOptions
from mesh.runtime.sanitize import one_line_error
from mesh.runtime.spinning import decision_signature, spinning_reason
from mesh.runtime.state import LEDGER_LINES_PER_TURN, StepState, TurnRecord
from mesh.runtime.validation import InvalidDecision
from mesh.runtime.variables import ContextVariable
from mesh.security import DataCipher, data_cipher, redact_text
from mesh.store import BlobStore, StateStore, step_key, workflow_tag
from mesh.telemetry import (
    REDACTED,
    Kpis,
    ScratchpadWriter,
    TraceEventEmitter,
    redact_value,
    secret_registry,
)
from protocols import (
    EffectInDoubt,
    Envelope,
    EscalationDecided,
    EscalationKind,
    StepEscalated,
    StepProgress,
    StepSpec,
    StepStarted,
    TokenUsage,
    WorkflowSpec,
    deterministic_event_id,
)

__all__ = ["BuiltPrompt", "OwnershipLost", "PromptBuilder", "Rehydration", "StepRunner", "secret_key"]

log = logging.getLogger("mesh.runtime")

_ANNOUNCED_KEPT = 4096
"""StepStarted announcements a runner remembers, to send each (workflow, step, epoch, turn) once."""


def secret_key(workflow_id: str, name: str) -> str:
    """State-store key holding the value of a secret variable of a workflow (sealed)."""
    return f"wf:{workflow_tag(workflow_id)}:secret:{name}"


@dataclass(frozen=True, slots=True)
class BuiltPrompt:
    """A prompt ready for the reasoner."""

    system: str
    prompt: str
    tokens: int
    budget: int
    ledger: tuple[str, ...] = ()
    """One line per evicted or compressed block."""

    @property
    def utilization(self) -> float:
        """Share of the budget used."""
        return self.tokens / self.budget if self.budget else 0.0


def _note_prompt(record: TurnRecord, built: Any) -> None:
    """Keep the prompt's size, budget and evictions in the turn record (the console charts them)."""
    record.prompt_tokens = int(getattr(built, "tokens", 0) or 0)
    record.prompt_budget = int(getattr(built, "budget", 0) or 0)
    lines = [str(line) for line in getattr(built, "ledger", ()) or ()]
    record.evicted = sum(1 for line in lines if line.startswith(("- dropped", "- decayed")))
    record.compressed = sum(1 for line in lines if line.startswith("- compressed"))
    record.ledger = lines[:LEDGER_LINES_PER_TURN]


class PromptBuilder(Protocol):
    """Builds a step's prompt from its state (the context engine's priority stack)."""

    async def build(self, spec: WorkflowSpec, step: StepSpec, state: StepState, actions: list[ActionSpec]) -> BuiltPrompt:
        """The prompt of the next turn."""
        ...


@dataclass(frozen=True, slots=True)
class Rehydration:
    """What a step inherits from the steps it depends on."""

    inputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Outputs of every ancestor step (direct dependency or not) by step id."""
    variables: Mapping[str, ContextVariable] = field(default_factory=dict)
    """Variables discovered by any ancestor (secrets resolved)."""
    summaries: Mapping[str, str] = field(default_factory=dict)
    """History summaries of dependencies."""
    spent_elsewhere: Callable[[], TokenUsage] | None = None
    """Tokens and cost the workflow's other steps spent so far, asked before every reasoner call
    (the workflow budget counts them); None: this step alone."""


PublishEvent = Callable[[Envelope], Awaitable[None]]


class StepRunner:
    """Runs steps of one role, one turn at a time, checkpointing after each."""

    def __init__(
        self,
        reasoner: Reasoner,
        store: StateStore,
        prompts: PromptBuilder,
        publish: PublishEvent,
        *,
        agent_id: str,
        role: str,
        actions: Mapping[str, Action],
        blobs: BlobStore | None = None,
        options: RuntimeOptions | None = None,
        resources: Mapping[str, Any] | None = None,
        scratchpad: ScratchpadWriter | None = None,
        kpis: Kpis | None = None,
        trace_events: TraceEventEmitter | None = None,
        cipher: DataCipher | None = None,
        log_topic: str = "",
        consumer_group: str = "",
        refreshers: Mapping[str, Action] | None = None,
        observers: Sequence[TurnObserver] = (),
    ) -> None:
        """Wire the runner to its reasoner, store, prompt builder and event publisher.

        ``cipher`` seals secret variables in checkpoints and blob copies, and archived turn
        records; None means the process's data key (``mesh.security.data_cipher``), loaded when
        first needed. With ``blobs``, a checkpoint keeps the last ``options.history_window``
        turn records and the older ones are archived there (``mesh.runtime.history``).
        ``log_topic`` and ``consumer_group`` (where steps are read from) only label the step span
        with messaging attributes.

        ``observers`` watch each step from outside the loop (``mesh.runtime.observers``): steps
        opened, prompts built, reasoner calls, tool calls, checkpoints written, turns ended,
        in-doubt calls recorded, completed and settled, secrets refreshed, human decisions. A
        ``SpanObserver`` (the OpenTelemetry spans) comes first; ``trace_events`` is a shorthand
        that adds a ``TraceEventObserver`` (the structured trace events) right after it, and
        ``kpis`` and ``scratchpad`` add a ``KpiObserver`` and a ``ScratchpadObserver`` after the
        given ones.

        ``refreshers`` maps a secret variable (``auth_token``) to the ``at_most_once`` action, with
        a ``lookup``, that obtains a fresh value of it. An action that injects the variable
        (``var:auth_token``) gets a fresh one first when its ``expires_at_ms`` has passed, or when
        it raises ``CredentialExpired``: the call is recorded in doubt like any at-most-once call
        (a kill mid-refresh is reconciled by its lookup), the value is written sealed to the
        workflow's secret key (``secret_key``, which later steps read) and to the checkpoint,
        and a ``secret.refreshed`` trace event and a turn note record it (never the value).
        """
        self.reasoner = reasoner
        self.store = store
        self.prompts = prompts
        self.publish = publish
        self.agent_id = agent_id
        self.role = role
        self.actions = dict(actions)
        self.blobs = blobs
        self.options = options or RuntimeOptions()
        self.resources = dict(resources or {})
        self.scratchpad = scratchpad
        self.kpis = kpis
        self.observers = Observers([
            SpanObserver(),
            *([TraceEventObserver(trace_events)] if trace_events is not None else []),
            *observers,
            *([KpiObserver(kpis)] if kpis is not None else []),
            *([ScratchpadObserver(scratchpad)] if scratchpad is not None else []),
        ])
        self.trace_events = trace_events
        self.cipher = cipher
        self.log_topic, self.consumer_group = log_topic, consumer_group
        self.checkpoints = Checkpointer(
            store, agent_id=agent_id, observers=self.observers, blobs=blobs, options=self.options, cipher=cipher
        )
        self.archiver = self.checkpoints.archiver
        self._stopping = False
        self._spent_elsewhere: dict[tuple[str, str], Callable[[], TokenUsage] | None] = {}
        self._stopped_steps: set[tuple[str, str]] = set()
        self.refreshers = dict(refreshers or {})
        self.decider = Decider(reasoner, self.actions, self.observers, self.options)
        self.executor = ActionRunner(self.observers, self.options, resources=self.resources, refreshers=self.refreshers)
        self._announced: OrderedDict[tuple[str, str, int, int], None] = OrderedDict()

    # -- step ------------------------------------------------------------------------------

    def _secret_scope(self, workflow_id: str) -> str:
        return f"{self.agent_id}/{workflow_id}"

    def forget_workflow(self, workflow_id: str) -> None:
        """This agent is done with ``workflow_id``: the redactor forgets its secret values (unless
        another agent of this process still holds them)."""
        secret_registry().release(self._secret_scope(workflow_id))

    async def load(self, workflow_id: str, step_id: str) -> StepState | None:
        """The step's last checkpoint, or None."""
        return await self.checkpoints.read(workflow_id, step_id)

    async def run(
        self,
        spec: WorkflowSpec,
        step: StepSpec,
        workflow_id: str,
        *,
        rehydration: Rehydration,
        trace: Mapping[str, str] | None = None,
        decision: EscalationDecided | None = None,
        ended_elsewhere: Callable[[], bool] | None = None,
        result_grace_s: float = 0.0,
    ) -> StepState:
        """Own the step (new epoch), resume from its checkpoint if any, and run turns until it
        completes, fails or pauses. Raises ``OwnershipLost`` if a newer owner fences it off.

        A checkpoint that says the step already ended is announced (and its result re-published
        by the caller) only if ``ended_elsewhere`` (the log shows the result) stays false for
        ``result_grace_s``: the old owner usually published it a moment ago.

        A paused step stays paused unless ``decision`` answers its current pause (the nonce in
        its checkpoint): a decision for any other pause is stale and refused. ``resume`` and
        ``edit`` (variables set first) continue from the checkpoint; ``reject`` fails the step.
        """
        key = step_key(workflow_id, step.id)
        epoch = await self.store.claim(key, self.agent_id)
        state = await self.load(workflow_id, step.id)
        resumed_from = 0
        if state is not None and state.settled_effect and state.epoch != epoch:
            # The checkpoint holds that call's result; its owner may have died before saying so
            # (a trace event after the checkpoint), which would leave the call looking in doubt.
            await self.observers.effect_completed(
                EffectCompleted(state.workflow_id, state.step_id, state.settled_effect, resumed=True)
            )
        if self.step_stopping(workflow_id, step.id):
            # Stopping (its partition moved, or shutdown) while the claim ran: announce nothing
            # (the log would name this agent the owner after its successor); leave the step as is.
            raise OwnershipLost(f"{workflow_id}/{step.id}: stopping before its first turn here")
        if state is None:
            state = StepState(workflow_id=workflow_id, step_id=step.id, role=step.role)
        elif state.status in ("completed", "failed"):
            if ended_elsewhere is not None:
                # Polled: the view is folded by the worker's poll loop, which has no event to await.
                for _ in range(max(0, int(result_grace_s / 0.05))):
                    if ended_elsewhere():
                        break
                    await asyncio.sleep(0.05)
                if ended_elsewhere():
                    return state  # its owner's result is in the log: nothing to announce
            # Ended before its result was published (the owner died in between): this owner
            # publishes it, so announce the ownership first (results count only from the owner).
            await self._announce(step, workflow_id, epoch, state.turn)
            return state
        else:
            resumed_from = state.turn
            if state.turn > 0 and state.owner != self.agent_id:
                state.resumes += 1
        if state.status == "paused":
            if decision is None:
                # The worker runs a paused step without a decision only when the log does not
                # show its pause: the owner died between checkpointing the pause and publishing
                # it (or it predates nonces). Publish it now, as the step's owner; the event id
                # comes from the nonce, so a pause published twice folds to one.
                state.owner, state.epoch = self.agent_id, epoch
                if not state.nonce:  # paused before pauses had nonces
                    self._pause(state, "spinning", state.escalation or "paused")
                await self.checkpoints.write(state)
                await self._announce(step, workflow_id, epoch, state.turn)
                await self._escalate(state, state.turn)
                return state
            if not state.nonce or decision.nonce != state.nonce:
                log.warning("%s/%s: refused a stale %r decision by %s for pause %s (current pause: %s)",
                            workflow_id, step.id, decision.decision, decision.operator, decision.nonce,
                            state.nonce or "none")
                await self.observers.operator_decided(OperatorDecision(
                    state.workflow_id, state.step_id, decision.nonce, decision.operator, decision.decision,
                    applied=False,
                ))
                return state
            state.owner, state.epoch = self.agent_id, epoch
            self._apply_decision(state, decision, rehydration.spent_elsewhere)
            await self.checkpoints.write(state)
            await self.observers.operator_decided(OperatorDecision(
                state.workflow_id, state.step_id, decision.nonce, decision.operator, decision.decision,
                applied=True,
            ))
            if state.status == "failed":
                await self._announce(step, workflow_id, epoch, state.turn)
                return state
        state.owner, state.epoch = self.agent_id, epoch
        state.inputs = {k: dict(v) for k, v in rehydration.inputs.items()}
        state.summaries = dict(rehydration.summaries)
        for name, entry in rehydration.variables.items():
            if name not in state.discovered and name not in state.edited:
                # Adopted now (a use, mesh.runtime.decay), unless the checkpoint knows a later use.
                old = state.variables.get(name)
                used = old.last_used_turn if old is not None and old.value == entry.value else state.turn
                state.variables[name] = dataclasses.replace(entry, last_used_turn=used)
        for value in state.secret_values():
            secret_registry().add(value, scope=self._secret_scope(state.workflow_id))

        self._spent_elsewhere[(workflow_id, step.id)] = rehydration.spent_elsewhere
        await self._announce(step, workflow_id, epoch, resumed_from)
        opened = StepOpened(
            workflow_id, step.id, role=step.role, agent_id=self.agent_id, epoch=epoch,
            mission=spec.mission, resumed_from_turn=resumed_from, trace=trace,
            topic=self.log_topic, consumer_group=self.consumer_group,
        )
        await self.observers.step_opened(opened)
        with self.observers.step_scope(opened):
            await self.observers.step_started(opened)
            fresh = True
            if state.in_doubt is not None:
                fresh = not await self._settle_in_doubt(spec, step, state)
            while state.status == "running" and not self.step_stopping(workflow_id, step.id):
                await self._turn(spec, step, state, first=fresh)
                fresh = False
                if self.options.turn_delay_s and state.status == "running" and not self.step_stopping(workflow_id, step.id):
                    await asyncio.sleep(self.options.turn_delay_s)
            await self.observers.step_closed(
                StepClosed(state.workflow_id, state.step_id, state.status, state.turn, state.resumes)
            )
        self._spent_elsewhere.pop((workflow_id, step.id), None)
        forget = getattr(self.prompts, "forget", None)
        if forget is not None:
            forget(workflow_id, step.id)
        self.checkpoints.forget(workflow_id, step.id)
        return state

    # -- turn ------------------------------------------------------------------------------

    async def _turn(self, spec: WorkflowSpec, step: StepSpec, state: StepState, *, first: bool) -> None:
        turn = state.turn + 1
        started = time.perf_counter()
        if first:
            phase = "planning"
        elif state.consecutive_failures:
            phase = "recovery"
        else:
            phase = "execution"
        temperature = getattr(self.options.temperatures, phase)
        allowed = [self.actions[name].spec for name in self.actions]
        with self.observers.turn_scope(TurnStarted(state.workflow_id, state.step_id, turn, phase)):
            built = await self.prompts.build(spec, step, state, allowed)
            await self.observers.prompt_built(PromptBuilt(
                state.workflow_id, state.step_id, turn, phase, built.tokens, built.budget, len(built.ledger)
            ))
            meter = TurnMeter()
            decided = await self.decider.decide(
                spec, step, state, built, allowed, temperature, meter,
                spent_elsewhere=self._spent_elsewhere.get((state.workflow_id, state.step_id)),
            )
            if isinstance(decided, NoDecision):
                # No executable decision (budget reached before the call, repairs or retries spent):
                # pause, checkpoint the pause and ask a human.
                self._pause(state, decided.kind, decided.reason)
                await self.checkpoints.write(state)
                await self._escalate(state, state.turn + 1)
                return
            decision, params, notes, repairs = decided.decision, decided.params, decided.notes, decided.repairs
            action = self.actions[decision.action]
            key = f"{state.workflow_id}:{state.step_id}:{turn}:{action.name}"
            if await self._refresh_expired(step, state, action, turn, notes):
                params, more = inject_params(action.name, params, action.inject, state, step.params)
                notes.extend(more)
            if action.at_most_once:
                # Checkpointed before the call: if this agent dies before the turn's own checkpoint,
                # the next owner knows the effect may have happened (see _settle_in_doubt).
                state.in_doubt = {"turn": turn, "action": action.name, "key": key}
                await self.checkpoints.write(state)
                await self.observers.effect_pending(
                    EffectPending(state.workflow_id, state.step_id, turn, action.name, key)
                )
            outcome, error, retries = await self._execute(step, state, action, params, key, turn, notes)
            await self.observers.action_done(ActionDone(state.workflow_id, state.step_id, turn, action.name, error or ""))
            self._fold(state, turn, action, params, notes, repairs, retries, outcome, error, started)
            _note_prompt(state.history[-1], built)
            used = meter.usage
            record = state.history[-1]
            record.input_tokens, record.output_tokens = used.input_tokens, used.output_tokens
            record.cost_usd, record.calls = round(used.cost_usd, 9), used.calls
            reason = spinning_reason(state, step.limits.spin_window)
            if outcome is not None and outcome.done:
                state.status = "completed"
            elif reason is not None:
                self._pause(state, "spinning", reason)
            elif turn >= step.limits.max_turns:
                state.status, state.error = "failed", f"TurnLimit: no result after {turn} turns"
            if action.at_most_once and outcome is not None:
                state.settled_effect = key
            await self.checkpoints.write(state)
            if action.at_most_once:
                # The turn's checkpoint holds the call's result: it is no longer in doubt.
                await self.observers.effect_completed(
                    EffectCompleted(state.workflow_id, state.step_id, key, turn, action.name)
                )
            await self._report(state, turn, action.name, decision, params, notes, error, phase, started, used)

    async def _execute(
        self,
        step: StepSpec,
        state: StepState,
        action: Action,
        params: dict[str, Any],
        key: str,
        turn: int,
        notes: list[str] | None = None,
    ) -> tuple[ActionOutcome | None, str | None, int]:
        """Make the call (``ActionRunner``); a credential refused as expired is renewed through
        this runner's refresh path (``_refresh``, itself an at-most-once call)."""

        async def renew(names: list[str]) -> bool:
            fresh = [await self._refresh(step, state, n, turn, "refused as expired", notes) for n in names]
            return any(fresh)

        return await self.executor.execute(step, state, action, params, key, turn, renew=renew)

    # -- refreshing expired secrets -----------------------------------------------------------

    async def _refresh_expired(
        self, step: StepSpec, state: StepState, action: Action, turn: int, notes: list[str]
    ) -> bool:
        """Refresh the variables ``action`` injects whose ``expires_at_ms`` has passed; True if any was."""
        now_ms = int(time.time() * 1000)
        fresh = False
        for name in self.executor.refreshable(action):
            entry = state.variables.get(name)
            if entry is None or entry.expires_at_ms is None or entry.expires_at_ms > now_ms:
                continue
            fresh = await self._refresh(step, state, name, turn, "expired", notes) or fresh
        return fresh

    async def _refresh(
        self, step: StepSpec, state: StepState, name: str, turn: int, why: str, notes: list[str] | None
    ) -> bool:
        """Get a fresh value of the secret variable ``name`` through its refresher; True on success.

        Another step of the workflow may have refreshed it already: a value in the workflow's
        secret key that differs from ours is adopted without a call (its expiry is unknown here;
        a refusal as expired would refresh it). Otherwise the refresher is called as an
        at-most-once action: recorded in doubt first, so a successor settles a kill mid-call
        with its lookup (``_settle_in_doubt``).
        """
        wf = state.workflow_id
        old = state.variables.get(name)
        shared = await self._read_secret(wf, name)
        if shared is not None and old is not None and shared != old.value:
            state.variables[name] = ContextVariable(name, shared, secret=True, priority=old.priority,
                                                    origin=f"{old.origin} (refreshed elsewhere)", last_used_turn=turn)
            secret_registry().add(shared, scope=self._secret_scope(wf))
            await self.checkpoints.write(state)
            log.info("%s/%s: %s %s; adopted the value another step refreshed", wf, state.step_id, name, why)
            if notes is not None:
                notes.append(f"{name} {why}: adopted the workflow's refreshed value")
            await self.observers.secret_refreshed(
                SecretRefreshed(wf, state.step_id, name, turn, why, source="shared")
            )
            return True
        refresher = self.refreshers[name]
        state.refreshes += 1
        key = f"{wf}:{state.step_id}:{turn}:{refresher.name}:refresh-{state.refreshes}"
        state.in_doubt = {"turn": turn, "action": refresher.name, "key": key, "refresh": name}
        await self.checkpoints.write(state)
        await self.observers.effect_pending(EffectPending(wf, state.step_id, turn, refresher.name, key))
        params, _notes = inject_params(refresher.name, {}, refresher.inject, state, step.params)
        outcome, error, _retries = await self._execute(step, state, refresher, params, key, turn)
        if outcome is None:
            state.in_doubt = None
            await self.checkpoints.write(state)
            log.warning("%s/%s: %s %s and its refresh failed: %s", wf, state.step_id, name, why, error)
            if notes is not None:
                notes.append(f"{name} {why}; refresh failed: {error}")
            return False
        await self._adopt_refresh(state, name, outcome, turn, key)
        await self.observers.effect_completed(EffectCompleted(wf, state.step_id, key, turn, refresher.name))
        expires = state.variables[name].expires_at_ms if name in state.variables else None
        await self.observers.secret_refreshed(SecretRefreshed(
            wf, state.step_id, name, turn, why, source=refresher.name, key=key, expires_at_ms=expires
        ))
        log.info("%s/%s: %s %s; refreshed by %s (key %s)", wf, state.step_id, name, why, refresher.name, key)
        if notes is not None:
            notes.append(f"{name} {why}: refreshed by {refresher.name}")
        return True

    async def _adopt_refresh(
        self, state: StepState, name: str, outcome: ActionOutcome, turn: int, key: str
    ) -> None:
        """Fold a refresher's variables into the step, the workflow's secret key and the checkpoint.

        They count as discovered by this step, so its result carries the new expiry and a resumed
        step keeps its own value rather than its ancestors'.
        """
        for var in outcome.variables:
            state.variables[var.name] = var.adopted(origin=f"{state.step_id} (refreshed)", turn=turn)
            if var.secret and var.value:
                secret_registry().add(str(var.value), scope=self._secret_scope(state.workflow_id))
            if var.name not in state.discovered:
                state.discovered.append(var.name)
        state.in_doubt = None
        entry = state.variables.get(name)
        if entry is not None and entry.secret:
            await self._write_secret(state.workflow_id, name, entry.value)
        state.settled_effect = key
        await self.checkpoints.write(state)

    async def _read_secret(self, workflow_id: str, name: str) -> str | None:
        try:
            data = (await self.store.read(secret_key(workflow_id, name))).data
        except CheckpointNotFound:
            return None
        value = (self.cipher or data_cipher()).open(data, context=("secret", workflow_id, name))
        return str(value)

    async def _write_secret(self, workflow_id: str, name: str, value: Any) -> None:
        key = secret_key(workflow_id, name)
        epoch = await self.store.claim(key, self.agent_id)
        sealed = (self.cipher or data_cipher()).seal(str(value), context=("secret", workflow_id, name))
        await self.store.write(key, sealed, epoch=epoch, owner=self.agent_id, workflow_id=workflow_id)

    async def _settle_in_doubt(self, spec: WorkflowSpec, step: StepSpec, state: StepState) -> bool:
        """Settle a call a previous owner recorded as in doubt; True when its outcome was folded.

        With a ``lookup`` the outside service says whether the call took effect: if it did, its
        outcome becomes the turn's (nothing repeated); if not, the turn runs as usual. Without
        one (or when the lookup fails) the call will be made again, and that is reported, never
        silent: an ``EffectInDoubt`` event on the workflow log, a trace event and a warning.
        """
        record, state.in_doubt = state.in_doubt or {}, None
        turn, name, key = int(record.get("turn", 0)), str(record.get("action", "")), str(record.get("key", ""))
        refreshing = str(record.get("refresh") or "")  # a secret's refresh call, made within the turn
        action = self.refreshers.get(refreshing) if refreshing else self.actions.get(name)
        if action is None or turn != state.turn + 1:
            return False  # recorded for a turn that was folded after all, or by another version
        state.effects_in_doubt += 1
        started = time.perf_counter()
        outcome: ActionOutcome | None = None
        params: dict[str, Any] = {}
        resolution: Literal["reconciled", "absent", "repeated"] = "repeated"
        detail = "the action declares no lookup"
        if action.lookup is not None:
            try:
                params, _notes = inject_params(action.name, {}, action.inject, state, step.params)
                async with asyncio.timeout(step.limits.turn_timeout_s):
                    outcome = await action.lookup(self.executor.context(step, state, key, turn), params)
            except (ActionError, MeshError, InvalidDecision, TimeoutError) as exc:
                detail = f"lookup failed: {one_line_error(exc)}"
            else:
                resolution = "reconciled" if outcome is not None else "absent"
                detail = "found by its idempotency key" if outcome is not None else "no effect under its idempotency key"
        log.warning("%s/%s: turn %d (%s) was in doubt after a crash: %s (%s)", state.workflow_id,
                    state.step_id, turn, name, resolution, detail)
        await self.publish(
            Envelope.of(
                EffectInDoubt(turn=turn, action=name, idempotency_key=key, resolution=resolution,
                              detail=detail[:300], owner=self.agent_id),
                sender=self.agent_id,
                workflow_id=state.workflow_id,
                step_id=state.step_id,
                id=deterministic_event_id(state.workflow_id, state.step_id, "in-doubt", turn, state.epoch),
            )
        )
        await self.observers.effect_settled(
            EffectSettled(state.workflow_id, state.step_id, turn, name, resolution, key)
        )
        if outcome is None:
            await self.checkpoints.write(state)  # the record is settled: a later crash does not count it twice
            return False
        if refreshing:
            # The fresh secret is adopted; the turn that needed it runs as usual.
            await self._adopt_refresh(state, refreshing, outcome, turn, key)
            await self.observers.secret_refreshed(SecretRefreshed(
                state.workflow_id, state.step_id, refreshing, turn, "reconciled", source=name, key=key
            ))
            return False
        notes = ["outcome reconciled from an in-doubt call (not repeated)"]
        self._fold(state, turn, action, params, notes, 0, 0, outcome, None, started)
        if outcome.done:
            state.status = "completed"
        await self.checkpoints.write(state)
        decision = Decision(action=name, params={}, reasoning="reconciled an in-doubt call")
        await self._report(state, turn, name, decision, params, notes, None, "recovery", started, TokenUsage())
        return True

    def _fold(
        self,
        state: StepState,
        turn: int,
        action: Action,
        params: dict[str, Any],
        notes: list[str],
        repairs: int,
        retries: int,
        outcome: ActionOutcome | None,
        error: str | None,
        started: float,
    ) -> None:
        secrets = {v.value for v in state.variables.values() if v.secret}
        shown = {
            k: (REDACTED if v in secrets else redact_value(v))
            for k, v in params.items()
        }
        state.turn = turn
        state.in_doubt = None
        state.recent = [*state.recent[-20:], decision_signature(action.name, params)]
        if outcome is None:
            state.consecutive_failures += 1
            state.no_progress += 1
            state.history.append(
                TurnRecord(turn, action.name, shown, "failed", error or "failed", notes, repairs, retries,
                           (time.perf_counter() - started) * 1000)
            )
            return
        state.consecutive_failures = 0
        state.no_progress = 0 if outcome.progress else state.no_progress + 1
        state.memory.update(outcome.memory)
        state.outputs.update(outcome.outputs)
        for var in outcome.variables:
            state.variables[var.name] = var.adopted(origin=state.step_id, turn=turn)
            if var.name not in state.discovered:
                state.discovered.append(var.name)
            if var.secret and var.value:
                secret_registry().add(str(var.value), scope=self._secret_scope(state.workflow_id))
        state.history.append(
            TurnRecord(turn, action.name, shown, "ok", outcome.summary, notes, repairs, retries,
                       (time.perf_counter() - started) * 1000)
        )

    def request_stop(self) -> None:
        """Finish the turn in flight (it is checkpointed as usual), then start no new turn.

        A step left this way stays ``running`` in the store; the next owner resumes it from that
        checkpoint without redoing the turn (a graceful shutdown, SIGTERM).
        """
        self._stopping = True

    @property
    def stopping(self) -> bool:
        """Whether ``request_stop`` was called."""
        return self._stopping

    def request_stop_step(self, workflow_id: str, step_id: str) -> None:
        """``request_stop`` for one step (its partition is moving to another member)."""
        self._stopped_steps.add((workflow_id, step_id))

    def allow_step(self, workflow_id: str, step_id: str) -> None:
        """Undo ``request_stop_step``: the step may run here again (its partition came back)."""
        self._stopped_steps.discard((workflow_id, step_id))

    def step_stopping(self, workflow_id: str, step_id: str) -> bool:
        """Whether the step must start no new turn here."""
        return self._stopping or (workflow_id, step_id) in self._stopped_steps

    async def drain(self) -> None:
        """Wait for background blob copies and turn-history uploads."""
        await self.checkpoints.drain()

    # -- escalations, decisions, usage and budget --------------------------------------------

    @staticmethod
    def _pause(state: StepState, kind: EscalationKind, reason: str) -> None:
        """Pause the step with a fresh nonce: only a decision carrying it lets this pause go on."""
        state.status, state.escalation, state.escalation_kind = "paused", reason, kind
        state.nonce = secrets.token_hex(16)

    def _apply_decision(
        self, state: StepState, decision: EscalationDecided, elsewhere: Callable[[], TokenUsage] | None
    ) -> None:
        """Apply a human's decision on the current pause (its nonce was checked).

        Letting a budget pause continue allows the step one more budget's worth from what the
        workflow has spent at that moment (other steps still pause when they reach the budget).
        """
        state.decisions.append({
            "nonce": decision.nonce, "decision": decision.decision, "operator": decision.operator,
            "note": redact_text(decision.note), "turn": state.turn, "kind": state.escalation_kind,
            "decided_at_ms": decision.decided_at_ms, "applied_by": self.agent_id,
        })
        log.info("%s/%s: %s by %s on pause %s (%s)", state.workflow_id, state.step_id, decision.decision,
                 decision.operator, decision.nonce, state.escalation_kind)
        if decision.decision == "reject":
            note = f": {redact_text(decision.note)}" if decision.note else ""
            state.status, state.nonce = "failed", ""
            state.error = f"Rejected: by {decision.operator} ({state.escalation_kind or 'paused'}){note}"[:500]
            return
        for var in decision.variables:
            value = var.value
            if var.secret:
                cipher = self.cipher or data_cipher()
                value = cipher.open(var.sealed, context=("decision", state.workflow_id, state.step_id,
                                                         decision.nonce, var.name))
                secret_registry().add(str(value), scope=self._secret_scope(state.workflow_id))
            old = state.variables.get(var.name)
            state.variables[var.name] = ContextVariable(
                var.name, value, secret=var.secret or (old.secret if old is not None else False),
                priority=old.priority if old is not None else 0, origin=f"operator:{decision.operator}",
                last_used_turn=state.turn,
            )
            if var.name not in state.edited:
                state.edited.append(var.name)
        if state.escalation_kind == "budget":
            spent = state.usage() + (elsewhere() if elsewhere is not None else TokenUsage())
            state.budget_grants += 1
            state.budget_floor_tokens, state.budget_floor_cost_usd = spent.tokens, spent.cost_usd
        state.status, state.escalation, state.escalation_kind, state.nonce = "running", "", "", ""
        state.recent.clear()
        state.no_progress = 0

    async def _announce(self, step: StepSpec, workflow_id: str, epoch: int, resumed_from: int) -> None:
        # The id names (workflow, step, epoch, resumed_from), the rest of the envelope (time,
        # trace) differs per publish: the same id twice with other content reads as equivocation
        # to every verifier. The same announcement again says nothing new (a retry of ``run``
        # while the store is unreachable keeps the epoch and the turn), so it is not re-sent.
        # Epochs are claimed one owner at a time, so another process never reaches this id.
        announced = (workflow_id, step.id, epoch, resumed_from)
        if announced in self._announced:
            log.info("%s/%s: already announced epoch %d from turn %d; not re-sent", workflow_id, step.id,
                     epoch, resumed_from)
            return
        await self.publish(
            Envelope.of(
                StepStarted(role=step.role, owner=self.agent_id, epoch=epoch, resumed_from_turn=resumed_from),
                sender=self.agent_id,
                workflow_id=workflow_id,
                step_id=step.id,
                # The turn is part of the id: a re-claim while the store is unreachable keeps the
                # epoch it knew, and the same id with other content would read as equivocation.
                id=deterministic_event_id(workflow_id, step.id, "started", epoch, resumed_from),
            )
        )
        self._announced[announced] = None
        while len(self._announced) > _ANNOUNCED_KEPT:
            self._announced.popitem(last=False)

    async def _escalate(self, state: StepState, turn: int) -> None:
        log.warning("%s/%s paused: %s", state.workflow_id, state.step_id, state.escalation)
        await self.publish(
            Envelope.of(
                StepEscalated(reason=state.escalation, turn=turn, owner=self.agent_id, nonce=state.nonce,
                              kind=state.escalation_kind or "spinning", usage=state.usage()),  # type: ignore[arg-type]
                sender=self.agent_id,
                workflow_id=state.workflow_id,
                step_id=state.step_id,
                id=deterministic_event_id(state.workflow_id, state.step_id, "escalated", state.nonce or turn),
            )
        )

    async def _report(
        self,
        state: StepState,
        turn: int,
        action: str,
        decision: Decision,
        params: dict[str, Any],
        notes: list[str],
        error: str | None,
        phase: str,
        started: float,
        turn_usage: TokenUsage,
    ) -> None:
        latency_ms = (time.perf_counter() - started) * 1000
        record = state.history[-1]
        outcome: Literal["ok", "failed", "spinning"]
        if state.status == "paused":
            outcome = "spinning"
        elif error is not None:
            outcome = "failed"
        else:
            outcome = "ok"
        await self.publish(
            Envelope.of(
                StepProgress(turn=turn, action=action, outcome=outcome, detail=record.summary[:300], owner=self.agent_id,
                             turn_usage=turn_usage, usage=state.usage()),
                sender=self.agent_id,
                workflow_id=state.workflow_id,
                step_id=state.step_id,
                id=deterministic_event_id(state.workflow_id, state.step_id, "progress", turn, state.epoch),
            )
        )
        if state.status == "paused":
            await self._escalate(state, turn)
        await self.observers.turn_ended(TurnEnded(
            state.workflow_id, state.step_id, turn, action, outcome, record.summary, latency_ms, phase,
            model=self.reasoner.name, params=record.params, reasoning=decision.reasoning,
            injected=tuple(n.split(" ")[0] for n in notes),
            escalation=state.escalation if state.status == "paused" else "",
        ))
