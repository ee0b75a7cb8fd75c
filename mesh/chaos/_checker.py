"""The history checker: what went wrong, each anomaly with the events that prove it.

It reads only a :class:`~mesh.chaos.History` (see ``_history.py`` for the sources) and answers
like Jepsen's checkers do: a list of anomalies (empty for a correct run) and the figures of the
run. Every check is a small function over the history, so a synthetic history can make each one
fail (``tests/unit/chaos/test_checker.py``).

What each anomaly kind means is in ``ANOMALY_KINDS``; the figures are in :class:`Figures`.
"""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mesh.chaos._history import Event, History

__all__ = ["ANOMALY_KINDS", "IN_DOUBT_EVENTS", "Anomaly", "CheckResult", "Figures", "check"]

ANOMALY_KINDS: Mapping[str, str] = {
    "step_lost": "a submitted workflow's step never completed (nor failed) by the end of the run",
    "step_failed": "a step ended failed (a fault must delay a step, not fail it)",
    "step_run_twice": "a step started again after it completed, or completed twice under different ids",
    "checkpoint_lost": "a turn reported done (checkpoint acknowledged) was later missing: a successor "
    "resumed from an older turn, or the store's last version is older",
    "stale_epoch_write": "a checkpoint version written with a lower epoch after a higher one",
    "duplicate_effect": "one logical side effect (idempotency key) created twice in the mock service",
    "unauthorized": "a call answered 401 (a step ran without a valid token)",
    "extra_auth": "a token issued that no call ever used, beyond one per workflow (a token asked for "
    "after the workflow's previous one expired is a refresh, counted in tokens_refreshed)",
    "in_doubt_unresolved": "an effect recorded in doubt that was neither reconciled nor reported",
    "variable_lost": "a variable a step published is missing from an agent's persisted map",
    "variable_diverged": "agents' persisted maps disagree on a variable's value",
    "false_fact": "the quorum accepted a fact the campaign knows to be false",
    "agent_died": "an agent process exited without being told to (died of its input or a fault)",
    "agent_event_refused": "a consumer dead-lettered an event an agent of the mesh really sent",
}
"""Every anomaly kind and what it means."""

IN_DOUBT_EVENTS: Mapping[str, str] = {
    "workflow.effect_in_doubt": "log",
    "effect.in_doubt": "trace",
}
"""Where the runtime says an effect was in doubt at a resume (the log event is the record; the
trace event of the same name is read only when the log has none for that effect). Its
``resolution``: ``reconciled`` (looked up and found) or ``absent`` (looked up, never happened: made
once) settle it; ``repeated`` (no way to look it up: made again) is reported; none is unresolved."""

EFFECT_COMPLETED = "effect.completed"
"""Trace event of an at-most-once call whose turn was checkpointed with its result (not in doubt)."""

_SETTLED = ("reconciled", "absent")
_REPORTED = ("repeated",)

_STEP_DONE = ("workflow.step_completed", "workflow.step_failed")
_PROGRESSING = ("workflow.step_progress", "workflow.step_completed")


@dataclass(frozen=True)
class Anomaly:
    """One thing that must not happen, with the events that show it did."""

    kind: str
    """One of ``ANOMALY_KINDS``."""
    summary: str
    """One line: what, where."""
    evidence: tuple[Event, ...] = ()
    """The events that prove it, in history order."""
    workflow_id: str = ""
    step_id: str = ""

    def to_json(self) -> dict[str, Any]:
        """The anomaly as a JSON object (evidence as one line each)."""
        return {
            "kind": self.kind, "summary": self.summary, "workflow_id": self.workflow_id,
            "step_id": self.step_id, "evidence": [e.brief() for e in self.evidence],
        }  # fmt: skip


