"""The console's ASGI app: a read-only JSON API (with its OpenAPI document), live events, pages, decisions.

Access (``_access``): a client that is not on this machine is refused unless ``allow_remote`` is
set, and then needs the bearer token; every write (a decision on an escalation) needs the token,
from anywhere. Every JSON body is passed through ``mesh.security.redact_value`` before it is
sent, on top of the masking of secret variables done where they are read: the console never sends
a secret to a browser.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from mesh.console._data import ConsoleData
from mesh.console._settings import ConsoleSettings
from mesh.errors import MeshError, StoreError, UsageError
from mesh.security import redact_text, redact_value
from mesh.store import RunSummary
from mesh.telemetry import KPI_THRESHOLDS, workflow_trace_id

__all__ = ["Decide", "DecisionRequest", "create_app"]

Decide = Callable[[str, str, "DecisionRequest", str], Awaitable[str]]
"""Publishes an operator's decision: (workflow, step, request, operator) -> the event id."""

_ID = r"^[A-Za-z0-9._:@-]{1,200}$"
_READ_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such workflow or step"},
    503: {"description": "Redis unavailable"},
}
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


# -- response models (the OpenAPI document) -------------------------------------------------


class StepRow(BaseModel):
    """One step of a run."""

    id: str
    role: str
    status: str
    owner: str
    epoch: int
    turns: int
    resumes: int
    last: str
    depends_on: list[str] = Field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    escalation_kind: str = ""
    """While paused: spinning | budget | invalid_decision | reasoner_unavailable."""
    escalation_nonce: str = ""
    """While paused: the nonce a decision on this pause must carry."""


class RunRow(BaseModel):
    """A run in the list."""

    workflow_id: str
    name: str
    status: str
    created_ms: int
    updated_ms: int
    finished_ms: int
    age_s: float
    duration_s: float
    steps_done: int
    steps_total: int
    resumes: int
    escalations: int
    trace_id: str
    submitted_by: str
    tokens: int = 0
    """Input plus output tokens of every reasoner call of the run."""
    cost_usd: float = 0.0
    """Estimated cost of those calls (the agents' price table)."""


class RunList(BaseModel):
    """Runs, newest first."""

    runs: list[RunRow]
    source: str
    """``index`` (Redis) or ``log`` (the console's tail, when Redis did not answer)."""
    tail_error: str


class TimelineRow(BaseModel):
    """One event on a run's timeline."""

    at_ms: int
    kind: str
    step: str
    agent: str
    turn: int
    epoch: int
    detail: str


class RunDetail(BaseModel):
    """A run: summary, DAG, timeline and trace link."""

    run: RunRow
    steps: list[StepRow]
    timeline: list[TimelineRow]
    trace_url: str
    source: str


class TurnRow(BaseModel):
    """One turn of a step, from its checkpoint."""

    turn: int
    action: str
    params: dict[str, Any]
    outcome: str
    summary: str
    injected: list[str]
    repairs: int
    retries: int
    duration_ms: float
    prompt_tokens: int
    prompt_budget: int
    evicted: int
    compressed: int
    ledger: list[str]
    input_tokens: int = 0
    """Reasoner input tokens of the turn (provider-reported, else counted)."""
    output_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0


class VariableRow(BaseModel):
    """A variable the step holds, with its gossip status across agents."""

    name: str
    value: Any = None
    secret: bool
    origin: str
    inherited: bool
    gossip: str
    """``accepted``, ``tentative`` or ``absent`` (no agent's map has it)."""


class StepDetail(BaseModel):
    """A step: turns, scratchpad, variables, escalation."""

    workflow_id: str
    step: StepRow
    status: str
    turn: int
    resumes: int
    escalation: str
    error: str
    state_bytes: int
    turns: list[TurnRow]
    variables: list[VariableRow]
    outputs: dict[str, Any]
    scratchpad: str


class AgentRow(BaseModel):
    """A live member of a role's consumer group."""

    agent: str
    role: str
    host: str
    partitions: list[int]
    last_seen_ms: int
    quarantined: bool


class GossipRow(BaseModel):
    """One variable of a workflow's gossip map, as each agent holds it."""

    name: str
    converged: bool
    status: dict[str, str]
    """Agent -> ``accepted`` | ``tentative`` | ``absent``."""


