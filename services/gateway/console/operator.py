"""The operator floor: charts of the queues, triage with one-click routing, teams, any job's
timeline and routing decision, the audit log and its verification, tenant vault key rotation.

Each action runs the REST API's own operator route function in-process (manual routing stored as
a training example by the router, ETag-checked team updates, audited key rotation).
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import Request, Response

from services.gateway.api import admin_audit, admin_jobs, admin_teams, admin_vault_keys
from services.gateway.api.deps import RouterDep, SessionDep, VaultDep
from services.gateway.api.etags import etag
from services.gateway.api.job_events import queue_moved_job_event
from services.gateway.api.schemas import JobRoute, TeamUpdate
from services.gateway.console import views
from services.gateway.console.charts import Row, bar_chart
from services.gateway.console.web import (
    BadForm,
    FormDep,
    OperatorUser,
    console_router,
    render,
    see_other,
)
from services.gateway.db.repository import TenantRepository
from services.gateway.domain.views import job_id_or_404, operator_view
from shared.db import utcnow
from shared.errors import TaskrouteError
from shared.vocabulary import Domain

logger = logging.getLogger("taskroute.gateway.console")

router = console_router()

# The floor reads the waiting jobs of at most this many teams (one router call each), busiest
# first: enough for a floor a person can take in, bounded so the page stays quick.
FLOOR_TEAMS = 20
PAGE = 100
NOTICES = {
    "routed": "The job was routed; the router keeps the choice as a training example.",
    "team": "The team was updated.",
}


def _active_teams(page: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(page.get("data", []), key=lambda t: str(t.get("name", "")).lower())


@router.get("/floor")
async def floor(request: Request, user: OperatorUser, router_: RouterDep) -> Response:
    """Queue depth per team and domain, wait times and SLA risk, as charts."""
    stats = await admin_jobs.get_stats(_operator=user.principal, router_=router_)
    now = utcnow()
    queues = [q for q in stats.get("queues", []) if isinstance(q, dict)]
    queues.sort(key=lambda q: -(views.number(q.get("queued")) + views.number(q.get("in_progress"))))
    depth_rows = [
        Row(
            label=str(q.get("team_name") or q.get("team_id")),
            values=[views.number(q.get("queued")), views.number(q.get("in_progress"))],
            mark=float(views.number(q.get("capacity"))) if "capacity" in q else None,
        )
        for q in queues
        if views.number(q.get("queued")) or views.number(q.get("in_progress")) or q.get("capacity")
    ]
    # Waiting jobs of the busiest teams: per-domain depth, wait times and deadlines.
    waiting: list[views.JobRow] = []
    wait_by_team: list[Row] = []
    for q in queues[:FLOOR_TEAMS]:
        if not views.number(q.get("queued")) or not q.get("team_id"):
            continue
        try:
            page = await router_.team_jobs(
                str(q["team_id"]), status="queued", limit=PAGE, cursor=None
            )
        except TaskrouteError as exc:
            logger.warning(
                "floor: team queue unavailable", extra={"error_type": type(exc).__name__}
            )
            continue
        rows = [views.queue_row(job, member_id=None, now=now) for job in page.get("data", [])]
        waiting.extend(rows)
        if rows:
            ages = [r.age_seconds / 60 for r in rows]
            wait_by_team.append(
                Row(
                    label=str(q.get("team_name") or q.get("team_id")),
                    values=[sum(ages) / len(ages), max(ages) - sum(ages) / len(ages)],
                )
            )
    triage = await router_.triage(limit=PAGE, cursor=None)
    triage_rows = [views.queue_row(job, member_id=None, now=now) for job in triage.get("data", [])]
    # Per-domain depth: the statistics' own count when it has one, else the jobs read above.
    queued_by_domain = (
        views.counts(stats.get("queued_by_domain")) if "queued_by_domain" in stats else None
    )
    by_domain = (
        Counter(queued_by_domain)
        if queued_by_domain is not None
        else Counter(r.domain for r in waiting)
    )
    domain_rows = [Row(label=d, values=[n]) for d, n in by_domain.most_common() if n]
    if triage_rows:
        domain_rows.append(Row(label="triage (unplaced)", values=[len(triage_rows)]))
    # The longest wait of teams the floor did not read (the statistics' queue ages, if any).
    read = {row.label for row in wait_by_team}
    for age in stats.get("queue_ages") or []:
        if not isinstance(age, dict):
            continue
        label = str(age.get("team_name") or age.get("team_id"))
        seconds = age.get("oldest_queued_age_seconds")
        if label not in read and isinstance(seconds, int | float):
            wait_by_team.append(Row(label=label, values=[0.0, float(seconds) / 60]))
    risk = [r for r in waiting if r.at_risk or r.overdue]
    risk.sort(key=lambda r: r.due_at or "")
    status_counts = views.counts(stats.get("by_status"))
    charts = {
        "depth": bar_chart(
            title="Queue depth per team",
            rows=depth_rows,
            series=["queued", "in progress"],
            mark_label="capacity",
        ),
        "domain": bar_chart(title="Waiting jobs per domain", rows=domain_rows, series=["waiting"]),
        "wait": bar_chart(
            title="Wait of queued jobs per team (minutes)",
            rows=wait_by_team,
            series=["mean wait", "up to the longest"],
            unit=" min",
            fmt="{:.1f}",
        ),
        "claims": bar_chart(
            title="Time from queued to claimed (minutes)",
            rows=_claim_wait_rows(stats.get("waits")),
            series=["minutes"],
            unit=" min",
            fmt="{:.1f}",
        ),
        "sla": bar_chart(
            title="Deadlines",
            rows=_sla_rows(stats.get("sla"), at_risk=sum(1 for r in risk if not r.overdue)),
            series=["jobs"],
        ),
        "status": bar_chart(
            title="Jobs by status",
            rows=[
                Row(label=s.replace("_", " "), values=[n]) for s, n in sorted(status_counts.items())
            ],
            series=["jobs"],
        ),
    }
    # Fields a later version of the statistics may add are listed, never required.
    known = {
        "by_status",
        "by_tier",
        "by_domain",
        "queues",
        "generated_at",
        "window_seconds",
        "queued_by_tier",
        "queued_by_domain",
        "queue_ages",
        "waits",
        "sla",
    }
    extra = {k: v for k, v in stats.items() if k not in known}
    return render(
        request,
        "floor.html",
        {
            "user": user,
            "charts": charts,
            "risk": risk,
            "triage_count": len(triage_rows),
            "tiers": views.counts(stats.get("by_tier")),
            "queued_tiers": views.counts(stats.get("queued_by_tier")),
            "window": _window(stats.get("window_seconds")),
            "extra": extra,
            "generated_at": now.isoformat(timespec="seconds"),
        },
    )


def _window(value: Any) -> str | None:
    return views.duration(timedelta(seconds=value)) if isinstance(value, int | float) else None


def _claim_wait_rows(waits: Any) -> list[Row]:
    """p50 / p95 / longest wait from queued to claimed, when the statistics carry them."""
    if not isinstance(waits, dict):
        return []
    rows = []
    for key, label in (
        ("p50_seconds", "median"),
        ("p95_seconds", "95th percentile"),
        ("max_seconds", "longest"),
    ):
        value = waits.get(key)
        if isinstance(value, int | float):
            rows.append(Row(label=label, values=[float(value) / 60]))
    return rows


def _sla_rows(sla: Any, *, at_risk: int) -> list[Row]:
    """Jobs with deadlines: on time, late, open past due (statistics) and due soon (read here)."""
    rows = []
    if isinstance(sla, dict):
        for key, label in (
            ("completed_on_time", "completed on time"),
            ("completed_late", "completed late"),
            ("open_overdue", "open, overdue"),
        ):
            if key in sla:
                rows.append(Row(label=label, values=[views.number(sla.get(key))]))
    rows.append(Row(label="queued, due within 4 h", values=[at_risk]))
    return rows


@router.get("/triage")
async def triage_page(
    request: Request, user: OperatorUser, router_: RouterDep, done: str | None = None
) -> Response:
    """Jobs waiting for an operator, each with a routing form."""
    page = await admin_jobs.list_triage(
        _operator=user.principal, router_=router_, limit=PAGE, cursor=None
    )
    teams = _active_teams(await router_.list_teams(limit=PAGE, cursor=None, active=True, tier=None))
    jobs = [
        (views.queue_row(job, member_id=None), job.get("classification") or {})
        for job in page.get("data", [])
    ]
    return render(
        request,
        "triage.html",
        {
            "user": user,
            "jobs": jobs,
            "teams": teams,
            "domains": [d.value for d in Domain],
            "notice": NOTICES.get(done or ""),
        },
    )


@router.post("/triage/{job_id}/route")
async def route(
    job_id: str, request: Request, user: OperatorUser, form: FormDep, router_: RouterDep
) -> Response:
    """Route a triage job to the chosen team."""
    body = JobRoute.model_validate(
        {"team_id": form.get("team_id", ""), "domain": form.get("domain") or None}
    )
    await admin_jobs.route_job(
        job_id=job_id, body=body, request=request, operator=user.principal, router_=router_
    )
    await queue_moved_job_event(request.scope)
    return see_other("/console/triage?done=routed")


@router.get("/teams")
async def teams_page(
    request: Request, user: OperatorUser, router_: RouterDep, done: str | None = None
) -> Response:
    """Teams with capacity, state and queue, each editable in place."""
    teams = _active_teams(await router_.list_teams(limit=PAGE, cursor=None, active=None, tier=None))
    stats = await router_.stats()
    depth = {str(q.get("team_id")): q for q in stats.get("queues", []) if isinstance(q, dict)}
    return render(
        request,
        "teams.html",
        {"user": user, "teams": teams, "depth": depth, "notice": NOTICES.get(done or "")},
    )


@router.post("/teams/{team_id}")
async def update_team(
    team_id: str, user: OperatorUser, form: FormDep, router_: RouterDep
) -> Response:
    """Change a team's capacity and active state (refused if it changed since the page loaded)."""
    version = form.get("version", "")
    if not (version.isascii() and version.isdigit() and len(version) <= 18):
        raise BadForm("The form lost the team's version; reload the page.")
    body = TeamUpdate.model_validate(
        {"capacity": form.get("capacity", ""), "active": form.get("active") == "on"}
    )
    await admin_teams.update_team(
        team_id=team_id,
        body=body,
        _operator=user.principal,
        router_=router_,
        response=Response(),
        if_match=etag(int(version)),
    )
    return see_other("/console/teams?done=team")