@dataclass
class Figures:
    """What the run measured (not judged)."""

    workflows: int = 0
    completed: int = 0
    """Workflows that ended ``succeeded``."""
    faults: int = 0
    """Faults the campaign injected (``fault.*`` events)."""
    auth_calls: int = 0
    tokens_issued: int = 0
    tokens_refreshed: int = 0
    """Tokens issued to a workflow after its previous token expired (justified, not ``extra_auth``)."""
    tokens_expired: int = 0
    """Calls refused ``401 token_expired`` with a token its workflow then refreshed (not ``unauthorized``)."""
    unauthorized: int = 0
    effects: int = 0
    """Side effects created in the mock service (replays not counted)."""
    duplicated_effects: int = 0
    in_doubt: int = 0
    """Effects recorded in doubt."""
    in_doubt_reconciled: int = 0
    in_doubt_reported: int = 0
    resumes: int = 0
    """Step starts that continued from a checkpoint (``resumed_from_turn > 0``)."""
    dead_letters: int = 0
    recover_ms: list[int] = field(default_factory=list)
    """Per fault: from the fault (or its heal) to the next progress of an affected step."""

    @property
    def auth_per_workflow(self) -> float:
        """Token calls per submitted workflow."""
        return self.auth_calls / self.workflows if self.workflows else 0.0

    def recover_percentile(self, q: float) -> int | None:
        """The ``q`` quantile (0..1) of ``recover_ms``, or None without a recovery."""
        if not self.recover_ms:
            return None
        if len(self.recover_ms) == 1:
            return self.recover_ms[0]
        cuts = statistics.quantiles(sorted(self.recover_ms), n=100, method="inclusive")
        return int(cuts[min(98, max(0, round(q * 100) - 1))])

    def to_json(self) -> dict[str, Any]:
        """The figures as a JSON object."""
        return {
            "workflows": self.workflows, "completed": self.completed, "faults": self.faults,
            "auth_calls": self.auth_calls, "auth_per_workflow": round(self.auth_per_workflow, 3),
            "tokens_issued": self.tokens_issued, "tokens_refreshed": self.tokens_refreshed,
            "tokens_expired": self.tokens_expired, "unauthorized": self.unauthorized, "effects": self.effects,
            "duplicated_effects": self.duplicated_effects, "in_doubt": self.in_doubt,
            "in_doubt_reconciled": self.in_doubt_reconciled, "in_doubt_reported": self.in_doubt_reported,
            "resumes": self.resumes, "dead_letters": self.dead_letters,
            "recover_ms_p50": self.recover_percentile(0.5), "recover_ms_p95": self.recover_percentile(0.95),
            "recover_ms": sorted(self.recover_ms),
        }  # fmt: skip


@dataclass
class CheckResult:
    """Anomalies and figures of one history."""

    anomalies: list[Anomaly]
    figures: Figures

    @property
    def ok(self) -> bool:
        """No anomaly."""
        return not self.anomalies

    def by_kind(self) -> dict[str, int]:
        """Anomaly counts per kind (kinds with none left out)."""
        counts: dict[str, int] = {}
        for a in self.anomalies:
            counts[a.kind] = counts.get(a.kind, 0) + 1
        return counts


# -- helpers -------------------------------------------------------------------------------------


def _agents(history: History) -> set[str] | None:
    """Agent ids the campaign started (None when the history names none: trust every sender)."""
    started = {e.actor for e in history.of("process", "process.start")}
    return started or None


def _log_by_step(history: History) -> dict[tuple[str, str], list[Event]]:
    agents = _agents(history)
    steps: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for e in history.of("log"):
        if e.step_id and (agents is None or e.actor in agents):
            steps[(e.workflow_id, e.step_id)].append(e)
    return steps


def _spec_steps(submitted: Event) -> list[str]:
    return [str(s["id"]) if isinstance(s, Mapping) else str(s) for s in submitted.get("steps", [])]


# -- checks --------------------------------------------------------------------------------------


def _lost_and_failed(history: History) -> Iterable[Anomaly]:
    by_step = _log_by_step(history)
    finished = {e.workflow_id: e for e in history.of("log", "workflow.completed")}
    for sub in history.of("log", "workflow.submitted"):
        wf = sub.workflow_id
        if wf in finished and finished[wf].get("status") == "succeeded":
            continue
        for step in _spec_steps(sub):
            events = by_step.get((wf, step), [])
            failed = [e for e in events if e.kind == "workflow.step_failed"]
            if failed:
                yield Anomaly(
                    "step_failed",
                    f"{wf}/{step} failed: {failed[0].get('error', '')}",
                    (sub, failed[0]),
                    wf,
                    step,
                )
            elif not any(e.kind == "workflow.step_completed" for e in events):
                last = tuple(events[-3:])
                what = f"last: {events[-1].kind}" if events else "never started"
                yield Anomaly(
                    "step_lost", f"{wf}/{step} never completed ({what})", (sub, *last), wf, step
                )


