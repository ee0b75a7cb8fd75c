"""The ActionRunner on its own: the call's context, retries of retryable failures and timeouts, the
one renewal of a credential refused as expired (never for an at-most-once call), and the tool
hooks the observers see."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mesh.backoff import ExponentialBackoff
from mesh.llm import ActionSpec
from mesh.runtime import (
    Action,
    ActionContext,
    ActionError,
    ActionOutcome,
    ContextVariable,
    RetryableActionError,
    RuntimeOptions,
    StepState,
)
from mesh.runtime.actions import CredentialExpired
from mesh.runtime.executing import ActionRunner
from mesh.runtime.observers import Observers, ToolAttempt, ToolCall, TurnObserver
from protocols import StepSpec, WorkflowSpec

FAST = RuntimeOptions(action_backoff=ExponentialBackoff(base_s=0.0, cap_s=0.0, jitter=0.0))
KEY = "wf-1:s:1:call"


def _step(**limits: Any) -> StepSpec:
    doc = {
        "name": "t",
        "mission": "m",
        "steps": [{"id": "s", "role": "r", "task": "t", "limits": limits}],
    }
    return WorkflowSpec.parse(doc).steps[0]


def _state() -> StepState:
    state = StepState(workflow_id="wf-1", step_id="s", role="r")
    state.variables["auth_token"] = ContextVariable("auth_token", "tok-old", secret=True)
    return state


class Recorder(TurnObserver):
    def __init__(self) -> None:
        self.seen: list[str] = []

    @contextmanager
    def tool_scope(self, event: ToolCall) -> Iterator[None]:
        self.seen.append(f"call {event.action} {event.idempotency_key}")
        yield

    def tool_attempt(self, event: ToolAttempt) -> None:
        self.seen.append(f"{event.outcome}: {event.detail}")


class Service:
    """Answers from a script: an exception to raise, or a summary."""

    def __init__(self, *script: Exception | str, delay_s: float = 0.0) -> None:
        self.script = list(script)
        self.calls: list[dict[str, Any]] = []
        self.delay_s = delay_s

    async def run(self, ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
        self.calls.append(dict(params))
        await asyncio.sleep(self.delay_s)
        answer = self.script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return ActionOutcome(summary=answer)


def _action(service: Service, *, at_most_once: bool = False) -> Action:
    spec = ActionSpec(name="call", description="Call.", params_schema={"type": "object"})
    return Action(spec, service.run, inject={"token": "var:auth_token"}, at_most_once=at_most_once)


def _runner(recorder: Recorder | None = None, **resources: Any) -> ActionRunner:
    return ActionRunner(
        Observers([recorder] if recorder else []),
        FAST,
        resources=resources,
        refreshers={"auth_token"},
    )


async def test_a_call_sees_its_key_params_variables_and_resources() -> None:
    seen: dict[str, Any] = {}

    async def look(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
        seen.update(
            key=ctx.idempotency_key,
            turn=ctx.turn,
            token=ctx.variable("auth_token"),
            http=ctx.resource("http"),
        )
        return ActionOutcome(summary="ok")

    recorder, state = Recorder(), _state()
    action = Action(ActionSpec(name="look", description="Look."), look)
    got = await _runner(recorder, http="client").execute(_step(), state, action, {}, KEY, 3)
    assert got == (ActionOutcome(summary="ok"), None, 0)
    assert seen == {"key": KEY, "turn": 3, "token": "tok-old", "http": "client"}
    assert state.variables["auth_token"].last_used_turn == 3  # a use, for decay
    assert recorder.seen == [f"call look {KEY}", "ok: ok"]


async def test_retryable_failures_are_retried_then_succeed() -> None:
    recorder, service = (
        Recorder(),
        Service(RetryableActionError("503"), RetryableActionError("503"), "done"),
    )
    outcome, error, retries = await _runner(recorder).execute(
        _step(max_retries=2), _state(), _action(service), {"token": "tok-old"}, KEY, 1
    )
    assert outcome is not None and outcome.summary == "done" and error is None and retries == 2
    assert [s.split(":")[0] for s in recorder.seen] == ["call call wf-1", "retry", "call call wf-1", "retry",
                                                         "call call wf-1", "ok"]  # fmt: skip


async def test_retries_stop_at_the_limit() -> None:
    service = Service(*[RetryableActionError("503 busy")] * 3)
    outcome, error, retries = await _runner().execute(
        _step(max_retries=2), _state(), _action(service), {}, KEY, 1
    )
    assert outcome is None and error is not None and "503 busy" in error and retries == 2
    assert len(service.calls) == 3


async def test_a_permanent_failure_is_not_retried() -> None:
    recorder, service = Recorder(), Service(ActionError("400 bad request"), "never")
    outcome, error, retries = await _runner(recorder).execute(
        _step(), _state(), _action(service), {}, KEY, 1
    )
    assert outcome is None and "400 bad request" in (error or "") and retries == 0
    assert len(service.calls) == 1 and recorder.seen[-1].startswith("failed: ")


async def test_a_call_past_the_turn_timeout_is_retried_as_a_timeout() -> None:
    service = Service("late", "late", delay_s=0.5)
    outcome, error, retries = await _runner().execute(
        _step(turn_timeout_s=0.05, max_retries=1), _state(), _action(service), {}, KEY, 1
    )
    assert outcome is None and error is not None and "Timeout" in error and retries == 1


def _renew(state: StepState, calls: list[list[str]], *, ok: bool = True) -> Any:
    async def renew(names: list[str]) -> bool:
        calls.append(names)
        if ok:
            state.variables["auth_token"] = ContextVariable("auth_token", "tok-new", secret=True)
        return ok

    return renew


async def test_an_expired_credential_is_renewed_once_and_the_call_made_again() -> None:
    state, renewals, recorder = _state(), [], Recorder()
    service = Service(CredentialExpired("401 token_expired"), "done")
    params = {"token": "tok-old"}
    outcome, error, retries = await _runner(recorder).execute(
        _step(), state, _action(service), params, KEY, 1, renew=_renew(state, renewals)
    )
    assert outcome is not None and error is None and retries == 0  # a renewal is no retry
    assert renewals == [["auth_token"]]
    assert [c["token"] for c in service.calls] == ["tok-old", "tok-new"] and params[
        "token"
    ] == "tok-new"
    assert recorder.seen[1].startswith("retry: ") and recorder.seen[-1] == "ok: done"


async def test_a_second_expiry_in_the_same_call_fails_it() -> None:
    state, renewals = _state(), []
    service = Service(
        CredentialExpired("401 token_expired"), CredentialExpired("401 token_expired"), "never"
    )
    outcome, error, _ = await _runner().execute(
        _step(), state, _action(service), {}, KEY, 1, renew=_renew(state, renewals)
    )
    assert (
        outcome is None
        and "token_expired" in (error or "")
        and len(renewals) == 1
        and len(service.calls) == 2
    )


async def test_an_at_most_once_call_is_never_renewed_and_made_again() -> None:
    state, renewals = _state(), []
    service = Service(CredentialExpired("401 token_expired"), "never")
    outcome, _, _ = await _runner().execute(
        _step(),
        state,
        _action(service, at_most_once=True),
        {},
        KEY,
        1,
        renew=_renew(state, renewals),
    )
    assert outcome is None and renewals == [] and len(service.calls) == 1


async def test_a_failed_renewal_fails_the_call() -> None:
    state, renewals = _state(), []
    service = Service(CredentialExpired("401 token_expired"), "never")
    outcome, _, _ = await _runner().execute(
        _step(), state, _action(service), {}, KEY, 1, renew=_renew(state, renewals, ok=False)
    )
    assert outcome is None and renewals == [["auth_token"]] and len(service.calls) == 1


def test_refreshable_names_the_injected_variables_with_a_refresh_path() -> None:
    async def run(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
        return ActionOutcome(summary="")

    action = Action(
        ActionSpec(name="a", description="A."),
        run,
        inject={
            "t": "var:auth_token|bearer",
            "u": "var:auth_token",
            "w": "var:other",
            "p": "param:auth_token",
        },
    )
    assert _runner().refreshable(action) == ["auth_token"]
