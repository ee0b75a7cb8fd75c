"""The roles of the patient-reconciliation workflow: identity, fetch, validate, report.

Each role is a set of actions (schema + deterministic executor) and a rule policy used when no
LLM is configured. The reasoner only picks *what* to do; the executors do the *how*, with the
auth token, page numbers and patient ids injected from state, and an idempotency key on every
side effect so a replayed turn creates nothing twice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import httpx

from mesh.roles import (
    Action,
    ActionContext,
    ActionError,
    ActionOutcome,
    ActionSpec,
    ContextVariable,
    CredentialExpired,
    RetryableActionError,
    Role,
    from_memory,
    from_param,
    from_var,
    roles_by_name,
)

__all__ = ["ROLES", "Role", "allergy_conflicts", "check_record"]

_ALLERGY_CLASSES: Mapping[str, frozenset[str]] = {
    "penicillin": frozenset({"penicillin"}),
    "sulfa": frozenset({"sulfonamide"}),
    "codeine": frozenset({"opioid"}),
    "nsaids": frozenset({"nsaid"}),
}


# -- HTTP helpers ------------------------------------------------------------------------------


def _client(ctx: ActionContext) -> httpx.AsyncClient:
    return ctx.resource("http")  # type: ignore[no-any-return]


def _url(ctx: ActionContext, path: str) -> str:
    base = str(ctx.variable("ehr_base_url") or "").rstrip("/")
    if not base:
        raise ActionError("context variable ehr_base_url is not set")
    return base + path


async def _call(ctx: ActionContext, method: str, path: str, *, token: str | None = None,
                json: Any = None, params: Mapping[str, Any] | None = None, idempotent: bool = False) -> Any:
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if idempotent:
        headers["Idempotency-Key"] = ctx.idempotency_key
    try:
        resp = await _client(ctx).request(method, _url(ctx, path), headers=headers, json=json, params=params)
    except (httpx.TimeoutException, httpx.TransportError) as exc:
        raise RetryableActionError(f"{method} {path}: {type(exc).__name__}") from None
    if resp.status_code >= 500 or resp.status_code == 429:
        raise RetryableActionError(f"{method} {path}: HTTP {resp.status_code}")
    if resp.status_code >= 400:
        try:
            code = resp.json().get("error", "")
        except ValueError:
            code = ""
        if resp.status_code == 401 and code == "token_expired":
            raise CredentialExpired(f"{method} {path}: HTTP 401 token_expired")
        raise ActionError(f"{method} {path}: HTTP {resp.status_code} {code}".strip())
    return resp.json()


# -- identity ----------------------------------------------------------------------------------


def _client_secret(params: Mapping[str, Any]) -> str:
    return os.environ.get(str(params.get("client_secret_env") or "MOCK_EHR_CLIENT_SECRET"), "mock-ehr-dev-secret")


async def _authenticate(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
    # The token endpoint issues a new token per call (not idempotent); the key only lets
    # _find_token ask afterwards whether this call took effect.
    body = await _call(ctx, "POST", params["token_endpoint"], idempotent=True,
                       json={"client_id": params["client_id"], "client_secret": _client_secret(params)})
    return _token_outcome(params, body)


async def _find_token(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome | None:
    """The token an earlier ``authenticate`` with this idempotency key got, if it got one."""
    body = await _call(ctx, "POST", f"{params['token_endpoint'].rstrip('/')}/lookup",
                       json={"client_id": params["client_id"], "client_secret": _client_secret(params),
                             "idempotency_key": ctx.idempotency_key})
    return _token_outcome(params, body) if body.get("found") else None


def _token_outcome(params: Mapping[str, Any], body: Mapping[str, Any]) -> ActionOutcome:
    expires_in = float(body.get("expires_in", 300))
    expires_at_ms = int((time.time() + expires_in) * 1000)
    return ActionOutcome(
        summary=f"authenticated as {params['client_id']}; token valid for {int(expires_in)} s",
        variables=(
            ContextVariable("auth_token", body["access_token"], secret=True, priority=0, expires_at_ms=expires_at_ms),
            ContextVariable("auth_expires_at_ms", expires_at_ms, priority=1),
        ),
        outputs={"authenticated": True},
        done=True,
    )


_TOKEN_SPEC = ActionSpec(
    name="authenticate",
    description="Get an access token from the EHR with the client credentials.",
    params_schema={
        "type": "object",
        "properties": {
            "client_id": {"type": "string"},
            "token_endpoint": {"type": "string"},
            "client_secret_env": {"type": "string"},
        },
        "required": ["client_id", "token_endpoint"],
    },
)

REFRESH_TOKEN = Action(
    _TOKEN_SPEC,
    _authenticate,
    inject={"client_id": "var:ehr_client_id", "token_endpoint": "var:ehr_token_endpoint"},
    at_most_once=True,
    lookup=_find_token,
)
"""How a step that uses ``auth_token`` gets a fresh one when it expired: the identity call again,
with the workflow's client id and token endpoint (an at-most-once call, looked up after a crash)."""