class ProposalRow(BaseModel):
    """A fact put to a vote."""

    id: str
    workflow_id: str
    fact_kind: str
    key: str
    proposer: str
    epoch: int
    at_ms: int
    outcome: str
    ballots: dict[str, dict[str, str]]


class MeshDetail(BaseModel):
    """Agents, gossip convergence, votes, quarantine."""

    agents: list[AgentRow]
    roles: list[str]
    agents_error: str
    workflow_id: str
    gossip: list[GossipRow]
    gossip_agents: list[str]
    proposals: list[ProposalRow]
    recorded_ballots: dict[str, dict[str, str]]
    quarantined: list[dict[str, Any]]


class KpiRow(BaseModel):
    """One KPI with its threshold."""

    key: str
    title: str
    unit: str
    value: float | None
    limit: float
    better: str
    violated: bool
    why: str
    series: list[list[float]]
    """``[[created_ms, value], ...]``, one point per run, oldest first."""


class KpiTable(BaseModel):
    """The dashboard."""

    kpis: list[KpiRow]
    runs: int


class EscalationRow(BaseModel):
    """A paused step waiting for a human."""

    workflow_id: str
    step_id: str
    reason: str
    kind: str
    nonce: str
    turn: int
    owner: str
    at_ms: int


class EscalationList(BaseModel):
    """Paused steps."""

    escalations: list[EscalationRow]


class DecisionRequest(BaseModel):
    """An operator's decision on one pause of a step."""

    nonce: str = Field(min_length=1, max_length=64)
    """The pause's nonce, as listed (binds the decision to that pause)."""
    decision: Literal["resume", "reject", "edit"]
    note: str = Field(default="", max_length=2000)
    variables: dict[str, str] = Field(default_factory=dict, max_length=50)
    """For ``edit``: variable name -> new value."""
    operator: str = Field(default="", max_length=200)


class DecisionResult(BaseModel):
    """What was published."""

    nonce: str
    """The pause it decides."""
    decision: str
    operator: str


class Health(BaseModel):
    """Whether the console can read its sources."""

    redis: bool
    tail_ready: bool
    tail_error: str


# -- helpers --------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def safe(value: Any) -> Any:
    """Plain JSON data with every secret shape masked (the last gate before the wire)."""
    return redact_value(_jsonable(value))


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _run_row(run: RunSummary, escalations: int, now_ms: int) -> RunRow:
    end = run.finished_ms or (run.updated_ms if run.finished else now_ms)
    return RunRow(
        workflow_id=run.workflow_id,
        name=run.name,
        status=run.status,
        created_ms=run.created_ms,
        updated_ms=run.updated_ms,
        finished_ms=run.finished_ms,
        age_s=round(max(0, now_ms - run.created_ms) / 1000, 3) if run.created_ms else 0.0,
        duration_s=round(max(0, end - run.created_ms) / 1000, 3) if run.created_ms else 0.0,
        steps_done=sum(1 for s in run.steps if s.status == "completed"),
        steps_total=len(run.steps),
        resumes=sum(s.resumes for s in run.steps),
        escalations=escalations,
        # Every process derives a workflow's trace id from its id, so it is known even when the
        # submitter exported no span (no traceparent in the log).
        trace_id=run.trace_id or format(workflow_trace_id(run.workflow_id), "032x"),
        submitted_by=run.submitted_by,
        tokens=sum(
            int(getattr(s, "input_tokens", 0)) + int(getattr(s, "output_tokens", 0))
            for s in run.steps
        ),
        cost_usd=round(sum(float(getattr(s, "cost_usd", 0.0)) for s in run.steps), 6),
    )