def _run_twice(history: History) -> Iterable[Anomaly]:
    for (wf, step), events in _log_by_step(history).items():
        done: Event | None = None
        for i, e in enumerate(events):
            if e.kind == "workflow.step_completed":
                if done is not None and e.get("id") != done.get("id"):
                    yield Anomaly(
                        "step_run_twice",
                        f"{wf}/{step} completed twice ({done.actor}, {e.actor})",
                        (done, e),
                        wf,
                        step,
                    )
                    break
                done = done or e
            elif e.kind == "workflow.step_started" and done is not None:
                later = [x for x in events[i + 1 :] if x.kind == "workflow.step_progress"]
                how = (
                    f"and ran {len(later)} more turn(s)"
                    if later
                    else f"(a re-claim from turn {e.get('resumed_from_turn', 0)}, no turn re-run)"
                )
                yield Anomaly(
                    "step_run_twice",
                    f"{wf}/{step} started again by {e.actor} (epoch {e.get('epoch')}) after it completed {how}",
                    (done, e, *later[:3]),
                    wf,
                    step,
                )
                break


def _checkpoints_lost(history: History) -> Iterable[Anomaly]:
    latest: dict[tuple[str, str], Event] = {}
    missing: dict[tuple[str, str], Event] = {}
    for e in history.of("store"):
        if e.kind == "checkpoint" and e.get("latest"):
            latest[(e.workflow_id, e.step_id)] = e
        elif e.kind == "checkpoint.missing":
            missing[(e.workflow_id, e.step_id)] = e
    for (wf, step), events in _log_by_step(history).items():
        acked: Event | None = None
        acked_epoch = 0
        claims: dict[str, int] = {}  # owner -> epoch of its latest announced claim
        completed = False
        flagged = False
        for e in events:
            if e.kind == "workflow.step_progress":
                if acked is None or e.get("turn", 0) > acked.get("turn", 0):
                    acked, acked_epoch = e, claims.get(e.actor, 0)
            elif e.kind in _STEP_DONE:
                completed = True
            elif e.kind == "workflow.step_started":
                epoch = int(e.get("epoch", 0))
                claims[e.actor] = max(claims.get(e.actor, 0), epoch)
                # Only a later claim succeeds the owner that reported the turn: a claim with an
                # older epoch announced late (its owner was frozen between claim and announcement,
                # then fenced off) resumed from what the store held before, which is no loss.
                if acked is None or completed or epoch <= acked_epoch:
                    continue
                if e.get("resumed_from_turn", 0) < acked.get("turn", 0):
                    yield Anomaly(
                        "checkpoint_lost",
                        f"{wf}/{step}: turn {acked.get('turn')} was reported done by {acked.actor}, "
                        f"{e.actor} resumed from turn {e.get('resumed_from_turn', 0)}",
                        (acked, e),
                        wf,
                        step,
                    )
                    flagged = True
                    break
        if acked is None or flagged:
            continue
        final = latest.get((wf, step))
        if final is not None and final.get("turn", 0) < acked.get("turn", 0):
            yield Anomaly(
                "checkpoint_lost",
                f"{wf}/{step}: turn {acked.get('turn')} reported done, the store's last version "
                f"holds turn {final.get('turn')}",
                (acked, final),
                wf,
                step,
            )
        elif (wf, step) in missing:
            yield Anomaly(
                "checkpoint_lost",
                f"{wf}/{step}: turn {acked.get('turn')} reported done, no checkpoint in the store",
                (acked, missing[(wf, step)]),
                wf,
                step,
            )


def _stale_writes(history: History) -> Iterable[Anomaly]:
    versions: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for e in history.of("store", "checkpoint"):
        versions[(e.workflow_id, e.step_id)].append(e)
    for (wf, step), events in versions.items():
        highest: Event | None = None
        for e in sorted(events, key=lambda x: int(x.get("version", 0))):
            if highest is not None and e.get("epoch", 0) < highest.get("epoch", 0):
                yield Anomaly(
                    "stale_epoch_write",
                    f"{wf}/{step}: version {e.get('version')} written with epoch {e.get('epoch')} after "
                    f"version {highest.get('version')} with epoch {highest.get('epoch')}",
                    (highest, e),
                    wf,
                    step,
                )
                break
            if highest is None or e.get("epoch", 0) >= highest.get("epoch", 0):
                highest = e


_REFRESH_SLACK_MS = 500
"""Clock rounding allowed between a token's ``expires_at`` and the call that replaced it."""