IDENTITY = Role(
    "identity",
    {
        "authenticate": Action(
            ActionSpec(
                name="authenticate",
                description="Get an access token from the EHR with the client credentials.",
                params_schema={
                    "type": "object",
                    "properties": {
                        "client_id": {"type": "string"},
                        "token_endpoint": {"type": "string"},
                        "client_secret_env": {"type": "string"},
                    },
                    "required": ["client_id", "token_endpoint"],
                },
            ),
            _authenticate,
            inject={"client_id": from_param("client_id"), "token_endpoint": from_param("token_endpoint"),
                    "client_secret_env": from_param("client_secret_env")},
            at_most_once=True,
            lookup=_find_token,
        ),
    },
)

# -- fetch -------------------------------------------------------------------------------------


async def _fetch_page(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
    token = params["token"]
    page, size = int(params["page"]), int(params["page_size"])
    listing = await _call(ctx, "GET", "/patients", token=token, params={"page": page, "page_size": size})
    limit = int(ctx.params.get("patients", 10**9))
    records = dict(ctx.outputs.get("records", {}))
    for pid in listing["items"]:
        if len(records) >= limit:
            break
        records[pid] = await _call(ctx, "GET", f"/patients/{pid}", token=token)
    next_page = listing.get("next_page")
    done = next_page is None or len(records) >= limit
    return ActionOutcome(
        summary=f"page {page}: {len(listing['items'])} patients ({len(records)} fetched so far)",
        outputs={"records": records, "patients": sorted(records)},
        memory={"next_page": next_page if not done else "none", "fetched": len(records)},
        done=done,
    )


FETCH = Role(
    "fetch",
    {
        "fetch_page": Action(
            ActionSpec(
                name="fetch_page",
                description="Fetch one page of patient ids and every record on it.",
                params_schema={
                    "type": "object",
                    "properties": {
                        "page": {"type": "integer", "minimum": 1},
                        "page_size": {"type": "integer", "minimum": 1, "maximum": 100},
                        "token": {"type": "string"},
                    },
                    "required": ["page", "page_size", "token"],
                },
            ),
            _fetch_page,
            inject={"token": from_var("auth_token"), "page": from_memory("next_page", 1), "page_size": from_param("page_size")},
        ),
    },
    refresh={"auth_token": REFRESH_TOKEN},
)

# -- validate ----------------------------------------------------------------------------------


def allergy_conflicts(record: Mapping[str, Any], formulary: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Medications whose drug class the patient is allergic to."""
    classes: set[str] = set()
    for allergy in record.get("allergies", []):
        classes |= _ALLERGY_CLASSES.get(str(allergy.get("substance", "")).lower(), frozenset())
    return [
        m["code"] for m in record.get("medications", [])
        if m.get("code") in formulary and formulary[m["code"]].get("drug_class") in classes
    ]


def check_record(record: Mapping[str, Any], formulary: Mapping[str, Mapping[str, str]],
                 all_records: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The findings of one record: schema and consistency checks."""
    findings = []
    if not record.get("dob"):
        findings.append("missing_dob")
    mrn = record.get("mrn")
    if mrn and any(r.get("mrn") == mrn and r.get("id") != record.get("id") for r in all_records.values()):
        findings.append("duplicate_mrn")
    if any(m.get("code") not in formulary for m in record.get("medications", [])):
        findings.append("unknown_medication_code")
    if allergy_conflicts(record, formulary):
        findings.append("allergy_conflict")
    return findings


async def _check_patient(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
    token = params["token"]
    records: Mapping[str, Any] = ctx.inputs.get("fetch", {}).get("records", {})
    order = sorted(records)
    index = int(params["index"])
    if index >= len(order):
        return ActionOutcome(summary="all patients checked", done=True)
    pid = order[index]
    formulary = ctx.memory.get("formulary") or (await _call(ctx, "GET", "/formulary", token=token))["items"]
    findings = check_record(records[pid], formulary, records)
    await _call(ctx, "POST", "/reconciliations", token=token, idempotent=True,
                json={"workflow_id": ctx.workflow_id, "patient_id": pid, "findings": findings})
    all_findings = {**ctx.outputs.get("findings", {}), pid: findings}
    done = index + 1 >= len(order)
    return ActionOutcome(
        summary=f"{pid}: {', '.join(findings) or 'no findings'}; reconciliation filed",
        outputs={"findings": all_findings},
        memory={"next_index": index + 1, "formulary": formulary},
        done=done,
    )


VALIDATE = Role(
    "validate",
    {
        "check_patient": Action(
            ActionSpec(
                name="check_patient",
                description="Check the next patient's record and file its reconciliation.",
                params_schema={
                    "type": "object",
                    "properties": {"index": {"type": "integer", "minimum": 0}, "token": {"type": "string"}},
                    "required": ["index", "token"],
                },
            ),
            _check_patient,
            inject={"token": from_var("auth_token"), "index": from_memory("next_index", 0)},
            side_effect=True,
        ),
    },
    refresh={"auth_token": REFRESH_TOKEN},
)

# -- report ------------------------------------------------------------------------------------


async def _write_report(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
    findings: Mapping[str, list[str]] = ctx.inputs.get("validate", {}).get("findings", {})
    by_kind: dict[str, list[str]] = {}
    for pid, items in sorted(findings.items()):
        for kind in items:
            by_kind.setdefault(kind, []).append(pid)
    lines = [f"# Reconciliation report for {ctx.workflow_id}", "", f"Patients checked: {len(findings)}", ""]
    for kind, pids in sorted(by_kind.items()):
        lines.append(f"- {kind}: {len(pids)} ({', '.join(pids)})")
    attention = sorted(pid for pid, items in findings.items() if items)
    lines += ["", f"Needs a clinician: {', '.join(attention) or 'nobody'}"]
    body = "\n".join(lines)
    await _call(ctx, "POST", "/reports", token=params["token"], idempotent=True,
                json={"workflow_id": ctx.workflow_id, "body": body})
    return ActionOutcome(
        summary=f"report filed: {len(findings)} patients, {len(attention)} need attention",
        outputs={"report": body, "attention": attention},
        done=True,
    )


REPORT = Role(
    "report",
    {
        "write_report": Action(
            ActionSpec(
                name="write_report",
                description="Write the reconciliation report and file it with the EHR.",
                params_schema={
                    "type": "object",
                    "properties": {"token": {"type": "string"}, "format": {"type": "string"}},
                    "required": ["token"],
                },
            ),
            _write_report,
            inject={"token": from_var("auth_token")},
            side_effect=True,
        ),
    },
    refresh={"auth_token": REFRESH_TOKEN},
)

ROLES: Mapping[str, Role] = roles_by_name(IDENTITY, FETCH, VALIDATE, REPORT)
"""Every role of the reconciliation workflow, by name."""