class _Access:
    """Pure ASGI middleware: who may read, who may write (module docstring)."""

    def __init__(self, app: ASGIApp, settings: ConsoleSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/healthz":
            # Liveness for an orchestrator's probes (which come from another address): says nothing else.
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
                }
            )
            await send({"type": "http.response.body", "body": b"ok"})
            return
        client = scope.get("client")
        local = False
        if client:
            try:
                local = ipaddress.ip_address(client[0]).is_loopback
            except ValueError:
                local = False
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())
        }
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        authorized = self.settings.token_matches(token) if token else False
        host = (
            headers.get("host", "").rsplit(":", 1)[0]
            if not headers.get("host", "").endswith("]")
            else headers["host"]
        )
        write = scope["method"] not in ("GET", "HEAD", "OPTIONS")
        problem = ""
        status = 403
        if token and not authorized:
            problem, status = "invalid bearer token", 401
        elif not local and not self.settings.allow_remote:
            problem = (
                "the console serves this machine only (set MESH_CONSOLE_ALLOW_REMOTE and a token)"
            )
        elif not local and not authorized:
            problem, status = "a bearer token is required from another machine", 401
        elif local and not self.settings.allow_remote and host and host not in _LOOPBACK_HOSTS:
            # DNS rebinding: a page of another site reaching 127.0.0.1 under its own name.
            problem = f"host {host!r} is not this machine's loopback name"
        elif write and not self.settings.bearer_token():
            problem = "write actions are disabled: no bearer token is configured (MESH_CONSOLE_TOKEN or _FILE)"
        elif write and not authorized:
            problem, status = "write actions need the bearer token", 401
        if problem:
            body = json.dumps({"detail": problem}).encode()
            extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        *extra,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-store"),
                    (
                        b"content-security-policy",
                        b"default-src 'self'; img-src 'self' data:; style-src 'self'; "
                        b"script-src 'self'; frame-ancestors 'none'",
                    ),
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


