"""Member routes of four-eyes review (docs/architecture.md, "Four-eyes review").

A tenant policy with ``require_review`` holds a member's completed job ``in_review``. Another
member (of the policy's reviewer team, or else of the same team) lists the jobs awaiting
review, reads the submitted result (and, under an audited vault grant the router signs, the
confidential data and result), then approves (``completed``) or sends the work back with a
comment (``in_progress`` again, leased to its author). The member who did the work can never
review it (403). The member's team and id come from the key, never from the request.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Body, Request, Response
from pydantic import AfterValidator, BaseModel, StringConstraints

from services.gateway.api.deps import (
    DEFAULT_LIMIT,
    CursorQuery,
    LimitQuery,
    MemberDep,
    SessionDep,
    VaultDep,
)
from services.gateway.api.job_events import enqueue_job_event
from services.gateway.api.routing import public_router
from services.gateway.api.schemas import ConfidentialRead, ListOf, RequestModel, TeamJobRead
from services.gateway.api.team_jobs import deliver_to_member
from services.gateway.clients.reviews import ReviewClient
from services.gateway.domain.jobs import check_text
from services.gateway.domain.principal import Principal
from services.gateway.domain.views import client_view, job_id_or_404, member_view

router = public_router(prefix="/v1/team", tag="team")

Comment = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=2000),
    AfterValidator(check_text),
]


class ReviewApprove(RequestModel):
    comment: Comment | None = None


class ReviewSendBack(RequestModel):
    comment: Comment


class ReviewInfo(BaseModel):
    team_id: str
    submitted_by: str
    submitted_at: datetime
    result: Any = None
    has_confidential_result: bool = False


class TeamReviewRead(TeamJobRead):
    """A job in review as a reviewer sees it: the member view plus the submitted work."""

    review: ReviewInfo | None = None


class TeamReviewList(ListOf[TeamReviewRead]):
    pass


def get_reviews(request: Request) -> ReviewClient:
    return ReviewClient(request.app.state.router_http)


async def _queue_event(request: Request, job: dict[str, Any]) -> None:
    """Tell the tenant's webhooks about the decision (``job.completed`` only on approval)."""
    await enqueue_job_event(
        request.app.state.sessionmaker, tenant_id=str(job["tenant_id"]), job=client_view(job)
    )


async def _confidential(
    request: Request,
    member: Principal,
    job_id: str,
    purpose: Literal["job", "result"],
    vault: VaultDep,
    session: SessionDep,
    response: Response,
) -> dict[str, Any]:
    response.headers["Cache-Control"] = "no-store"
    grant = await get_reviews(request).grant(
        member.team, job_id_or_404(job_id), member_id=member.member, purpose=purpose
    )
    return await deliver_to_member(
        member, grant=grant.grant, require_e2e=grant.require_e2e, vault=vault, session=session
    )


@router.get("/reviews", response_model=TeamReviewList)
async def list_reviews(
    member: MemberDep,
    request: Request,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    """Jobs awaiting review by the member's team, oldest first (never the member's own work)."""
    page = await get_reviews(request).reviews(
        member.team, member_id=member.member, limit=limit, cursor=cursor
    )
    return {**page, "data": [member_view(job) for job in page.get("data", [])]}


@router.get("/jobs/{job_id}/review", response_model=TeamReviewRead)
async def get_review(job_id: str, member: MemberDep, request: Request) -> dict[str, Any]:
    """One job awaiting review, with the submitted result."""
    job = await get_reviews(request).review(
        member.team, job_id_or_404(job_id), member_id=member.member
    )
    return member_view(job)


@router.get(
    "/jobs/{job_id}/review/confidential",
    response_model=ConfidentialRead,
    response_model_exclude_unset=True,
)
async def read_review_confidential(
    job_id: str,
    member: MemberDep,
    request: Request,
    vault: VaultDep,
    session: SessionDep,
    response: Response,
) -> dict[str, Any]:
    """The job's confidential data, for its reviewer (audited by the vault)."""
    return await _confidential(request, member, job_id, "job", vault, session, response)


@router.get(
    "/jobs/{job_id}/review/confidential-result",
    response_model=ConfidentialRead,
    response_model_exclude_unset=True,
)
async def read_review_confidential_result(
    job_id: str,
    member: MemberDep,
    request: Request,
    vault: VaultDep,
    session: SessionDep,
    response: Response,
) -> dict[str, Any]:
    """The submitted confidential result, for the job's reviewer (audited by the vault)."""
    return await _confidential(request, member, job_id, "result", vault, session, response)


@router.post("/jobs/{job_id}/approve", response_model=TeamReviewRead)
async def approve(
    job_id: str,
    member: MemberDep,
    request: Request,
    body: Annotated[ReviewApprove | None, Body()] = None,
) -> dict[str, Any]:
    """Approve the work under review: the job becomes completed (403 for its author)."""
    job = await get_reviews(request).approve(
        member.team,
        job_id_or_404(job_id),
        member_id=member.member,
        comment=body.comment if body else None,
    )
    await _queue_event(request, job)
    return member_view(job)


@router.post("/jobs/{job_id}/send-back", response_model=TeamReviewRead)
async def send_back(
    job_id: str, body: ReviewSendBack, member: MemberDep, request: Request
) -> dict[str, Any]:
    """Send the work back with a comment: in progress again, leased to the member who did it."""
    job = await get_reviews(request).send_back(
        member.team, job_id_or_404(job_id), member_id=member.member, comment=body.comment
    )
    await _queue_event(request, job)
    return member_view(job)
