"""The Decider on its own: repairs, reasoner-unavailable retries, the budget check before each call,
injection and schema checks, metering and the observer hooks it calls."""

from __future__ import annotations

from typing import Any

from mesh.backoff import ExponentialBackoff
from mesh.llm import (
    ActionSpec,
    Decision,
    DecisionFormatError,
    ReasonerRequest,
    ReasonerResult,
    ReasonerUnavailable,
    Usage,
)
from mesh.runtime import (
    Action,
    ActionContext,
    ActionOutcome,
    BuiltPrompt,
    ContextVariable,
    RuntimeOptions,
    StepState,
)
from mesh.runtime.deciding import Decided, Decider, NoDecision, TurnMeter
from mesh.runtime.observers import (
    Observers,
    ReasonerAnswered,
    ReasonerCall,
    ReasonerRejected,
    TurnObserver,
)
from protocols import StepSpec, TokenUsage, WorkflowSpec

SCHEMA = {
    "type": "object",
    "properties": {"item": {"type": "integer", "minimum": 1}, "token": {"type": "string"}},
    "required": ["item", "token"],
    "additionalProperties": False,
}


async def _noop(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
    raise AssertionError("the decider never runs an action")


ACTIONS = {
    "call_api": Action(
        ActionSpec(name="call_api", description="Call.", params_schema=SCHEMA),
        _noop,
        inject={"token": "var:auth_token"},
    ),
    "wait": Action(ActionSpec(name="wait", description="Wait."), _noop),
}
ALLOWED = [a.spec for a in ACTIONS.values()]
FAST = RuntimeOptions(action_backoff=ExponentialBackoff(base_s=0.0, cap_s=0.0, jitter=0.0))
BUILT = BuiltPrompt(system="sys", prompt="decide", tokens=100, budget=1000)


def _spec(**budget: Any) -> WorkflowSpec:
    doc: dict[str, Any] = {
        "name": "t",
        "mission": "m",
        "steps": [
            {"id": "s", "role": "r", "task": "t", "limits": {"max_repairs": 2, "max_retries": 2}}
        ],
    }
    if budget:
        doc["budget"] = budget
    return WorkflowSpec.parse(doc)


def _state() -> StepState:
    state = StepState(workflow_id="wf-1", step_id="s", role="r")
    state.variables["auth_token"] = ContextVariable("auth_token", "tok-real", secret=True)
    return state


class Scripted:
    """A reasoner answering from a script: a Decision, or an exception to raise."""

    name = "scripted"
    model = "scripted-1"

    def __init__(self, *answers: Decision | Exception, usage: Usage | None = None) -> None:
        self.answers = list(answers)
        self.requests: list[ReasonerRequest] = []
        self.usage = usage

    async def decide(self, request: ReasonerRequest) -> ReasonerResult:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return ReasonerResult(decision=answer, usage=self.usage, model=self.model, raw="")

    async def complete(
        self, system: str, prompt: str, *, max_tokens: int, temperature: float = 0.2
    ) -> str:
        return ""

    async def aclose(self) -> None:
        return None


class Recorder(TurnObserver):
    def __init__(self) -> None:
        self.seen: list[object] = []

    def reasoner_scope(self, event: ReasonerCall) -> None:
        self.seen.append(event)

    def reasoner_rejected(self, event: ReasonerRejected) -> None:
        self.seen.append(event)

    def reasoner_answered(self, event: ReasonerAnswered) -> None:
        self.seen.append(event)


def _decider(reasoner: Scripted, recorder: Recorder | None = None) -> Decider:
    return Decider(reasoner, ACTIONS, Observers([recorder] if recorder else []), FAST)


async def _decide(
    decider: Decider, spec: WorkflowSpec | None = None, state: StepState | None = None, **kw: Any
) -> tuple[Decided | NoDecision, StepState, TurnMeter]:
    spec = spec or _spec()
    state = state or _state()
    step: StepSpec = spec.steps[0]
    meter = TurnMeter()
    got = await decider.decide(spec, step, state, BUILT, ALLOWED, 0.3, meter, **kw)
    return got, state, meter


CALL = Decision(action="call_api", params={"item": 2, "token": "hallucinated"}, reasoning="go")


async def test_a_valid_decision_comes_back_injected_with_no_repair() -> None:
    reasoner = Scripted(CALL)
    got, state, meter = await _decide(_decider(reasoner))
    assert isinstance(got, Decided)
    assert got.decision == CALL and got.repairs == 0
    assert got.params == {"item": 2, "token": "tok-real"}  # the hallucinated token corrected
    assert [n.split(" ")[0] for n in got.notes] == ["token"]
    assert reasoner.requests[0].repair_hint is None and reasoner.requests[0].temperature == 0.3
    assert state.calls == 1 and meter.usage.calls == 1 and state.input_tokens > 0  # tiktoken count


async def test_a_format_error_is_repaired_with_a_hint_naming_the_actions() -> None:
    recorder = Recorder()
    reasoner = Scripted(
        DecisionFormatError(
            "no tool call", raw="hmm", usage=Usage(input_tokens=7, output_tokens=3)
        ),
        CALL,
        usage=Usage(input_tokens=11, output_tokens=5),
    )
    got, state, meter = await _decide(_decider(reasoner, recorder))
    assert isinstance(got, Decided) and got.repairs == 1
    hint = reasoner.requests[1].repair_hint or ""
    assert (
        hint.startswith("Your previous answer was invalid: DecisionFormatError: no tool call")
        and "call_api, wait" in hint
    )
    # Both calls metered with the provider's usage.
    assert (state.input_tokens, state.output_tokens, state.calls) == (18, 8, 2)
    assert meter.usage == TokenUsage(
        input_tokens=18, output_tokens=8, calls=2, cost_usd=meter.usage.cost_usd
    )
    kinds = [type(e).__name__ for e in recorder.seen]
    assert kinds == ["ReasonerCall", "ReasonerRejected", "ReasonerCall", "ReasonerAnswered"]


async def test_an_invalid_decision_exhausts_the_repairs_and_says_why() -> None:
    bad = Decision(action="call_api", params={"item": 0}, reasoning="")
    reasoner = Scripted(bad, bad, bad, bad)
    got, state, _ = await _decide(_decider(reasoner))
    assert isinstance(got, NoDecision) and got.kind == "invalid_decision"
    assert got.reason.startswith(
        "no valid decision after 3 attempt(s): Your previous decision was invalid"
    )
    assert len(reasoner.requests) == 3  # max_repairs=2: three attempts, no more
    assert state.status == "running" and not state.nonce  # pausing is the caller's


async def test_an_unknown_action_is_repaired() -> None:
    reasoner = Scripted(
        Decision(action="delete_all", params={}, reasoning=""), Decision(action="wait", params={})
    )
    got, _, _ = await _decide(_decider(reasoner))
    assert isinstance(got, Decided) and got.decision.action == "wait" and got.repairs == 1
    assert "delete_all" in (reasoner.requests[1].repair_hint or "")


async def test_reasoner_unavailable_is_retried_without_counting_a_repair() -> None:
    reasoner = Scripted(
        ReasonerUnavailable("529 overloaded"), ReasonerUnavailable("529 overloaded"), CALL
    )
    got, state, _ = await _decide(_decider(reasoner))
    assert isinstance(got, Decided) and got.repairs == 0
    assert state.calls == 1  # an unavailable reasoner answered nothing to meter


async def test_reasoner_unavailable_past_the_retries_gives_up() -> None:
    reasoner = Scripted(*[ReasonerUnavailable("529 overloaded")] * 3)
    got, _, _ = await _decide(_decider(reasoner))
    assert isinstance(got, NoDecision) and got.kind == "reasoner_unavailable"
    assert (
        got.reason.startswith("reasoner unavailable after 3 attempt(s): ")
        and "529 overloaded" in got.reason
    )
    assert len(reasoner.requests) == 3


async def test_the_budget_is_checked_before_the_call() -> None:
    reasoner = Scripted(CALL)
    state = _state()
    state.input_tokens = 950  # 950 + the next prompt's 100 > 1000
    got, _, _ = await _decide(_decider(reasoner), _spec(max_tokens=1000), state)
    assert isinstance(got, NoDecision) and got.kind == "budget"
    assert got.reason.startswith("budget: the workflow used 950 of 1000 tokens")
    assert reasoner.requests == []  # fail closed: no call made


async def test_the_budget_counts_what_other_steps_spent() -> None:
    spec = _spec(max_tokens=1000)
    got, _, _ = await _decide(_decider(Scripted(CALL)), spec)
    assert isinstance(got, Decided)
    reasoner = Scripted(CALL)
    got, _, _ = await _decide(
        _decider(reasoner), spec, spent_elsewhere=lambda: TokenUsage(input_tokens=901)
    )
    assert isinstance(got, NoDecision) and got.kind == "budget" and reasoner.requests == []


async def test_the_budget_is_checked_before_every_repair_call() -> None:
    reasoner = Scripted(
        DecisionFormatError("no tool call", usage=Usage(input_tokens=901, output_tokens=0)), CALL
    )
    got, state, _ = await _decide(_decider(reasoner), _spec(max_tokens=1000))
    assert isinstance(got, NoDecision) and got.kind == "budget"
    assert len(reasoner.requests) == 1 and state.input_tokens == 901


async def test_a_cost_budget_stops_the_call_once_spent() -> None:
    state = _state()
    state.cost_usd = 0.6
    reasoner = Scripted(CALL)
    got, _, _ = await _decide(_decider(reasoner), _spec(max_cost_usd=0.5), state)
    assert (
        isinstance(got, NoDecision)
        and got.kind == "budget"
        and "spent $0.6000 of $0.5000" in got.reason
    )
    assert reasoner.requests == []
