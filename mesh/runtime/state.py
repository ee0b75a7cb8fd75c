"""The state of one step, checkpointed after every turn."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal

import msgpack

from mesh.runtime.variables import CHECKPOINT_FIELDS, ContextVariable
from mesh.security import data_cipher, is_sealed
from protocols import TokenUsage

if TYPE_CHECKING:
    from mesh.security import DataCipher

__all__ = ["LEDGER_LINES_PER_TURN", "HistoryDigest", "StepState", "StepStatus", "TurnRecord"]

log = logging.getLogger(__name__)

LEDGER_LINES_PER_TURN = 8
"""Eviction ledger lines kept per turn record (bounds the checkpoint; the scratchpad has them all)."""

# A variable is stored without its name (the map's key holds it): the layout agents of earlier
# releases read, so a checkpoint written here still loads on a pod not yet upgraded.
_FIELD_NAMES: dict[type, tuple[str, ...]] = {ContextVariable: CHECKPOINT_FIELDS}


def _names(kind: type) -> tuple[str, ...]:
    """The stored fields of the dataclass ``kind`` (computed once per type)."""
    names = _FIELD_NAMES.get(kind)
    if names is None:
        names = _FIELD_NAMES[kind] = tuple(f.name for f in fields(kind))
    return names


def _fields(obj: Any) -> dict[str, Any]:
    names = _FIELD_NAMES.get(type(obj))  # the hot path of every checkpoint: one lookup
    if names is None:
        try:
            names = _names(type(obj))
        except TypeError:
            raise TypeError(f"cannot checkpoint a {type(obj).__name__}: {obj!r:.80}") from None
    return {name: getattr(obj, name) for name in names}


_UNKNOWN_SEEN: set[tuple[str, str]] = set()


def _known(kind: type, raw: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``kind`` in ``raw``: a checkpoint from a newer release (a rolling upgrade)
    may carry fields this one does not know; they are dropped, and named once in the log."""
    names = _names(kind)
    unknown = [key for key in raw if key not in names]
    for key in unknown:
        if (kind.__name__, key) not in _UNKNOWN_SEEN:
            _UNKNOWN_SEEN.add((kind.__name__, key))
            log.warning("checkpoint field %s.%s is unknown to this release: ignored", kind.__name__, key)
    return {key: value for key, value in raw.items() if key in names} if unknown else raw


StepStatus = Literal["running", "paused", "completed", "failed"]


@dataclass(slots=True)
class TurnRecord:
    """What one turn did: decision, injections, outcome."""

    turn: int
    action: str
    params: dict[str, Any]
    """Parameters as executed, with secret values masked."""
    outcome: Literal["ok", "failed", "invalid"]
    summary: str
    """One sanitized line."""
    injected: list[str] = field(default_factory=list)
    """Parameters filled or corrected from state, e.g. ``token (corrected)``."""
    repairs: int = 0
    """Invalid decisions repaired before this one was accepted."""
    retries: int = 0
    """Retries of a retryable failure within the turn."""
    duration_ms: float = 0.0
    prompt_tokens: int = 0
    """Tokens of the prompt this turn's decision was made from (0 when not measured)."""
    prompt_budget: int = 0
    """The prompt's token budget for this turn (usable tokens)."""
    evicted: int = 0
    """Prompt blocks dropped or decayed while building this turn's prompt."""
    compressed: int = 0
    """Prompt blocks compressed into summaries while building this turn's prompt."""
    ledger: list[str] = field(default_factory=list)
    """The turn's eviction ledger lines (newest first, at most ``LEDGER_LINES_PER_TURN``)."""
    checkpoint_ms: float = 0.0
    """Write time of this turn's checkpoint; saved with the next checkpoint (0 until then)."""
    input_tokens: int = 0
    """Reasoner input tokens of the turn (all its calls, repairs included; provider-reported, else counted)."""
    output_tokens: int = 0
    """Reasoner output tokens of the turn."""
    cost_usd: float = 0.0
    """Estimated cost of the turn's reasoner calls (the price table), US dollars."""
    calls: int = 0
    """Reasoner calls of the turn."""


@dataclass(slots=True)
class HistoryDigest:
    """The compacted summary of a step's archived turn records (``mesh.runtime.history``)."""

    turns: int = 0
    """Turn records archived (they are no longer in the checkpoint)."""
    through: int = 0
    """Last archived turn; the checkpoint's ``history`` holds the turns after it."""
    head: str = ""
    """Blob name of the newest archived segment (each names the one before)."""
    segments: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    """Archived turns per action."""
    failed: int = 0
    invalid: int = 0
    repairs: int = 0
    retries: int = 0
    duration_ms: float = 0.0
    last_failure: str = ""
    """``turn N: <one sanitized line>`` of the last archived failed turn."""


