"""The history checker on synthetic histories: clean ones pass, each anomaly is found with its evidence."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mesh.chaos import ANOMALY_KINDS, History, check

STEPS = ("identity", "fetch", "validate", "report")
AGENTS = {
    "identity": "identity-a",
    "fetch": "fetch-a",
    "validate": "validate-a",
    "report": "report-a",
}


def clean_history(workflows: int = 2, *, turns: int = 3) -> History:
    """Every workflow runs every step once, checkpoints each turn, creates its effects once."""
    h = History()
    for role, agent in AGENTS.items():
        h.record("process", "process.start", actor=agent, role=role)
    t = 1000
    for n in range(workflows):
        wf = f"wf-{n}"
        h.record(
            "log",
            "workflow.submitted",
            at_ms=t,
            workflow_id=wf,
            actor="campaign",
            steps=[{"id": s, "role": s} for s in STEPS],
        )
        token = f"tok-{n}"
        for step in STEPS:
            agent = AGENTS[step]
            t += 10
            h.record(
                "log",
                "workflow.step_started",
                at_ms=t,
                workflow_id=wf,
                step_id=step,
                actor=agent,
                owner=agent,
                epoch=1,
                resumed_from_turn=0,
                id=f"{wf}-{step}-s1",
            )
            for turn in range(1, (1 if step == "identity" else turns) + 1):
                t += 10
                if step == "identity":
                    h.record("audit", "POST /auth/token", at_ms=t, status=200, token_id=token)
                else:
                    h.record("audit", "GET /patients", at_ms=t, status=200, token_id=token)
                if step in ("validate", "report"):
                    h.record(
                        "audit",
                        f"POST /{step}",
                        at_ms=t,
                        status=201,
                        token_id=token,
                        effect_id=f"e-{wf}-{step}-{turn}",
                        effect_key=f"{wf}:{step}:{turn}",
                    )
                h.record(
                    "store",
                    "checkpoint",
                    at_ms=t,
                    workflow_id=wf,
                    step_id=step,
                    actor=agent,
                    version=turn,
                    epoch=1,
                    turn=turn,
                    status="running",
                    latest=False,
                )
                h.record(
                    "log",
                    "workflow.step_progress",
                    at_ms=t + 1,
                    workflow_id=wf,
                    step_id=step,
                    actor=agent,
                    turn=turn,
                    outcome="ok",
                )
            variables = {"auth_expires_at_ms": 99} if step == "identity" else {}
            h.record(
                "log",
                "workflow.step_completed",
                at_ms=t + 2,
                workflow_id=wf,
                step_id=step,
                actor=agent,
                id=f"{wf}-{step}-done",
                turns=turn,
                variables=variables,
            )
            h.record(
                "store",
                "checkpoint",
                at_ms=t + 2,
                workflow_id=wf,
                step_id=step,
                actor=agent,
                version=turn + 1,
                epoch=1,
                turn=turn,
                status="completed",
                latest=True,
            )
        h.record(
            "log",
            "workflow.completed",
            at_ms=t + 3,
            workflow_id=wf,
            actor="report-a",
            status="succeeded",
        )
        for agent in AGENTS.values():
            h.record(
                "gossip", "map", workflow_id=wf, actor=agent, variables={"auth_expires_at_ms": 99}
            )
    return h


def mutate(history: History, change: Callable[[list[dict]], None]) -> History:
    rows = [e.to_json() for e in history]
    change(rows)
    from mesh.chaos import Event

    return History(Event.from_json(r) for r in rows)


def _find(rows: list[dict], kind: str, wf: str = "wf-0", step: str = "", **match: object) -> int:
    for i, r in enumerate(rows):
        if (
            r["kind"] == kind
            and r["workflow_id"] in (wf, "")
            and (not step or r["step_id"] == step)
            and all(r["data"].get(k) == v for k, v in match.items())
        ):
            return i
    raise LookupError(kind)


def test_clean_histories_have_no_anomaly_and_their_figures_add_up() -> None:
    for n in (1, 3):
        result = check(clean_history(n))
        assert result.ok, [a.summary for a in result.anomalies]
        f = result.figures
        assert (f.workflows, f.completed, f.auth_calls, f.tokens_issued) == (n, n, n, n)
        assert f.effects == n * 6 and f.duplicated_effects == 0 and f.auth_per_workflow == 1.0


def test_a_clean_kill_and_resume_is_no_anomaly_and_its_recovery_is_measured() -> None:
    def kill_fetch(rows: list[dict]) -> None:
        i = _find(rows, "workflow.step_progress", step="fetch", turn=2)
        at = rows[i]["at_ms"]
        rows.insert(
            i + 1,
            {
                "source": "fault",
                "kind": "fault.sigkill",
                "at_ms": at + 1,
                "actor": "fetch-a",
                "data": {"steps": ["wf-0/fetch"]},
            },
        )
        rows.insert(
            i + 2,
            {
                "source": "log",
                "kind": "workflow.step_started",
                "at_ms": at + 2,
                "workflow_id": "wf-0",
                "step_id": "fetch",
                "actor": "fetch-b",
                "data": {"owner": "fetch-b", "epoch": 2, "resumed_from_turn": 2, "id": "s2"},
            },
        )
        j = _find(rows, "workflow.step_progress", step="fetch", turn=3)
        rows[j]["actor"] = "fetch-b"
        rows.insert(
            0, {"source": "process", "kind": "process.start", "actor": "fetch-b", "data": {}}
        )
        rows.insert(
            0,
            {
                "source": "process",
                "kind": "process.exit",
                "actor": "fetch-a",
                "data": {"expected": True, "code": -9},
            },
        )

    result = check(mutate(clean_history(1), kill_fetch))
    assert result.ok, [a.summary for a in result.anomalies]
    assert result.figures.faults == 1 and result.figures.resumes == 1
    assert result.figures.recover_ms == [9]  # fault at turn 2 + 1 ms, turn 3 reported 9 ms later


def _drop_completion(rows: list[dict]) -> None:
    rows.pop(_find(rows, "workflow.step_completed", step="report"))
    rows.pop(_find(rows, "workflow.completed"))


def _restart_after_completion(rows: list[dict]) -> None:
    i = _find(rows, "workflow.step_completed", step="fetch")
    rows.insert(
        i + 1,
        {
            "source": "log",
            "kind": "workflow.step_started",
            "workflow_id": "wf-0",
            "step_id": "fetch",
            "actor": "fetch-a",
            "data": {"owner": "fetch-a", "epoch": 2, "resumed_from_turn": 3},
        },
    )


def _resume_from_older_turn(rows: list[dict]) -> None:
    i = _find(rows, "workflow.step_progress", step="validate", turn=3)
    rows.insert(
        i + 1,
        {
            "source": "log",
            "kind": "workflow.step_started",
            "workflow_id": "wf-0",
            "step_id": "validate",
            "actor": "validate-a",
            "data": {"owner": "validate-a", "epoch": 2, "resumed_from_turn": 1},
        },
    )


def _store_behind(rows: list[dict]) -> None:
    i = _find(rows, "checkpoint", step="fetch", latest=True)
    rows[i]["data"]["turn"] = 1


def _stale_write(rows: list[dict]) -> None:
    rows[_find(rows, "checkpoint", step="fetch", version=2)]["data"]["epoch"] = 3
    rows[_find(rows, "checkpoint", step="fetch", version=3)]["data"]["epoch"] = 2


def _duplicate_effect(rows: list[dict]) -> None:
    i = _find(rows, "POST /validate")
    dup = {**rows[i], "data": {**rows[i]["data"], "effect_id": "e-dup"}}
    rows.insert(i + 1, dup)


def _unauthorized(rows: list[dict]) -> None:
    rows[_find(rows, "GET /patients")]["data"].update(status=401, error="invalid_token")


def _extra_token(rows: list[dict]) -> None:
    i = _find(rows, "POST /auth/token")
    rows.insert(
        i,
        {
            "source": "audit",
            "kind": "POST /auth/token",
            "data": {"status": 200, "token_id": "never-used"},
        },
    )


def _in_doubt_left(rows: list[dict]) -> None:
    rows.append(
        {
            "source": "trace",
            "kind": "effect.in_doubt",
            "workflow_id": "wf-0",
            "step_id": "identity",
            "data": {"idempotency_key": "wf-0:identity:1:authenticate"},
        }
    )


def _variable_lost(rows: list[dict]) -> None:
    i = next(i for i, r in enumerate(rows) if r["kind"] == "map" and r["actor"] == "fetch-a")
    rows[i]["data"]["variables"] = {}


def _variable_diverged(rows: list[dict]) -> None:
    i = next(i for i, r in enumerate(rows) if r["kind"] == "map" and r["actor"] == "report-a")
    rows[i]["data"]["variables"] = {"auth_expires_at_ms": 98}


def _false_fact(rows: list[dict]) -> None:
    rows.append(
        {
            "source": "fault",
            "kind": "fault.false_proposal",
            "data": {"proposal_id": "p1", "name": "dose", "value": "10x"},
        }
    )
    rows.append(
        {
            "source": "votes",
            "kind": "fact.decided",
            "actor": "validate-a",
            "data": {"proposal_id": "p1", "outcome": "accepted"},
        }
    )


def _agent_died(rows: list[dict]) -> None:
    rows.append(
        {
            "source": "process",
            "kind": "process.exit",
            "actor": "fetch-a",
            "data": {"expected": False, "code": 1, "last_line": "Traceback"},
        }
    )


def _event_refused(rows: list[dict]) -> None:
    rows.append(
        {
            "source": "dlq",
            "kind": "dead_letter",
            "actor": "validate-a",
            "workflow_id": "wf-0",
            "data": {
                "sender": "fetch-a",
                "reason": "forged",
                "event_kind": "workflow.step_started",
            },
        }
    )


def _step_failed(rows: list[dict]) -> None:
    i = _find(rows, "workflow.step_completed", step="report")
    rows[i]["kind"] = "workflow.step_failed"
    rows[i]["data"]["error"] = "TurnLimit"
    rows[_find(rows, "workflow.completed")]["data"]["status"] = "failed"


CASES: dict[str, Callable[[list[dict]], None]] = {
    "step_lost": _drop_completion,
    "step_failed": _step_failed,
    "step_run_twice": _restart_after_completion,
    "checkpoint_lost": _resume_from_older_turn,
    "stale_epoch_write": _stale_write,
    "duplicate_effect": _duplicate_effect,
    "unauthorized": _unauthorized,
    "extra_auth": _extra_token,
    "in_doubt_unresolved": _in_doubt_left,
    "variable_lost": _variable_lost,
    "variable_diverged": _variable_diverged,
    "false_fact": _false_fact,
    "agent_died": _agent_died,
    "agent_event_refused": _event_refused,
}


def test_every_anomaly_kind_has_a_synthetic_case() -> None:
    assert set(CASES) == set(ANOMALY_KINDS)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_anomaly_is_found_with_its_evidence(kind: str) -> None:
    result = check(mutate(clean_history(2), CASES[kind]))
    found = [a for a in result.anomalies if a.kind == kind]
    assert found, f"{kind} not found; got {[a.kind for a in result.anomalies]}"
    assert all(a.evidence for a in found), "an anomaly must name the events that prove it"


def test_a_store_behind_the_acknowledged_turn_is_a_lost_checkpoint() -> None:
    result = check(mutate(clean_history(1), _store_behind))
    assert [a.kind for a in result.anomalies] == ["checkpoint_lost"]
    assert "store's last version holds turn 1" in result.anomalies[0].summary


def test_dead_letters_of_the_campaigns_own_flood_are_not_anomalies() -> None:
    def flood(rows: list[dict]) -> None:
        rows.append(
            {
                "source": "dlq",
                "kind": "dead_letter",
                "actor": "fetch-a",
                "data": {"sender": "fetch-a", "reason": "forged", "flood": True},
            }
        )
        rows.append(
            {
                "source": "dlq",
                "kind": "dead_letter",
                "actor": "fetch-a",
                "data": {"sender": "mallory", "reason": "unsigned"},
            }
        )

    result = check(mutate(clean_history(1), flood))
    assert result.ok and result.figures.dead_letters == 2


def test_a_history_round_trips_through_jsonl(tmp_path: Path) -> None:
    history = mutate(clean_history(2), _duplicate_effect)
    history.save(tmp_path / "h.jsonl")
    again = History.load(tmp_path / "h.jsonl")
    assert [e.to_json() for e in again] == [e.to_json() for e in history]
    assert check(again).by_kind() == check(history).by_kind() == {"duplicate_effect": 1}


def test_in_doubt_effects_are_counted_by_resolution_from_the_log_before_the_trace() -> None:
    def doubts(rows: list[dict]) -> None:
        for turn, resolution in ((1, "reconciled"), (2, "absent"), (3, "repeated")):
            key = f"wf-0:fetch:{turn}:fetch_page"
            rows.append(
                {
                    "source": "log",
                    "kind": "workflow.effect_in_doubt",
                    "workflow_id": "wf-0",
                    "step_id": "fetch",
                    "actor": "fetch-a",
                    "data": {"idempotency_key": key, "turn": turn, "resolution": resolution},
                }
            )
            # The trace event about the same effect is not a second one.
            rows.append(
                {
                    "source": "trace",
                    "kind": "effect.in_doubt",
                    "workflow_id": "wf-0",
                    "step_id": "fetch",
                    "data": {"idempotency_key": key, "turn": turn, "resolution": resolution},
                }
            )

    result = check(mutate(clean_history(1), doubts))
    assert result.ok, [a.summary for a in result.anomalies]
    f = result.figures
    assert (f.in_doubt, f.in_doubt_reconciled, f.in_doubt_reported) == (3, 2, 1)


def test_a_call_checkpointed_with_its_result_was_never_in_doubt_but_one_left_in_flight_is() -> None:
    def in_flight_then(rows: list[dict], *, completed: bool) -> None:
        key = "wf-0:identity:1:authenticate"
        rows.append({"source": "trace", "kind": "effect.in_doubt", "workflow_id": "wf-0",
                     "step_id": "identity", "data": {"key": key, "turn": 1}})  # fmt: skip
        if completed:
            rows.append({"source": "trace", "kind": "effect.completed", "workflow_id": "wf-0",
                         "step_id": "identity", "data": {"key": key, "turn": 1}})  # fmt: skip

    done = check(mutate(clean_history(1), lambda rows: in_flight_then(rows, completed=True)))
    assert done.ok and done.figures.in_doubt == 0, [a.summary for a in done.anomalies]
    left = check(mutate(clean_history(1), lambda rows: in_flight_then(rows, completed=False)))
    assert left.by_kind() == {"in_doubt_unresolved": 1}


def _token_history(*, refresh_at_ms: int, refused: bool = False, used: bool = True) -> History:
    """One workflow whose token (issued at 1 s, expiring at 4 s) is replaced at ``refresh_at_ms``.

    The grants carry the workflow's idempotency keys and ``expires_at`` like the mock EHR's audit;
    ``refused``: a call with the old token was answered ``401 token_expired`` just before.
    """
    h = History()
    h.record("log", "workflow.submitted", at_ms=0, workflow_id="wf-0", steps=[])
    h.record(
        "audit",
        "POST /auth/token",
        at_ms=1000,
        workflow_id="wf-0",
        status=200,
        token_id="t1",
        idempotency_key="wf-0:identity:1:authenticate",
        expires_at=4.0,
    )
    h.record("audit", "GET /patients", at_ms=2000, status=200, token_id="t1")
    if refused:
        h.record(
            "audit",
            "GET /patients",
            at_ms=refresh_at_ms - 5,
            status=401,
            error="token_expired",
            token_id="t1",
        )
    h.record(
        "audit",
        "POST /auth/token",
        at_ms=refresh_at_ms,
        workflow_id="wf-0",
        status=200,
        token_id="t2",
        idempotency_key="wf-0:fetch:3:authenticate:refresh-1",
        expires_at=refresh_at_ms / 1000 + 3,
    )
    if used:
        h.record("audit", "GET /patients", at_ms=refresh_at_ms + 10, status=200, token_id="t2")
    return h


def test_a_token_asked_for_after_the_previous_one_expired_is_a_refresh_not_extra_auth() -> None:
    result = check(_token_history(refresh_at_ms=4200))
    kinds = [a.kind for a in result.anomalies if a.kind in ("extra_auth", "unauthorized")]
    assert kinds == [], [a.summary for a in result.anomalies]
    assert (result.figures.tokens_issued, result.figures.tokens_refreshed) == (2, 1)
    assert result.figures.to_json()["tokens_refreshed"] == 1


def test_a_refresh_after_a_401_token_expired_is_justified_and_the_401_is_no_anomaly() -> None:
    # Refused as expired (clocks differ, or it expired in flight) before its nominal expiry.
    result = check(_token_history(refresh_at_ms=3000, refused=True))
    assert [a.kind for a in result.anomalies if a.kind in ("extra_auth", "unauthorized")] == []
    assert (
        result.figures.tokens_refreshed,
        result.figures.tokens_expired,
        result.figures.unauthorized,
    ) == (1, 1, 0)


def test_a_second_token_while_the_first_is_valid_is_still_extra_auth() -> None:
    result = check(_token_history(refresh_at_ms=2500, used=False))
    extra = [a for a in result.anomalies if a.kind == "extra_auth"]
    assert len(extra) == 1 and extra[0].evidence[0].get("token_id") == "t2", [
        a.summary for a in result.anomalies
    ]
    assert result.figures.tokens_refreshed == 0


def test_a_401_token_expired_that_no_refresh_followed_is_unauthorized() -> None:
    h = _token_history(refresh_at_ms=2500, used=False)
    h.record("audit", "GET /patients", at_ms=5000, status=401, error="token_expired", token_id="t2")
    result = check(h)
    assert [a.kind for a in result.anomalies].count("unauthorized") == 1
    assert result.figures.tokens_expired == 0


def test_a_claim_announced_late_by_a_frozen_owner_is_not_a_lost_checkpoint() -> None:
    # Seen in a 220-workflow campaign (sigstop-zombie): validate-a claimed epoch 2 and was frozen
    # before announcing it; validate-b claimed epoch 3 from turn 0, reported turn 1; validate-a
    # thawed, announced its (fenced) epoch 2 "from turn 0" after that report, then stood down.
    def late_claim(rows: list[dict]) -> None:
        i = _find(rows, "workflow.step_started", step="validate")
        rows[i]["data"]["epoch"] = 3
        j = _find(rows, "workflow.step_progress", step="validate", turn=1)
        rows.insert(j + 1, {
            "source": "log", "kind": "workflow.step_started", "workflow_id": "wf-0", "step_id": "validate",
            "actor": "validate-a", "data": {"owner": "validate-a", "epoch": 2, "resumed_from_turn": 0},
        })  # fmt: skip

    assert [a.kind for a in check(mutate(clean_history(1), late_claim)).anomalies] == []
    # The same late announcement with a newer epoch than the reporter's is a real loss.
    result = check(mutate(clean_history(1), _resume_from_older_turn))
    assert [a.kind for a in result.anomalies] == ["checkpoint_lost"]


def test_an_event_whose_fields_are_named_source_or_kind_is_recorded() -> None:
    # A 220-workflow campaign stopped reading its history: a trace event's attributes held
    # "source", which collided with record()'s own parameter (TypeError).
    h = History()
    e = h.record("trace", "secret.refreshed", actor="fetch-a", source="authenticate", kind="token")
    assert (e.source, e.kind, e.data) == ("trace", "secret.refreshed", {"source": "authenticate", "kind": "token"})