def _refreshed_tokens(history: History) -> tuple[set[str], set[str]]:
    """(tokens issued to replace an expired one, expired tokens that were replaced), by token id.

    A workflow's token after its first is a refresh when the one before it had expired by the
    time it was asked for: its ``expires_at`` (audit of the grant) had passed, or a call with it
    was refused ``401 token_expired`` before. Anything else is a spare token (``extra_auth``).
    """
    expired_at: dict[str, int] = {}
    for e in history.of("audit"):
        if (
            int(e.get("status", 0)) == 401
            and e.get("error") == "token_expired"
            and e.get("token_id")
        ):
            expired_at.setdefault(str(e.get("token_id")), e.at_ms)
    by_workflow: dict[str, list[Event]] = defaultdict(list)
    for e in history.of("audit", "POST /auth/token"):
        if int(e.get("status", 0)) == 200 and e.get("token_id") and e.workflow_id:
            by_workflow[e.workflow_id].append(e)
    refreshed: set[str] = set()
    replaced: set[str] = set()
    for grants in by_workflow.values():
        grants.sort(key=lambda g: g.at_ms)
        for before, after in itertools.pairwise(grants):
            old = str(before.get("token_id"))
            expiry_ms = int(float(before.get("expires_at") or 0) * 1000)
            refused_ms = expired_at.get(old)
            if (expiry_ms and after.at_ms + _REFRESH_SLACK_MS >= expiry_ms) or (
                refused_ms is not None and refused_ms <= after.at_ms
            ):
                refreshed.add(str(after.get("token_id")))
                replaced.add(old)
    return refreshed, replaced


def _effects_and_auth(history: History, figures: Figures) -> Iterable[Anomaly]:
    created: dict[str, list[Event]] = defaultdict(list)
    issued: list[Event] = []
    used: set[str] = set()
    refreshed, replaced = _refreshed_tokens(history)
    for e in history.of("audit"):
        status = int(e.get("status", 0))
        if e.kind == "POST /auth/token":
            figures.auth_calls += 1
            if status == 200:
                figures.tokens_issued += 1
                if str(e.get("token_id")) in refreshed:
                    figures.tokens_refreshed += 1
                else:
                    issued.append(e)
        elif e.get("token_id"):
            used.add(str(e.get("token_id")))
        if (
            status == 401
            and e.get("error") == "token_expired"
            and str(e.get("token_id")) in replaced
        ):
            # The workflow refreshed it: a retry, not a step that ran without a token.
            figures.tokens_expired += 1
        elif status == 401:
            figures.unauthorized += 1
            yield Anomaly(
                "unauthorized", f"{e.kind} answered 401 ({e.get('error')})", (e,), e.workflow_id
            )
        if e.get("effect_id") and status == 201 and not e.get("replay"):
            figures.effects += 1
            created[str(e.get("effect_key"))].append(e)
    for key, lines in created.items():
        if len(lines) > 1:
            figures.duplicated_effects += len(lines) - 1
            yield Anomaly(
                "duplicate_effect",
                f"effect {key} created {len(lines)} times",
                tuple(lines),
                lines[0].workflow_id,
            )
    unused = [e for e in issued if e.get("token_id") and str(e.get("token_id")) not in used]
    spare = len(issued) - len(history.workflows())
    for e in unused[: max(0, spare)]:
        yield Anomaly(
            "extra_auth",
            f"token {e.get('token_id')} issued and never used "
            f"({len(issued)} tokens for {len(history.workflows())} workflows, "
            f"{figures.tokens_refreshed} more refreshed after an expiry)",
            (e,),
        )


def _in_doubt(history: History, figures: Figures) -> Iterable[Anomaly]:
    records: dict[str, Event] = {}
    # A call checkpointed with its result (``effect.completed``) was in doubt only while in flight.
    completed = {
        str(e.get("idempotency_key") or e.get("key")) for e in history.of("trace", EFFECT_COMPLETED)
    }
    for source in ("log", "trace"):
        for e in history.of(source):
            if IN_DOUBT_EVENTS.get(e.kind) != source:
                continue
            key = str(
                e.get("idempotency_key")
                or e.get("key")
                or f"{e.workflow_id}/{e.step_id}/{e.get('turn', '')}"
            )
            if source == "trace" and (key in records or key in completed):
                continue  # the log already said it
            if (
                key not in records
                or str(records[key].get("resolution", "")) not in _SETTLED + _REPORTED
            ):
                records[key] = e
    for key, e in records.items():
        figures.in_doubt += 1
        resolution = str(e.get("resolution", ""))
        if resolution in _SETTLED:
            figures.in_doubt_reconciled += 1
        elif resolution in _REPORTED:
            figures.in_doubt_reported += 1
        else:
            yield Anomaly(
                "in_doubt_unresolved",
                f"effect {key} in doubt, never reconciled nor reported",
                (e,),
                e.workflow_id,
                e.step_id,
            )


