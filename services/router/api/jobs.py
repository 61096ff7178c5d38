"""Jobs as the gateway's clients see them: submit, read, list, events, routing, cancel, result."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import AfterValidator

from services.router.api.deps import IdentityDep, JobsDep, NowDep, SettingsDep, require_gateway
from services.router.api.schemas import (
    CancelCreate,
    FeedbackCreate,
    FeedbackRead,
    GrantRead,
    JobCreate,
    JobEventList,
    JobList,
    JobRead,
    RequestId,
    ResultGrantCreate,
    ResultRead,
    WithdrawalCreate,
    WithdrawalRead,
    event_read,
    feedback_read,
    job_read,
)
from services.router.db.repository import JobFilters
from services.router.domain.grants import GRANT_AUDIENCE, GRANT_TYPE
from services.router.domain.lifecycle import EVENT_TYPES, JobStatus
from services.router.domain.routing import DataPolicy
from services.router.domain.taxonomy import Domain, Priority, Tier
from services.router.workflow import JobSubmission
from shared.errors import NotFound
from shared.failpoints import failpoint
from shared.list_filters import as_utc, one_of

# An event type as the router names them (`created`, `claimed`, `escalated`, ...).
EventType = Annotated[str, AfterValidator(one_of(EVENT_TYPES))]

router = APIRouter(
    prefix="/internal/v1/jobs", tags=["jobs"], dependencies=[Depends(require_gateway)]
)

TenantQuery = Annotated[str | None, Query(max_length=64)]


@router.post("", status_code=status.HTTP_201_CREATED)
async def submit_job(body: JobCreate, jobs: JobsDep, now: NowDep, response: Response) -> JobRead:
    """Store, classify and route a job; the same id again returns the stored job (200)."""
    submission = JobSubmission(
        id=body.id,
        tenant_id=body.tenant_id,
        title=body.title,
        description=body.description,
        service=body.service,
        priority=body.priority,
        due_at=body.due_at,
        policy=DataPolicy.from_json(body.policy.model_dump()),
        metadata=body.metadata,
        confidential_ref=body.confidential_ref,
        callback_url=body.callback_url,
        acknowledged_at=body.acknowledged_at,
        outbox_token=body.outbox_token,
        policy_version=body.policy_version,
    )
    job, created = await jobs.submit(submission, now=now)
    failpoint("router.submit.before_commit")  # decided, not yet committed
    if not created:
        response.status_code = status.HTTP_200_OK
    return job_read(job)


@router.get("")
async def list_jobs(
    jobs: JobsDep,
    tenant_id: Annotated[str, Query(max_length=64)],
    status_filter: Annotated[list[JobStatus] | None, Query(alias="status", max_length=10)] = None,
    priority: Annotated[list[Priority] | None, Query(max_length=3)] = None,
    tier: Annotated[Tier | None, Query()] = None,
    domain: Annotated[list[Domain] | None, Query(max_length=17)] = None,
    created_after: Annotated[datetime | None, Query()] = None,
    created_before: Annotated[datetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> JobList:
    """A tenant's jobs, newest first, narrowed by the filters (all of them must hold; a
    repeated parameter matches any of its values). The cursor is bound to the filters."""
    filters = JobFilters(
        statuses=tuple(sorted({s.value for s in status_filter or ()})),
        priorities=tuple(sorted({p.value for p in priority or ()})),
        tiers=(tier.value,) if tier else (),
        domains=tuple(sorted({d.value for d in domain or ()})),
        created_after=as_utc(created_after),
        created_before=as_utc(created_before, name="created_before"),
    )
    page = await jobs.jobs.list_for_tenant(
        tenant_id=tenant_id, status=None, limit=limit, cursor=cursor, filters=filters
    )
    return JobList(
        data=[job_read(job) for job in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get("/{job_id}")
async def get_job(job_id: str, jobs: JobsDep, tenant_id: TenantQuery = None) -> JobRead:
    """One job; with ``tenant_id`` only that tenant's (absent: the operator's view)."""
    return job_read(await jobs.get(job_id, tenant_id=tenant_id))


@router.get("/{job_id}/events")
async def list_job_events(
    job_id: str,
    jobs: JobsDep,
    tenant_id: TenantQuery = None,
    event_type: Annotated[list[EventType] | None, Query(alias="type", max_length=10)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    request_id: Annotated[RequestId | None, Query()] = None,
) -> JobEventList:
    """The job's timeline, oldest event first, optionally of some event types only, or only
    the event a keyed request made (its ``request_id``)."""
    job = await jobs.get(job_id, tenant_id=tenant_id)
    page = await jobs.jobs.events_page(
        job.id,
        limit=limit,
        cursor=cursor,
        types=tuple(sorted(set(event_type or ()))),
        request_id=request_id,
    )
    return JobEventList(
        data=[event_read(event) for event in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get("/{job_id}/routing")
async def get_routing_decision(
    job_id: str, jobs: JobsDep, tenant_id: TenantQuery = None
) -> dict[str, Any]:
    """The latest routing decision record: eligible teams with scores, excluded teams and why."""
    job = await jobs.get(job_id, tenant_id=tenant_id)
    decision = await jobs.jobs.latest_decision(job.id)
    if decision is None:
        raise NotFound("This job has no routing decision yet.")
    return await jobs.routing_view(decision.record)


@router.post("/{job_id}/cancel")
async def cancel_job(job_id: str, body: CancelCreate, jobs: JobsDep, now: NowDep) -> JobRead:
    """Cancel a job that is not completed or cancelled already (409 then)."""
    return job_read(
        await jobs.cancel(
            job_id,
            tenant_id=body.tenant_id,
            reason=body.reason,
            request_id=body.request_id,
            now=now,
        )
    )


@router.post("/{job_id}/withdrawals")
async def withdraw_submission(
    job_id: str, body: WithdrawalCreate, jobs: JobsDep, now: NowDep
) -> WithdrawalRead:
    """The gateway's sweeper rolls back a submission that never got through: from now on the
    router refuses it (409 ``submission-withdrawn``), unless it holds the job already, which
    the answer says (``withdrawn: false``). Idempotent."""
    withdrawn = await jobs.withdraw(
        job_id, tenant_id=body.tenant_id, outbox_token=body.outbox_token, now=now
    )
    return WithdrawalRead(withdrawn=withdrawn)


@router.get("/{job_id}/result")
async def get_result(
    job_id: str, jobs: JobsDep, tenant_id: Annotated[str, Query(max_length=64)]
) -> ResultRead:
    """The non-confidential result and the vault ref of the confidential one (409 unless done)."""
    job = await jobs.result(job_id, tenant_id=tenant_id)
    return ResultRead(result=job.result, confidential_result_ref=job.confidential_result_ref)


@router.post("/{job_id}/feedback", status_code=status.HTTP_201_CREATED)
async def create_feedback(
    job_id: str, body: FeedbackCreate, jobs: JobsDep, now: NowDep
) -> FeedbackRead:
    """Rate a completed job once (409 a second time); moves the team's quality."""
    feedback = await jobs.add_feedback(
        job_id, tenant_id=body.tenant_id, rating=body.rating, comment=body.comment, now=now
    )
    return feedback_read(feedback)


@router.post("/{job_id}/result-grant")
async def create_result_grant(
    job_id: str,
    body: ResultGrantCreate,
    jobs: JobsDep,
    identity: IdentityDep,
    settings: SettingsDep,
) -> GrantRead:
    """A grant for the job's tenant to open its confidential result at the vault."""
    claims = await jobs.result_grant(job_id, tenant_id=body.tenant_id)
    grant = identity.sign(
        audience=GRANT_AUDIENCE,
        typ=GRANT_TYPE,
        ttl_seconds=settings.grant_ttl_seconds,
        claims=claims.to_claims(),
    )
    return GrantRead(grant=grant, tenant_id=claims.tenant_id, require_e2e=claims.require_e2e)