class _SafeJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(
            safe(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode()


# -- the app --------------------------------------------------------------------------------


def create_app(
    data: ConsoleData,
    settings: ConsoleSettings,
    *,
    decide: Decide | None = None,
    manage_data: bool = True,
) -> FastAPI:
    """The console app over ``data``; ``decide`` publishes operator decisions (None: writes answer 503)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_data:
            await data.start()
        try:
            yield
        finally:
            if manage_data:
                await data.aclose()

    app = FastAPI(
        title="agent-mesh console API",
        version="1",
        lifespan=lifespan,
        default_response_class=_SafeJSON,
        description="Read-only views of runs, steps, turns, agents and KPIs; decisions on escalations "
        "need the bearer token.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )

    async def escalation_count(workflow_id: str) -> int:
        return sum(1 for e in data.timeline(workflow_id) if e.kind == "escalated")

    @app.get("/api/health", response_model=Health, tags=["meta"])
    async def health() -> Health:
        """Whether Redis answers and the Kafka tail caught up."""
        try:
            ok = await data.redis.ping()
        except Exception:
            ok = False
        return Health(redis=ok, tail_ready=data.ready.is_set(), tail_error=data.tail_error)

    @app.get("/api/runs", response_model=RunList, tags=["runs"])
    async def list_runs(
        status: Literal["pending", "running", "paused", "succeeded", "failed"] | None = None,
        q: str | None = Query(
            default=None, max_length=200, description="substring of the name or id"
        ),
        limit: int = Query(default=50, ge=1, le=500),
    ) -> RunList:
        """Recent runs, newest first, filtered by status and searched by name or id."""
        runs, source = await data.list_runs(status=status, q=q or None, limit=limit)
        now = int(time.time() * 1000)
        rows = [_run_row(r, await escalation_count(r.workflow_id), now) for r in runs]
        return RunList(runs=rows, source=source, tail_error=data.tail_error)

    async def _run_or_404(workflow_id: str) -> tuple[RunSummary, str]:
        try:
            run, source = await data.run(workflow_id)
        except StoreError as exc:
            raise HTTPException(503, redact_text(str(exc))) from None
        if run is None:
            raise HTTPException(404, "no such workflow in the run index or the log")
        return run, source

    def _steps(run: RunSummary) -> list[StepRow]:
        view = data.view(run.workflow_id)
        deps = (
            {s.id: list(s.depends_on) for s in view.spec.steps}
            if view is not None and view.spec
            else {}
        )
        rows = []
        for s in run.steps:
            # The tail may know of a pause (and its nonce) before the index does.
            pause = view.escalated.get(s.id) if view is not None else None
            status = (
                "paused" if pause is not None and s.status in ("running", "paused") else s.status
            )
            rows.append(
                StepRow(
                    id=s.id,
                    role=s.role,
                    status=status,
                    owner=s.owner,
                    epoch=s.epoch,
                    turns=s.turns,
                    resumes=s.resumes,
                    last=s.last,
                    depends_on=deps.get(s.id, []),
                    input_tokens=int(getattr(s, "input_tokens", 0)),
                    output_tokens=int(getattr(s, "output_tokens", 0)),
                    cost_usd=float(getattr(s, "cost_usd", 0.0)),
                    escalation_kind=str(
                        getattr(pause, "kind", "") or getattr(s, "escalation_kind", "")
                    )
                    if status == "paused"
                    else "",
                    escalation_nonce=str(
                        getattr(pause, "nonce", "") or getattr(s, "escalation_nonce", "")
                    )
                    if status == "paused"
                    else "",
                )
            )
        return rows

    @app.get(
        "/api/runs/{workflow_id}", response_model=RunDetail, tags=["runs"], responses=_READ_ERRORS
    )
    async def get_run(workflow_id: str = Path(pattern=_ID)) -> RunDetail:
        """A run: its DAG (steps with status, owner, epoch, turns, resumes), timeline and trace link."""
        run, source = await _run_or_404(workflow_id)
        timeline = [
            TimelineRow(
                at_ms=e.at_ms,
                kind=e.kind,
                step=e.step,
                agent=e.agent,
                turn=e.turn,
                epoch=e.epoch,
                detail=e.detail,
            )
            for e in data.timeline(workflow_id)
        ]
        base = settings.jaeger_ui_url.rstrip("/")
        row = _run_row(run, await escalation_count(workflow_id), int(time.time() * 1000))
        return RunDetail(
            run=row,
            steps=_steps(run),
            timeline=timeline,
            trace_url=f"{base}/trace/{row.trace_id}" if base else "",
            source=source,
        )

    @app.get(
        "/api/runs/{workflow_id}/steps/{step_id}",
        response_model=StepDetail,
        tags=["runs"],
        responses=_READ_ERRORS,
    )
    async def get_step(
        workflow_id: str = Path(pattern=_ID), step_id: str = Path(pattern=_ID)
    ) -> StepDetail:
        """A step: every turn (decision, injected and corrected parameters, repairs, retries, outcome, prompt
        tokens against the budget, evictions), variables with gossip status, the scratchpad."""
        run, _ = await _run_or_404(workflow_id)
        row = next((s for s in _steps(run) if s.id == step_id), None)
        if row is None:
            raise HTTPException(404, "no such step in this workflow")
        try:
            ckpt, size = await data.checkpoint(workflow_id, step_id)
            maps = await data.gossip_maps(workflow_id)
        except (StoreError, ValueError, TypeError) as exc:
            raise HTTPException(503, redact_text(str(exc))[:300]) from None
        ckpt = ckpt or {}
        turns = []
        for h in ckpt.get("history") or ():
            if not isinstance(h, Mapping):
                continue
            turns.append(
                TurnRow(
                    turn=int(h.get("turn", 0)),
                    action=str(h.get("action", "")),
                    params=dict(h.get("params") or {}),
                    outcome=str(h.get("outcome", "")),
                    summary=str(h.get("summary", "")),
                    injected=[str(n) for n in h.get("injected") or ()],
                    repairs=int(h.get("repairs", 0)),
                    retries=int(h.get("retries", 0)),
                    duration_ms=float(h.get("duration_ms", 0.0)),
                    prompt_tokens=int(h.get("prompt_tokens", 0)),
                    prompt_budget=int(h.get("prompt_budget", 0)),
                    evicted=int(h.get("evicted", 0)),
                    compressed=int(h.get("compressed", 0)),
                    ledger=[str(x) for x in h.get("ledger") or ()],
                    input_tokens=int(h.get("input_tokens", 0)),
                    output_tokens=int(h.get("output_tokens", 0)),
                    cost_usd=float(h.get("cost_usd", 0.0)),
                    calls=int(h.get("calls", 0)),
                )
            )
        discovered = set(ckpt.get("discovered") or ())
        variables = []
        for name, v in (ckpt.get("variables") or {}).items():
            statuses = {m[name]["status"] for m in maps.values() if name in m}
            gossip = (
                "absent"
                if not statuses
                else "accepted"
                if statuses == {"accepted"}
                else "tentative"
            )
            variables.append(
                VariableRow(
                    name=name,
                    value=v.get("value"),
                    secret=bool(v.get("secret")),
                    origin=str(v.get("origin", "")),
                    inherited=name not in discovered,
                    gossip=gossip,
                )
            )
        return StepDetail(
            workflow_id=workflow_id,
            step=row,
            status="paused" if row.status == "paused" else str(ckpt.get("status", row.status)),
            turn=int(ckpt.get("turn", 0)),
            resumes=int(ckpt.get("resumes", 0)),
            escalation=str(ckpt.get("escalation", "")),
            error=str(ckpt.get("error", "")),
            state_bytes=size,
            turns=turns,
            variables=variables,
            outputs=dict(ckpt.get("outputs") or {}),
            scratchpad=data.scratchpad(workflow_id, step_id),
        )

    @app.get("/api/mesh", response_model=MeshDetail, tags=["mesh"])
    async def get_mesh(
        workflow_id: str | None = Query(
            default=None, pattern=_ID, description="whose gossip map and votes to show"
        ),
    ) -> MeshDetail:
        """Live agents per role with their partitions and last message; gossip convergence; votes; quarantine."""
        from mesh.bus.groups import describe_group_members

        roles = sorted(
            {s.role for r in data.runs.values() if r.view.spec for s in r.view.spec.steps}
        )
        agents: list[AgentRow] = []
        error = ""
        if roles:
            try:
                groups = await describe_group_members(
                    data.settings.kafka_bootstrap,
                    [f"{data.topics.prefix}.role.{r}" for r in roles],
                    client_id="console-admin",
                    timeout_ms=5000,
                )
                for role in roles:
                    for m in groups.get(f"{data.topics.prefix}.role.{role}", []):
                        agents.append(
                            AgentRow(
                                agent=m.client_id,
                                role=role,
                                host=m.host,
                                partitions=sorted(
                                    p for t, p in m.partitions if t == data.topics.workflow_events
                                ),
                                last_seen_ms=data.last_seen.get(m.client_id, 0),
                                quarantined=m.client_id in data.quarantined,
                            )
                        )
            except MeshError as exc:
                error = redact_text(str(exc))[:300]
        wf = workflow_id or next((w for w in reversed(data.runs) if data.runs[w].view.spec), "")
        gossip: list[GossipRow] = []
        maps: dict[str, dict[str, dict[str, Any]]] = {}
        recorded: dict[str, dict[str, str]] = {}
        if wf:
            try:
                maps = await data.gossip_maps(wf)
                recorded = await data.votes(wf)
            except (StoreError, OSError, Exception) as exc:  # a read error is shown, never a 500
                error = error or redact_text(f"{type(exc).__name__}: {exc}")[:300]
        names = sorted({n for m in maps.values() for n in m})
        for name in names:
            status = {a: (m[name]["status"] if name in m else "absent") for a, m in maps.items()}
            hashes = {m[name]["hash"] if name in m else "" for m in maps.values()}
            gossip.append(
                GossipRow(
                    name=name,
                    converged=len(hashes) == 1
                    and "" not in hashes
                    and len(set(status.values())) == 1,
                    status=status,
                )
            )
        proposals = [
            ProposalRow(**p)
            for p in reversed(data.proposals.values())
            if not wf or p["workflow_id"] == wf
        ][:200]
        return MeshDetail(
            agents=agents,
            roles=roles,
            agents_error=error,
            workflow_id=wf,
            gossip=gossip,
            gossip_agents=sorted(maps),
            proposals=proposals,
            recorded_ballots=recorded,
            quarantined=list(data.quarantined.values()),
        )

    @app.get("/api/kpis", response_model=KpiTable, tags=["kpis"])
    async def get_kpis(limit: int = Query(default=100, ge=1, le=500)) -> KpiTable:
        """The KPI table with thresholds (each flagged when violated) and one point per run over time."""
        runs, _ = await data.list_runs(status=None, q=None, limit=limit)
        runs = sorted(runs, key=lambda r: r.created_ms)
        ckpts = await data.checkpoints_of(runs)
        per_run: dict[str, dict[str, float | None]] = {}
        totals: dict[str, list[float]] = {k.key: [] for k in KPI_THRESHOLDS}
        finished = succeeded = 0
        resumed_steps = recovered = 0
        for run in runs:
            util: list[float] = []
            bad = turns = 0
            lat: list[float] = []
            cp: list[float] = []
            sizes: list[float] = []
            for step in run.steps:
                found = ckpts.get((run.workflow_id, step.id))
                if step.resumes:
                    resumed_steps += 1
                    recovered += step.status == "completed"
                if found is None:
                    continue
                ckpt, size = found
                sizes.append(float(size))
                for h in ckpt.get("history") or ():
                    turns += 1
                    if int(h.get("prompt_budget", 0)) > 0:
                        util.append(int(h.get("prompt_tokens", 0)) / int(h["prompt_budget"]))
                    if (
                        int(h.get("repairs", 0)) > 0
                        or h.get("outcome") == "invalid"
                        or any("corrected" in str(n) for n in h.get("injected") or ())
                    ):
                        bad += 1
                    lat.append(float(h.get("duration_ms", 0.0)))
                    if float(h.get("checkpoint_ms", 0.0)) > 0:
                        cp.append(float(h["checkpoint_ms"]))
            spinning = await escalation_count(run.workflow_id) or sum(
                1 for s in run.steps if s.status == "paused"
            )
            if run.finished:
                finished += 1
                succeeded += run.status == "succeeded"
            totals["context_utilization"] += util
            totals["turn_latency_p95"] += lat
            totals["checkpoint_write_p95"] += cp
            totals["state_size_max"] += sizes
            totals["spinning_count"].append(float(spinning))
            totals["invalid_decision_rate"] += [float(bad), float(turns)]
            per_run[run.workflow_id] = {
                "workflow_success_rate": (1.0 if run.status == "succeeded" else 0.0)
                if run.finished
                else None,
                "context_utilization": _percentile(util, 0.95),
                "invalid_decision_rate": bad / turns if turns else None,
                "turn_latency_p95": _percentile(lat, 0.95),
                "turn_latency_p99": _percentile(lat, 0.99),
                "checkpoint_write_p95": _percentile(cp, 0.95),
                "state_size_max": max(sizes) if sizes else None,
                "spinning_count": float(spinning),
                "recovery_rate": (
                    sum(1 for s in run.steps if s.resumes and s.status == "completed")
                    / sum(1 for s in run.steps if s.resumes)
                )
                if any(s.resumes for s in run.steps)
                else None,
            }
        pairs = totals["invalid_decision_rate"]
        bad_all, turns_all = sum(pairs[0::2]), sum(pairs[1::2])
        values: dict[str, float | None] = {
            "workflow_success_rate": succeeded / finished if finished else None,
            "context_utilization": _percentile(totals["context_utilization"], 0.95),
            "invalid_decision_rate": bad_all / turns_all if turns_all else None,
            "turn_latency_p95": _percentile(totals["turn_latency_p95"], 0.95),
            "turn_latency_p99": _percentile(totals["turn_latency_p95"], 0.99),
            "checkpoint_write_p95": _percentile(totals["checkpoint_write_p95"], 0.95),
            "state_size_max": max(totals["state_size_max"]) if totals["state_size_max"] else None,
            "spinning_count": sum(totals["spinning_count"]) if runs else None,
            "recovery_rate": recovered / resumed_steps if resumed_steps else None,
        }
        rows = []
        for k in KPI_THRESHOLDS:
            series = [
                [float(r.created_ms), float(v)]
                for r in runs
                if (v := per_run.get(r.workflow_id, {}).get(k.key)) is not None
            ]
            value = values.get(k.key)
            rows.append(
                KpiRow(
                    key=k.key,
                    title=k.title,
                    unit=k.unit,
                    value=value,
                    limit=k.limit,
                    better=k.better,
                    violated=k.violated(value),
                    why=k.why,
                    series=series,
                )
            )
        return KpiTable(kpis=rows, runs=len(runs))

    @app.get("/api/escalations", response_model=EscalationList, tags=["escalations"])
    async def list_escalations() -> EscalationList:
        """Steps paused for a human, with the reason, its kind and the nonce of the pause."""
        rows: list[EscalationRow] = []
        seen: set[tuple[str, str]] = set()
        for wf, run in reversed(data.runs.items()):
            for step, esc in run.view.escalated.items():
                at = max(
                    (e.at_ms for e in run.timeline if e.step == step and e.kind == "escalated"),
                    default=0,
                )
                rows.append(
                    EscalationRow(
                        workflow_id=wf,
                        step_id=step,
                        reason=esc.reason,
                        kind=str(getattr(esc, "kind", "") or esc.reason.split(":")[0]),
                        nonce=str(getattr(esc, "nonce", "") or ""),
                        turn=esc.turn,
                        owner=esc.owner,
                        at_ms=at,
                    )
                )
                seen.add((wf, step))
        try:
            paused, _ = await data.list_runs(status="paused", q=None, limit=200)
        except StoreError:
            paused = []
        for summary in paused:
            for s in summary.steps:
                if s.status == "paused" and (summary.workflow_id, s.id) not in seen:
                    rows.append(
                        EscalationRow(
                            workflow_id=summary.workflow_id,
                            step_id=s.id,
                            reason=s.last,
                            kind=str(getattr(s, "escalation_kind", "") or s.last.split(":")[0]),
                            nonce=str(getattr(s, "escalation_nonce", "")),
                            turn=s.turns,
                            owner=s.owner,
                            at_ms=summary.updated_ms,
                        )
                    )
        return EscalationList(escalations=rows)

    @app.post(
        "/api/runs/{workflow_id}/steps/{step_id}/decision",
        response_model=DecisionResult,
        tags=["escalations"],
        responses={
            401: {"description": "no or wrong bearer token"},
            409: {"description": "the step is not paused, or paused again since (stale nonce)"},
            422: {"description": "a malformed decision"},
            503: {"description": "Kafka or Redis unavailable, or no signing key"},
        },
    )
    async def post_decision(
        request: Request,
        body: Annotated[DecisionRequest, Body()],
        workflow_id: Annotated[str, Path(pattern=_ID)],
        step_id: Annotated[str, Path(pattern=_ID)],
    ) -> DecisionResult:
        """Resume (with a note), reject (the step fails) or edit variables and resume a paused step.

        Needs the bearer token. The decision is a signed event on the workflow log, bound to the
        pause by its nonce and attributed to the operator.
        """
        if decide is None:
            raise HTTPException(
                503, "this console cannot publish decisions (no signing key configured)"
            )
        view = data.view(workflow_id)
        if view is not None and view.spec is not None:
            pause = view.escalated.get(step_id)
            if pause is None:
                raise HTTPException(
                    409, "the step is not paused (it may have been decided already)"
                )
            current = str(getattr(pause, "nonce", "") or "")
            if current and current != body.nonce:
                raise HTTPException(
                    409, "stale decision: the step paused again since (reload the page)"
                )
        operator = body.operator or settings.operator or "console-operator"
        try:
            event_id = await decide(workflow_id, step_id, body, operator)
        except UsageError as exc:
            raise HTTPException(422, redact_text(str(exc))[:300]) from None
        except MeshError as exc:
            raise HTTPException(503, redact_text(str(exc))[:300]) from None
        del event_id
        return DecisionResult(nonce=body.nonce, decision=body.decision, operator=operator)

    @app.get(
        "/api/stream",
        tags=["meta"],
        response_class=Response,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}
        },
    )
    async def stream(request: Request) -> EventSourceResponse:
        """Server-sent events: ``changed`` (data: the tail position) whenever the log moved."""

        async def events() -> AsyncIterator[dict[str, str]]:
            pos = data.tail_position
            yield {"event": "changed", "data": str(pos)}
            while not await request.is_disconnected():
                new = await data.wait_changed(pos, 15.0)
                if new != pos:
                    pos = new
                    yield {"event": "changed", "data": str(pos)}
                await asyncio.sleep(0.25)  # at most four refreshes a second

        return EventSourceResponse(events(), ping=10)

    static = resources.files("mesh.console") / "static"
    index_html = (static / "index.html").read_text(encoding="utf-8")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    def page() -> HTMLResponse:
        return HTMLResponse(index_html)

    for route in (
        "/",
        "/runs",
        "/runs/{workflow_id}",
        "/runs/{workflow_id}/steps/{step_id}",
        "/mesh",
        "/dashboard",
        "/escalations",
    ):
        app.add_api_route(
            route, page, methods=["GET"], include_in_schema=False, response_class=HTMLResponse
        )

    app.add_middleware(_Access, settings=settings)
    return app