def _variables(history: History) -> Iterable[Anomaly]:
    published: dict[str, dict[str, tuple[Any, Event]]] = defaultdict(dict)
    for e in history.of("log", "workflow.step_completed"):
        for name, value in dict(e.get("variables", {})).items():
            published[e.workflow_id][name] = (value, e)
    maps: dict[str, list[Event]] = defaultdict(list)
    for e in history.of("gossip", "map"):
        maps[e.workflow_id].append(e)
    for wf, replicas in maps.items():
        for replica in replicas:
            held = dict(replica.get("variables", {}))
            for name, (value, source) in published.get(wf, {}).items():
                if name not in held:
                    yield Anomaly(
                        "variable_lost",
                        f"{wf}: {replica.actor}'s map has no {name!r}",
                        (source, replica),
                        wf,
                    )
                elif value is not None and held[name] != value:
                    yield Anomaly(
                        "variable_diverged",
                        f"{wf}: {replica.actor} holds {name!r}={held[name]!r}, "
                        f"{source.step_id} published {value!r}",
                        (source, replica),
                        wf,
                    )
        first = replicas[0] if replicas else None
        for other in replicas[1:]:
            assert first is not None
            a, b = dict(first.get("variables", {})), dict(other.get("variables", {}))
            for name in sorted(set(a) & set(b)):
                if a[name] != b[name]:
                    yield Anomaly(
                        "variable_diverged",
                        f"{wf}: {name!r} is {a[name]!r} at {first.actor}, "
                        f"{b[name]!r} at {other.actor}",
                        (first, other),
                        wf,
                    )


def _false_facts(history: History) -> Iterable[Anomaly]:
    lies = {str(e.get("proposal_id")): e for e in history.of("fault", "fault.false_proposal")}
    for e in history.of("votes", "fact.decided"):
        lie = lies.get(str(e.get("proposal_id")))
        if lie is not None and e.get("outcome") == "accepted":
            yield Anomaly(
                "false_fact",
                f"{e.actor} accepted false fact {lie.get('name')}={lie.get('value')!r}",
                (lie, e),
                e.workflow_id,
            )


def _dead_agents(history: History) -> Iterable[Anomaly]:
    for e in history.of("process", "process.exit"):
        if not e.get("expected", False):
            yield Anomaly(
                "agent_died",
                f"{e.actor} exited with {e.get('code')} untold: {e.get('last_line', '')}",
                (e,),
            )


def _refused(history: History) -> Iterable[Anomaly]:
    agents = _agents(history)
    for e in history.of("dlq"):
        sender = str(e.get("sender", ""))
        if e.get("flood") or not sender or (agents is not None and sender not in agents):
            continue
        yield Anomaly(
            "agent_event_refused",
            f"{e.actor} dead-lettered {e.get('event_kind')} from {sender}: {e.get('reason')}",
            (e,),
            e.workflow_id,
            e.step_id,
        )


# -- figures -------------------------------------------------------------------------------------


def _recoveries(history: History) -> list[int]:
    progress = sorted((e for e in history.of("log", *_PROGRESSING)), key=lambda e: e.at_ms)
    out = []
    for fault in history.of("fault"):
        if not fault.kind.startswith("fault.") or fault.get("no_recovery"):
            continue
        since = max(fault.at_ms, int(fault.get("healed_ms", 0) or 0))
        affected = {tuple(s.split("/", 1)) for s in fault.get("steps", []) if "/" in s}
        for e in progress:
            if e.at_ms > since and (not affected or (e.workflow_id, e.step_id) in affected):
                out.append(e.at_ms - since)
                break
    return out


def _figures(history: History, figures: Figures) -> None:
    figures.workflows = len(history.workflows())
    figures.completed = sum(
        1 for e in history.of("log", "workflow.completed") if e.get("status") == "succeeded"
    )
    figures.faults = sum(1 for e in history.of("fault") if e.kind.startswith("fault."))
    figures.resumes = sum(
        1 for e in history.of("log", "workflow.step_started") if e.get("resumed_from_turn", 0) > 0
    )
    figures.dead_letters = len(history.of("dlq"))
    figures.recover_ms = _recoveries(history)


_CHECKS: Sequence[Callable[[History], Iterable[Anomaly]]] = (
    _lost_and_failed,
    _run_twice,
    _checkpoints_lost,
    _stale_writes,
    _variables,
    _false_facts,
    _dead_agents,
    _refused,
)


def check(history: History) -> CheckResult:
    """Every check over ``history``: the anomalies (with evidence) and the run's figures."""
    figures = Figures()
    anomalies: list[Anomaly] = []
    for run in _CHECKS:
        anomalies.extend(run(history))
    anomalies.extend(_effects_and_auth(history, figures))
    anomalies.extend(_in_doubt(history, figures))
    _figures(history, figures)
    return CheckResult(anomalies, figures)
