"""Four-eyes review for the gateway's member API (services/router/reviews.py says the rules).

The gateway has already checked that the member belongs to the team in the path; the router
checks that the team is the job's reviewer and meets its policy, and that the member did not
submit the work."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, StringConstraints

from services.router.api.deps import IdentityDep, JobsDep, NowDep, SettingsDep, require_gateway
from services.router.api.schemas import GrantRead, JobRead, UUIDStr, _Request, job_read
from services.router.db.models import Job
from services.router.domain.grants import GRANT_AUDIENCE, GRANT_TYPE, GrantPurpose
from services.router.member_keys import recipient_claims
from services.router.reviews import ReviewWorkflow
from shared.db import SessionDep

router = APIRouter(
    prefix="/internal/v1/teams/{team_id}/reviews",
    tags=["reviews"],
    dependencies=[Depends(require_gateway)],
)

# A reviewer's comment is a few sentences for the member, as a feedback comment.
MAX_REVIEW_COMMENT = 2000
Comment = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_REVIEW_COMMENT)
]


class ApproveCreate(_Request):
    member_id: UUIDStr
    comment: Comment | None = None


class SendBackCreate(_Request):
    member_id: UUIDStr
    # Required: sending work back without saying why helps nobody.
    comment: Comment


class ReviewGrantCreate(_Request):
    member_id: UUIDStr
    # "job": the job's confidential data; "result": the submitted confidential result.
    purpose: GrantPurpose


class ReviewRead(BaseModel):
    team_id: str
    submitted_by: str
    submitted_at: datetime
    # The submitted (non-confidential) result, held from the client until approval.
    result: Any
    has_confidential_result: bool


class ReviewJobRead(JobRead):
    review: ReviewRead | None


class ReviewJobList(BaseModel):
    data: list[ReviewJobRead]
    has_more: bool
    next_cursor: str | None


def review_job_read(job: Job) -> ReviewJobRead:
    review = None
    if (
        job.review_team_id is not None
        and job.review_submitted_by is not None
        and job.review_submitted_at is not None
    ):
        review = ReviewRead(
            team_id=job.review_team_id,
            submitted_by=job.review_submitted_by,
            submitted_at=job.review_submitted_at,
            result=job.result,
            has_confidential_result=job.confidential_result_ref is not None,
        )
    return ReviewJobRead(**job_read(job).model_dump(), review=review)


def get_reviews(jobs: JobsDep) -> ReviewWorkflow:
    return ReviewWorkflow(jobs)


ReviewsDep = Annotated[ReviewWorkflow, Depends(get_reviews)]
MemberQuery = Annotated[UUIDStr, Query(max_length=64)]


@router.get("")
async def list_reviews(
    team_id: str,
    reviews: ReviewsDep,
    member_id: MemberQuery,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> ReviewJobList:
    """Jobs awaiting the team's review, oldest submission first, without the member's own."""
    page = await reviews.queue(team_id, member_id=member_id, limit=limit, cursor=cursor)
    return ReviewJobList(
        data=[review_job_read(job) for job in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get("/{job_id}")
async def get_review(
    team_id: str, job_id: str, reviews: ReviewsDep, member_id: MemberQuery
) -> ReviewJobRead:
    """One job in review with its submitted result (403 for the member who submitted it)."""
    return review_job_read(await reviews.get(team_id, job_id, member_id=member_id))


@router.post("/{job_id}/approve")
async def approve(
    team_id: str, job_id: str, body: ApproveCreate, reviews: ReviewsDep, now: NowDep
) -> ReviewJobRead:
    """Approve the work: the job becomes completed (409 if another reviewer decided first)."""
    job = await reviews.approve(
        team_id, job_id, member_id=body.member_id, comment=body.comment, now=now
    )
    return review_job_read(job)


@router.post("/{job_id}/send-back")
async def send_back(
    team_id: str, job_id: str, body: SendBackCreate, reviews: ReviewsDep, now: NowDep
) -> ReviewJobRead:
    """Send the work back with a comment: in progress again, leased to its author."""
    job = await reviews.send_back(
        team_id, job_id, member_id=body.member_id, comment=body.comment, now=now
    )
    return review_job_read(job)


@router.post("/{job_id}/grant")
async def review_grant(
    team_id: str,
    job_id: str,
    body: ReviewGrantCreate,
    reviews: ReviewsDep,
    identity: IdentityDep,
    settings: SettingsDep,
    session: SessionDep,
) -> GrantRead:
    """A vault grant for the reviewer to open the job's data or its confidential result."""
    claims = await reviews.grant(team_id, job_id, member_id=body.member_id, purpose=body.purpose)
    recipient = await recipient_claims(
        session, team_id=team_id, member_id=body.member_id, action="open"
    )
    grant = identity.sign(
        audience=GRANT_AUDIENCE,
        typ=GRANT_TYPE,
        ttl_seconds=settings.grant_ttl_seconds,
        claims={**claims.to_claims(), **recipient},
    )
    return GrantRead(grant=grant, tenant_id=claims.tenant_id, require_e2e=claims.require_e2e)
