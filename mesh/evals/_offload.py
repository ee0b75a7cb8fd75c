"""Cognitive offloading, measured: the same task with parameter injection and validation on and off.

The seed's claim (DESIGN.md, "one turn"): the model should decide *what* to do while deterministic
code supplies the exact values (auth token, workflow id) and checks every decision against its
schema before it acts. This evaluation runs one small task both ways on any reasoner:

* the task: file ``items`` patient records with a records API, one per turn; the tool
  ``file_record`` takes ``workflow_id``, ``token``, ``patient_id`` and ``item`` (the schema the
  model sees is the same in both modes);
* ``on``: the prompt does not contain the token or the workflow id (secrets never reach a
  prompt); the runtime's own :func:`mesh.runtime.injection.inject_params` fills or corrects them
  from state, :func:`mesh.runtime.validation.check_params` checks the decision, and an invalid
  decision or an answer without a tool call is sent back with the error as a repair hint, at most
  ``max_repairs`` times per turn (the runtime's repair loop, same hint wording);
* ``off``: the prompt contains the token and the workflow id and the model must copy them; what
  it answers goes to the API as it is; an answer without a tool call wastes the turn.

The records API rejects a wrong token or workflow id (as a real API would: 401/404) and accepts a
wrong patient id (it cannot know): that is a wrong record written. A task succeeds when every
item was filed with its patient, no wrong record was written, within ``items + 2`` turns.

Counted per decision (one reasoner call): no tool call, schema-invalid parameters, and
hallucinated parameters (a value other than the true one, or an unknown parameter), on what the
model wrote; and per API call, parameters that reached the API wrong. ``mesh.evals`` is tooling
above the runtime, so it imports ``mesh.runtime`` directly (no product module imports it).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from mesh.evals._stats import wilson_interval
from mesh.llm.decision import ActionSpec, ReasonerRequest
from mesh.llm.errors import DecisionFormatError
from mesh.llm.reasoner import Reasoner
from mesh.runtime.injection import inject_params
from mesh.runtime.state import StepState
from mesh.runtime.validation import InvalidDecision, check_params, schema_errors
from mesh.runtime.variables import ContextVariable

__all__ = [
    "MODES",
    "OffloadEvalOptions",
    "OffloadModeResult",
    "OffloadTask",
    "make_task",
    "run_offload_eval",
]

MODES = ("on", "off")
"""Injection and validation on, then off."""

SYSTEM_PROMPT = (
    "You are the filing agent of a hospital workflow. Each turn, call the file_record tool once "
    "with the parameters of the record the task names."
)
"""System prompt of every decision."""

FILE_RECORD = ActionSpec(
    name="file_record",
    description="File one patient's record with the records API.",
    params_schema={
        "type": "object",
        "properties": {
            "workflow_id": {"type": "string", "description": "Id of this workflow."},
            "token": {"type": "string", "description": "Access token of the records API."},
            "patient_id": {"type": "string", "description": "Id of the patient, e.g. P-0001."},
            "item": {"type": "integer", "minimum": 1, "description": "Number of the item filed."},
        },
        "required": ["workflow_id", "token", "patient_id", "item"],
        "additionalProperties": False,
    },
)
"""The one action; its schema is what the model sees and what validation checks."""

INJECT = {"workflow_id": "workflow_id", "token": "var:api_token"}
"""What the runtime injects in ``on`` mode (state sources, as in ``Action.inject``)."""


@dataclass(frozen=True)
class OffloadEvalOptions:
    """Size of one run."""

    trials: int = 5
    """Tasks per mode; each task has its own ids and token."""

    items: int = 3
    """Records to file per task."""

    max_repairs: int = 2
    """Repairs per turn in ``on`` mode (``StepLimits.max_repairs``)."""

    seed: int = 0
    """Seed of ids and tokens."""

    temperature: float = 0.2
    """Sampling temperature (the runtime's execution phase)."""

    max_tokens: int = 160
    """``max_tokens`` of each decision."""

    def __post_init__(self) -> None:
        if self.trials < 1 or self.items < 1 or self.max_repairs < 0:
            raise ValueError("need trials >= 1, items >= 1, max_repairs >= 0")


@dataclass(frozen=True)
class OffloadTask:
    """One task: the records to file and the values the model must not get wrong."""

    workflow_id: str
    """The workflow's id."""

    token: str
    """The API token (a secret in ``on`` mode: never in the prompt)."""

    patients: tuple[str, ...]
    """Patient id of item 1, 2, ..."""


def make_task(rng: random.Random, items: int) -> OffloadTask:
    """Random ids and token; patient ids are distinct."""
    numbers = rng.sample(range(1000, 10000), items)
    return OffloadTask(
        workflow_id=f"wf-{rng.getrandbits(32):08x}",
        token=f"tok-{rng.getrandbits(64):016x}",
        patients=tuple(f"P-{n}" for n in numbers),
    )


def task_prompt(task: OffloadTask, mode: str, filed: list[int]) -> str:
    """The prompt of the turn that files the next item; ``off`` mode shows the exact values."""
    lines = [
        f"Mission: file the records of these {len(task.patients)} patients, one per turn, in order."
    ]
    if mode == "off":
        lines += [f"Workflow id: {task.workflow_id}", f"API token: {task.token}"]
    else:
        lines.append("The workflow id and the API token are filled in by the runtime.")
    lines.append("Records to file:")
    lines += [f"- item {i}: patient {p}" for i, p in enumerate(task.patients, start=1)]
    done = ", ".join(f"item {i} ({task.patients[i - 1]})" for i in filed) or "nothing yet"
    nxt = len(filed) + 1
    lines += [
        f"Filed so far: {done}.",
        f"Task: file item {nxt} (patient {task.patients[nxt - 1]}).",
    ]
    return "\n".join(lines)


@dataclass
class OffloadModeResult:
    """What one mode did over all its tasks."""

    mode: str
    """``on`` or ``off``."""

    trials: int = 0
    """Tasks run."""

    successes: int = 0
    """Tasks with every item filed right and no wrong record written."""

    decisions: int = 0
    """Reasoner calls (repairs included)."""

    no_tool_call: int = 0
    """Decisions answered without a tool call."""

    invalid: int = 0
    """Decisions whose parameters, as the model wrote them, break the schema."""

    hallucinated_params: int = 0
    """Parameters the model wrote with a wrong value, or that the schema does not know."""

    api_calls: int = 0
    """Calls that reached the records API."""

    wrong_params_at_api: int = 0
    """Parameters that reached the API with a wrong value."""

    rejected: int = 0
    """API calls refused for a wrong token or workflow id."""

    wrong_records: int = 0
    """Records written with the wrong patient or item."""

    injected: int = 0
    """Parameters the runtime filled or corrected (``on`` mode)."""

    repairs: int = 0
    """Decisions asked again after an invalid one (``on`` mode)."""

    elapsed_s: float = 0.0
    """Wall time of this mode, in seconds."""

    per_task: list[bool] = field(default_factory=list)
    """Success of each task, in order."""

    @property
    def rate(self) -> float:
        """Task success rate."""
        return self.successes / self.trials if self.trials else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        """95% Wilson interval of :attr:`rate`."""
        return wilson_interval(self.successes, self.trials)

    def per_decision(self, count: int) -> float:
        """``count`` divided by the decisions made."""
        return count / self.decisions if self.decisions else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the rate and interval."""
        return {**asdict(self), "rate": self.rate, "interval": list(self.interval)}


def _wrong_params(params: dict[str, Any], truth: dict[str, Any]) -> int:
    unknown = sum(1 for name in params if name not in truth)
    wrong = sum(1 for name, value in truth.items() if name in params and params[name] != value)
    return unknown + wrong


async def _run_task(
    reasoner: Reasoner,
    task: OffloadTask,
    mode: str,
    opts: OffloadEvalOptions,
    out: OffloadModeResult,
) -> bool:
    state = StepState(workflow_id=task.workflow_id, step_id="file", role="filer")
    state.variables["api_token"] = ContextVariable(
        "api_token", task.token, secret=True, priority=0, origin="identity"
    )
    names = [FILE_RECORD.name]
    filed: list[int] = []
    wrong_written = False
    for turn in range(len(task.patients) + 2):
        if len(filed) == len(task.patients):
            break
        item = len(filed) + 1
        truth = {
            "workflow_id": task.workflow_id,
            "token": task.token,
            "patient_id": task.patients[item - 1],
            "item": item,
        }
        prompt = task_prompt(task, mode, filed)
        hint: str | None = None
        params: dict[str, Any] | None = None
        for attempt in range(opts.max_repairs + 1 if mode == "on" else 1):
            if attempt:
                out.repairs += 1
            out.decisions += 1
            request = ReasonerRequest(
                system=SYSTEM_PROMPT,
                prompt=prompt,
                actions=[FILE_RECORD],
                temperature=opts.temperature,
                max_tokens=opts.max_tokens,
                repair_hint=hint,
            )
            try:
                decision = (await reasoner.decide(request)).decision
            except DecisionFormatError as exc:
                out.no_tool_call += 1
                hint = f"Your previous answer was invalid: {exc}. Call exactly one of: {', '.join(names)}."
                continue
            raw = dict(decision.params)
            out.invalid += bool(schema_errors(raw, FILE_RECORD.params_schema))
            # In `on` mode the token and workflow id are not the model's job: only count what it owns.
            owned = truth if mode == "off" else {k: v for k, v in truth.items() if k not in INJECT}
            out.hallucinated_params += _wrong_params(
                {k: v for k, v in raw.items() if k not in INJECT or mode == "off"}, owned
            )
            if mode == "off":
                params = raw
                break
            state.turn = turn
            injected, notes = inject_params(FILE_RECORD.name, raw, INJECT, state, {})
            out.injected += len(notes)
            try:
                check_params(FILE_RECORD.name, injected, FILE_RECORD.params_schema, names)
            except InvalidDecision as exc:
                hint = f"Your previous decision was invalid: {exc}. Fix it and decide again."
                continue
            params = injected
            break
        if params is None:
            continue  # no usable decision this turn
        out.api_calls += 1
        out.wrong_params_at_api += _wrong_params(params, truth)
        if params.get("token") != task.token or params.get("workflow_id") != task.workflow_id:
            out.rejected += 1
        elif params.get("patient_id") == truth["patient_id"] and params.get("item") == item:
            filed.append(item)
        else:
            out.wrong_records += 1
            wrong_written = True
    return len(filed) == len(task.patients) and not wrong_written


async def run_offload_eval(
    reasoner: Reasoner, options: OffloadEvalOptions | None = None
) -> list[OffloadModeResult]:
    """Run the same tasks with injection and validation on, then off; one result per mode."""
    opts = options or OffloadEvalOptions()
    tasks = [make_task(random.Random(f"{opts.seed}:{i}"), opts.items) for i in range(opts.trials)]
    results = []
    for mode in MODES:
        out = OffloadModeResult(mode=mode)
        started = time.monotonic()
        for task in tasks:
            ok = await _run_task(reasoner, task, mode, opts, out)
            out.trials += 1
            out.successes += ok
            out.per_task.append(ok)
        out.elapsed_s = time.monotonic() - started
        results.append(out)
    return results
