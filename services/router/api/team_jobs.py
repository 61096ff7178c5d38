"""A team's queue and the member actions on its jobs: claim, heartbeat, release, reject, grant,
complete. The gateway has already checked that the member belongs to the team in the path."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from services.router.api.deps import IdentityDep, JobsDep, NowDep, SettingsDep, require_gateway
from services.router.api.schemas import (
    ClaimCreate,
    CompleteCreate,
    GrantCreate,
    GrantRead,
    HeartbeatCreate,
    JobList,
    JobRead,
    RejectCreate,
    ReleaseCreate,
    job_read,
)
from services.router.db.repository import JobFilters
from services.router.domain.errors import InvalidReceipt, TeamNotFound
from services.router.domain.grants import GRANT_AUDIENCE, GRANT_TYPE, ResultReceipt
from services.router.domain.lifecycle import JobStatus
from services.router.domain.taxonomy import Domain, Priority
from services.router.member_keys import recipient_claims
from shared.db import SessionDep
from shared.list_filters import as_utc
from shared.result_receipts import RECEIPT_ISSUER, RECEIPT_TYPE
from shared.service_auth import ServiceAuthError, ServiceIdentity

router = APIRouter(
    prefix="/internal/v1/teams/{team_id}/jobs",
    tags=["team queue"],
    dependencies=[Depends(require_gateway)],
)


@router.get("")
async def list_team_jobs(
    team_id: str,
    jobs: JobsDep,
    status_filter: Annotated[
        JobStatus | None, Query(alias="status", description="queued or in_progress")
    ] = None,
    priority: Annotated[list[Priority] | None, Query(max_length=3)] = None,
    domain: Annotated[list[Domain] | None, Query(max_length=17)] = None,
    created_after: Annotated[datetime | None, Query()] = None,
    created_before: Annotated[datetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> JobList:
    """The team's queued and in-progress jobs, high priority first, then oldest first,
    narrowed by the filters (all must hold; the cursor is bound to them)."""
    if await jobs.teams.get(team_id) is None:
        raise TeamNotFound
    if status_filter not in (None, JobStatus.QUEUED, JobStatus.IN_PROGRESS):
        # Other statuses are not in a team's hands; an empty list says so honestly.
        return JobList(data=[], has_more=False, next_cursor=None)
    page = await jobs.jobs.team_queue(
        team_id=team_id,
        status=status_filter.value if status_filter else None,
        limit=limit,
        cursor=cursor,
        filters=JobFilters(
            priorities=tuple(sorted({p.value for p in priority or ()})),
            domains=tuple(sorted({d.value for d in domain or ()})),
            created_after=as_utc(created_after),
            created_before=as_utc(created_before, name="created_before"),
        ),
    )
    return JobList(
        data=[job_read(job) for job in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.post("/{job_id}/claim")
async def claim_job(
    team_id: str, job_id: str, body: ClaimCreate, jobs: JobsDep, now: NowDep
) -> JobRead:
    """Take a queued job under a lease (409 if it is not queued: someone else was first)."""
    return job_read(
        await jobs.claim(
            team_id, job_id, member_id=body.member_id, request_id=body.request_id, now=now
        )
    )


@router.post("/{job_id}/heartbeat")
async def heartbeat_job(
    team_id: str, job_id: str, body: HeartbeatCreate, jobs: JobsDep, now: NowDep
) -> JobRead:
    """Extend the caller's live lease (409 if the caller does not hold it)."""
    return job_read(await jobs.heartbeat(team_id, job_id, member_id=body.member_id, now=now))


@router.post("/{job_id}/release")
async def release_job(
    team_id: str, job_id: str, body: ReleaseCreate, jobs: JobsDep, now: NowDep
) -> JobRead:
    """Give the job back to the team's queue (lease holder only)."""
    return job_read(
        await jobs.release(
            team_id,
            job_id,
            member_id=body.member_id,
            reason=body.reason,
            request_id=body.request_id,
            now=now,
        )
    )


@router.post("/{job_id}/reject")
async def reject_job(
    team_id: str, job_id: str, body: RejectCreate, jobs: JobsDep, now: NowDep
) -> JobRead:
    """Refuse the job: it passes to the next eligible team, never back to this one."""
    return job_read(
        await jobs.reject(
            team_id,
            job_id,
            member_id=body.member_id,
            reason=body.reason,
            request_id=body.request_id,
            now=now,
        )
    )


@router.post("/{job_id}/grant")
async def create_grant(
    team_id: str,
    job_id: str,
    body: GrantCreate,
    jobs: JobsDep,
    identity: IdentityDep,
    settings: SettingsDep,
    now: NowDep,
    session: SessionDep,
) -> GrantRead:
    """A vault grant to open the job's data or seal a result, for the live lease holder only."""
    claims = await jobs.grant(
        team_id, job_id, member_id=body.member_id, action=body.action, now=now
    )
    # The member's registered key (issue 3): the vault delivers sealed only to this key.
    recipient = await recipient_claims(
        session, team_id=team_id, member_id=body.member_id, action=body.action
    )
    grant = identity.sign(
        audience=GRANT_AUDIENCE,
        typ=GRANT_TYPE,
        ttl_seconds=settings.grant_ttl_seconds,
        claims={**claims.to_claims(), **recipient},
    )
    return GrantRead(grant=grant, tenant_id=claims.tenant_id, require_e2e=claims.require_e2e)


def verified_receipt(identity: ServiceIdentity, token: str) -> ResultReceipt:
    """The claims of a result receipt the vault signed for this router (unexpired)."""
    try:
        claims = identity.verify(
            token, typ=RECEIPT_TYPE, allowed_issuers=frozenset({RECEIPT_ISSUER})
        )
    except ServiceAuthError:
        raise InvalidReceipt(
            "The confidential result's receipt is not the vault's, or has expired; "
            "seal the result again."
        ) from None
    receipt = ResultReceipt.from_claims(claims)
    if receipt is None:
        raise InvalidReceipt("The confidential result's receipt is incomplete.")
    return receipt


@router.post("/{job_id}/complete")
async def complete_job(
    team_id: str,
    job_id: str,
    body: CompleteCreate,
    jobs: JobsDep,
    identity: IdentityDep,
    now: NowDep,
) -> JobRead:
    """Finish the job with its result (lease holder with a live lease only); a confidential
    result only on the vault's receipt for it."""
    receipt = None
    if body.confidential_result_receipt is not None:
        receipt = verified_receipt(identity, body.confidential_result_receipt)
    return job_read(
        await jobs.complete(
            team_id,
            job_id,
            member_id=body.member_id,
            result=body.result,
            confidential_result=receipt,
            request_id=body.request_id,
            now=now,
        )
    )