@router.get("/ops/jobs")
async def find_job(_user: OperatorUser, id: str = "") -> Response:
    """Open a job by its id (the search box of the header)."""
    return see_other(f"/console/ops/jobs/{job_id_or_404(id.strip())}")


@router.get("/ops/jobs/{job_id}")
async def job_detail(
    job_id: str, request: Request, user: OperatorUser, router_: RouterDep
) -> Response:
    """Any job: its timeline and its routing decision (eligible and excluded teams)."""
    job_id = job_id_or_404(job_id)
    job = operator_view(await router_.get_job(job_id, tenant_id=None))
    events = (await router_.job_events(job_id, tenant_id=None)).get("data", [])
    try:
        decision: dict[str, Any] | None = await router_.job_routing(job_id, tenant_id=None)
    except TaskrouteError:
        decision = None  # a job not routed yet has no record
    return render(
        request,
        "ops_job.html",
        {
            "user": user,
            "job": views.queue_row(job, member_id=None),
            "raw": job,
            "events": events,
            "decision": decision or {},
        },
    )


@router.get("/audit")
async def audit_page(
    request: Request,
    user: OperatorUser,
    vault: VaultDep,
    cursor: str | None = None,
) -> Response:
    """The vault's audit log, newest first, with the hash chain's verification."""
    verification = await admin_audit.verify_audit(_operator=user.principal, vault=vault)
    page = await admin_audit.audit_log(
        _operator=user.principal, vault=vault, tenant_id=None, limit=50, cursor=cursor
    )
    return render(
        request,
        "audit.html",
        {
            "user": user,
            "verification": verification,
            "records": page.get("data", []),
            "next_cursor": page.get("next_cursor") if page.get("has_more") else None,
        },
    )


