"""Operator routes for jobs: the triage queue, manual routing, any job, statistics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request

from services.gateway.api.deps import DEFAULT_LIMIT, CursorQuery, LimitQuery, OperatorDep, RouterDep
from services.gateway.api.job_events import remember_moved_job
from services.gateway.api.list_filters import (
    CreatedAfterQuery,
    CreatedBeforeQuery,
    time_range,
)
from services.gateway.api.routing import public_router
from services.gateway.api.schemas import AdminJobList, AdminJobRead, JobRoute, StatsRead, Uuid
from services.gateway.domain.views import job_id_or_404, operator_view
from shared.vocabulary import Domain, Priority, Tier

router = public_router(prefix="/v1/admin", tag="admin: jobs")


@router.get("/triage", response_model=AdminJobList)
async def list_triage(
    _operator: OperatorDep,
    router_: RouterDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
    tenant_id: Annotated[Uuid | None, Query(description="Only this tenant's jobs.")] = None,
    tier: Annotated[Tier | None, Query(description="Only jobs guessed in this tier.")] = None,
    domain: Annotated[
        list[Domain] | None,
        Query(max_length=17, description="Only jobs guessed in this domain; repeatable."),
    ] = None,
    priority: Annotated[
        list[Priority] | None,
        Query(max_length=3, description="Only jobs of this priority; repeatable."),
    ] = None,
    created_after: CreatedAfterQuery = None,
    created_before: CreatedBeforeQuery = None,
) -> dict[str, Any]:
    """Jobs the classifier could not place with confidence, waiting for an operator, oldest
    first, narrowed by the filters given (all must hold; the cursor is bound to them)."""
    after, before = time_range(created_after, created_before)
    page = await router_.triage(
        limit=limit,
        cursor=cursor,
        filters={
            "tenant_id": tenant_id,
            "tier": tier.value if tier else None,
            "domain": sorted({d.value for d in domain or ()}),
            "priority": sorted({p.value for p in priority or ()}),
            "created_after": after,
            "created_before": before,
        },
    )
    return {**page, "data": [operator_view(job) for job in page.get("data", [])]}


@router.post("/jobs/{job_id}/route", response_model=AdminJobRead)
async def route_job(
    job_id: str, body: JobRoute, request: Request, operator: OperatorDep, router_: RouterDep
) -> dict[str, Any]:
    """Route a job to a team by hand (kept by the router as a labelled example)."""
    job = await router_.route_job(
        job_id_or_404(job_id),
        team_id=body.team_id.lower(),
        actor=operator.actor,
        domain=body.domain.value if body.domain else None,
    )
    remember_moved_job(request.scope, job)
    return operator_view(job)


@router.get("/jobs/{job_id}", response_model=AdminJobRead)
async def get_any_job(job_id: str, _operator: OperatorDep, router_: RouterDep) -> dict[str, Any]:
    """Read any tenant's job."""
    return operator_view(await router_.get_job(job_id_or_404(job_id), tenant_id=None))


@router.get("/stats", response_model=StatsRead)
async def get_stats(
    _operator: OperatorDep,
    router_: RouterDep,
    window_seconds: Annotated[
        int,
        Query(ge=60, le=30 * 86_400, description="Window of the wait, expiry and SLA figures."),
    ] = 86_400,
) -> dict[str, Any]:
    """Queue depths by team, tier and domain; wait times, lease expiries, SLA breaches,
    triage and unroutable counts."""
    return await router_.stats(window_seconds=window_seconds)