@dataclass(slots=True)
class StepState:
    """Everything needed to resume a step after a crash, on any agent."""

    workflow_id: str
    step_id: str
    role: str
    status: StepStatus = "running"
    turn: int = 0
    """Last finished (checkpointed) turn; the next one is ``turn + 1``."""
    history: list[TurnRecord] = field(default_factory=list)
    """The last turn records (a bounded window when a blob store archives the older ones)."""
    archive: HistoryDigest = field(default_factory=HistoryDigest)
    """What the archived turns (before ``history``) did, and where they are."""
    memory: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, ContextVariable] = field(default_factory=dict)
    """The variables the step knows, by name (``ContextVariable.name`` is the same name)."""
    discovered: list[str] = field(default_factory=list)
    """Names of variables this step discovered (they flow to dependents)."""
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Outputs of dependency steps (re-hydrated)."""
    summaries: dict[str, str] = field(default_factory=dict)
    """History summaries of dependency steps (re-hydrated)."""
    recent: list[str] = field(default_factory=list)
    """Signatures of the last decisions (action + params), for spinning detection."""
    no_progress: int = 0
    """Consecutive turns that changed nothing."""
    resumes: int = 0
    """Times a new owner resumed this step from a checkpoint."""
    escalation: str = ""
    """Why the step paused, when it did."""
    escalation_kind: str = ""
    """Why, machine-readable (``protocols.EscalationKind``), while paused."""
    nonce: str = ""
    """Random id of the current pause; a decision applies only if it carries it ("" when not paused)."""
    decisions: list[dict[str, Any]] = field(default_factory=list)
    """Decisions applied to this step's pauses, oldest first: nonce, decision, operator, note, turn."""
    edited: list[str] = field(default_factory=list)
    """Variables an operator set (an ``edit`` decision): re-hydration does not overwrite them."""
    budget_grants: int = 0
    """Budget pauses an operator let continue."""
    budget_floor_tokens: int = 0
    """Workflow tokens spent when an operator last let a budget pause continue: the step may spend
    one more budget's worth from there."""
    budget_floor_cost_usd: float = 0.0
    """Workflow cost spent at that time, US dollars."""
    input_tokens: int = 0
    """Reasoner input tokens of the step, all turns."""
    output_tokens: int = 0
    """Reasoner output tokens of the step, all turns."""
    cost_usd: float = 0.0
    """Estimated cost of the step's reasoner calls, US dollars."""
    calls: int = 0
    """Reasoner calls of the step."""
    error: str = ""
    """Why the step failed, when it did."""
    owner: str = ""
    epoch: int = 0
    consecutive_failures: int = 0
    in_doubt: dict[str, Any] | None = None
    """An ``at_most_once`` call sent (or about to be) whose turn is not folded yet: ``turn``,
    ``action`` and its idempotency ``key`` (no parameters: a lookup re-injects them from state)."""
    effects_in_doubt: int = 0
    """In-doubt effects this step met on resume (each reported as ``EffectInDoubt``)."""
    settled_effect: str = ""
    """Idempotency key of the last at-most-once call whose result this checkpoint holds: an owner
    that resumes the step says so again (``effect.completed``), since its predecessor may have died
    between this checkpoint and saying it."""
    refreshes: int = 0
    """Secret variables this step refreshed because they expired (numbers the refresh calls' keys)."""

    def to_bytes(self, cipher: DataCipher | None = None) -> bytes:
        """Serialize (msgpack), on the hot path of every turn, secret values sealed with ``cipher``.

        msgpack calls ``_fields`` only for the dataclasses (state, turn records, variables) and
        packs everything else natively: the same bytes as packing ``asdict(self)`` without its
        deep copy, which was most of the cost of a checkpoint (bench/checkpoint.py). A secret
        variable's value is stored sealed (``mesh.security.DataCipher``: bytes), bound to this
        workflow, step and variable name; with secrets
        and no ``cipher`` the process's data key is used (``DataKeyError`` if there is none).
        """
        secret = [name for name, v in self.variables.items() if v.secret and v.value is not None]
        if not secret:
            return msgpack.packb(self, default=_fields, use_bin_type=True)
        if cipher is None:
            cipher = data_cipher()
        body = _fields(self)
        variables = dict(self.variables)
        for name in secret:
            entry = variables[name]
            variables[name] = replace(
                entry, value=cipher.seal(entry.value, context=self._context(name))
            )
        body["variables"] = variables
        return msgpack.packb(body, default=_fields, use_bin_type=True)

    def _context(self, name: str) -> tuple[str, ...]:
        return ("checkpoint", self.workflow_id, self.step_id, name)

    @classmethod
    def from_bytes(cls, data: bytes, cipher: DataCipher | None = None) -> StepState:
        """Deserialize what ``to_bytes`` produced, opening sealed secrets (``SealedValueError`` if they do not open)."""
        raw = _known(cls, msgpack.unpackb(data, raw=False))
        raw["history"] = [TurnRecord(**_known(TurnRecord, h)) for h in raw.get("history", [])]
        if "archive" in raw:  # absent in checkpoints written before history was bounded
            raw["archive"] = HistoryDigest(**_known(HistoryDigest, raw["archive"]))
        raw["variables"] = {
            k: ContextVariable.from_checkpoint(k, v) for k, v in raw.get("variables", {}).items()
        }
        state = cls(**raw)
        for name, entry in state.variables.items():
            if entry.secret and is_sealed(entry.value):
                if cipher is None:
                    cipher = data_cipher()
                entry.value = cipher.open(entry.value, context=state._context(name))
        return state

    @property
    def turn_count_by_action(self) -> dict[str, int]:
        """Turns per action over the whole history, archived turns included."""
        counts = dict(self.archive.actions)
        for rec in self.history:
            if rec.turn > self.archive.through:
                counts[rec.action] = counts.get(rec.action, 0) + 1
        return counts

    def usage(self) -> TokenUsage:
        """The step's tokens and cost so far."""
        return TokenUsage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=round(self.cost_usd, 9),
            calls=self.calls,
        )

    def secret_values(self) -> list[str]:
        """Values of secret variables, for redaction."""
        return [str(v.value) for v in self.variables.values() if v.secret and v.value]