@router.get("/tenants")
async def tenants_page(
    request: Request,
    user: OperatorUser,
    session: SessionDep,
    tenant: str | None = None,
    version: int | None = None,
    rewrapped: int | None = None,
    remaining: int | None = None,
) -> Response:
    """Tenants and their vault keys: rotate, then rewrap stored data to the new version."""
    page = await TenantRepository(session).list(limit=PAGE, cursor=None)
    names = {t.id: t.name for t in page.items}
    notice = None
    if tenant is not None and version is not None:
        notice = (
            f"Rotated: {names.get(tenant, tenant)} now seals with key version {version}. "
            "Older data still opens; rewrap it to move it to the new version."
        )
    elif tenant is not None and rewrapped is not None:
        left = "none remain" if not remaining else f"{remaining} remain: rewrap again"
        notice = (
            f"Rewrapped {rewrapped} records of {names.get(tenant, tenant)} to the newest key "
            f"version; {left}."
        )
    return render(request, "tenants.html", {"user": user, "tenants": page.items, "notice": notice})


@router.post("/tenants/{tenant_id}/rotate")
async def rotate(
    tenant_id: str, user: OperatorUser, _form: FormDep, session: SessionDep, vault: VaultDep
) -> Response:
    """Rotate a tenant's vault keys: new seals use the new version, old data still opens."""
    answer = await admin_vault_keys.rotate_vault_key(
        tenant_id=tenant_id, _operator=user.principal, session=session, vault=vault
    )
    query = urlencode(
        {"tenant": str(answer.get("tenant_id")), "version": int(answer.get("key_version", 0))}
    )
    return see_other(f"/console/tenants?{query}")


@router.post("/tenants/{tenant_id}/rewrap")
async def rewrap(
    tenant_id: str, user: OperatorUser, _form: FormDep, session: SessionDep, vault: VaultDep
) -> Response:
    """Rewrap one batch of the tenant's stored data keys to the newest key version."""
    answer = await admin_vault_keys.rewrap_vault_key(
        tenant_id=tenant_id, _operator=user.principal, session=session, vault=vault, body=None
    )
    query = urlencode(
        {
            "tenant": str(answer.get("tenant_id")),
            "rewrapped": int(answer.get("rewrapped", 0)),
            "remaining": int(answer.get("remaining", 0)),
        }
    )
    return see_other(f"/console/tenants?{query}")
