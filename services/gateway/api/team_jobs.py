"""Member routes: the team's queue, leases, confidential data and completion.

The member's team and id come from the key, never from the request. Confidential data moves
only under a grant the router signs for the member holding the job's live lease; the gateway
forwards the grant to the vault and cannot forge one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Body, Query, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from services.gateway.api.deps import (
    DEFAULT_LIMIT,
    CursorQuery,
    LimitQuery,
    MemberDep,
    RouterDep,
    SessionDep,
    VaultDep,
)
from services.gateway.api.edge import reserved_resource_id
from services.gateway.api.job_events import remember_moved_job
from services.gateway.api.keyed_retries import member_acted_under_this_key
from services.gateway.api.list_filters import (
    CreatedAfterQuery,
    CreatedBeforeQuery,
    time_range,
)
from services.gateway.api.routing import public_router
from services.gateway.api.schemas import (
    ConfidentialRead,
    JobComplete,
    JobReject,
    JobRelease,
    TeamJobList,
    TeamJobRead,
)
from services.gateway.clients.router import RouterClient
from services.gateway.clients.vault import VaultClient
from services.gateway.db.repository import MemberRepository
from services.gateway.domain.errors import EndToEndRequired
from services.gateway.domain.jobs import TeamQueueStatus
from services.gateway.domain.principal import Principal
from services.gateway.domain.views import job_id_or_404, member_view
from shared.errors import ServiceUnavailable
from shared.failpoints import failpoint
from shared.http import UpstreamError
from shared.vocabulary import Domain, Priority

router = public_router(prefix="/v1/team/jobs", tag="team")


async def _act(
    router_: RouterClient,
    member: Principal,
    job_id: str,
    action: Literal["claim", "heartbeat", "release", "reject"],
    reason: str | None = None,
    request: Request | None = None,
) -> dict[str, Any]:
    job_id = job_id_or_404(job_id)
    try:
        job = await router_.member_action(
            member.team,
            job_id,
            action,
            member_id=member.member,
            reason=reason,
            # A heartbeat changes no status and makes no event: nothing to find on a retry.
            request_id=None if action == "heartbeat" else reserved_resource_id(),
        )
    except UpstreamError as error:
        if action == "heartbeat":
            raise
        job = await _unless_done_before(error, router_, job_id, member)
    failpoint("gateway.member_action.after_router")  # applied, answer not yet stored
    if request is not None:
        remember_moved_job(request.scope, job)
    return member_view(job)


async def _unless_done_before(
    error: UpstreamError, router_: RouterClient, job_id: str, member: Principal
) -> dict[str, Any]:
    """The job, when a keyed retry is refused (409; 404 once a reject moved the job to another
    team) because an earlier attempt of its key did the action: see
    :func:`~services.gateway.api.keyed_retries.member_acted_under_this_key`."""
    if error.status not in (status.HTTP_404_NOT_FOUND, status.HTTP_409_CONFLICT):
        raise error
    earlier = await member_acted_under_this_key(router_, job_id, member=member)
    if earlier is None:
        raise error
    return earlier


@router.get("", response_model=TeamJobList)
async def team_queue(
    member: MemberDep,
    router_: RouterDep,
    status_: Annotated[TeamQueueStatus | None, Query(alias="status")] = None,
    priority: Annotated[
        list[Priority] | None,
        Query(max_length=3, description="Only jobs of this priority; repeat for several."),
    ] = None,
    domain: Annotated[
        list[Domain] | None,
        Query(max_length=17, description="Only jobs classified in this domain; repeatable."),
    ] = None,
    created_after: CreatedAfterQuery = None,
    created_before: CreatedBeforeQuery = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    """The team's queued and in-progress jobs, highest priority and oldest first, narrowed by
    the filters given (all must hold; a `next_cursor` continues only under the same filters)."""
    after, before = time_range(created_after, created_before)
    page = await router_.team_jobs(
        member.team,
        status=status_.value if status_ else None,
        limit=limit,
        cursor=cursor,
        filters={
            "priority": sorted({p.value for p in priority or ()}),
            "domain": sorted({d.value for d in domain or ()}),
            "created_after": after,
            "created_before": before,
        },
    )
    return {**page, "data": [member_view(job) for job in page.get("data", [])]}


@router.post("/{job_id}/claim", response_model=TeamJobRead)
async def claim(
    job_id: str, member: MemberDep, router_: RouterDep, request: Request
) -> dict[str, Any]:
    """Claim a queued job: the member gets a lease, kept alive by heartbeats."""
    return await _act(router_, member, job_id, "claim", request=request)


@router.post("/{job_id}/heartbeat", response_model=TeamJobRead)
async def heartbeat(job_id: str, member: MemberDep, router_: RouterDep) -> dict[str, Any]:
    """Extend the member's lease on a job."""
    return await _act(router_, member, job_id, "heartbeat")


@router.post("/{job_id}/release", response_model=TeamJobRead)
async def release(
    job_id: str,
    member: MemberDep,
    router_: RouterDep,
    request: Request,
    body: Annotated[JobRelease | None, Body()] = None,
) -> dict[str, Any]:
    """Give a claimed job back to the team's queue."""
    return await _act(
        router_, member, job_id, "release", body.reason if body else None, request=request
    )


@router.post("/{job_id}/reject", response_model=TeamJobRead)
async def reject(
    job_id: str, body: JobReject, member: MemberDep, router_: RouterDep, request: Request
) -> dict[str, Any]:
    """Refuse a job for the team: it passes to the next eligible team."""
    return await _act(router_, member, job_id, "reject", body.reason, request=request)


@router.get(
    "/{job_id}/confidential", response_model=ConfidentialRead, response_model_exclude_unset=True
)
async def read_confidential(
    job_id: str,
    member: MemberDep,
    router_: RouterDep,
    vault: VaultDep,
    session: SessionDep,
    response: Response,
) -> dict[str, Any]:
    """The job's confidential data, for the member holding its lease (audited by the vault)."""
    # Confidential data must not linger in a browser or proxy cache.
    response.headers["Cache-Control"] = "no-store"
    grant = await router_.member_grant(
        member.team, job_id_or_404(job_id), member_id=member.member, action="open"
    )
    return await deliver_to_member(
        member, grant=grant.grant, require_e2e=grant.require_e2e, vault=vault, session=session
    )


async def deliver_to_member(
    member: Principal, *, grant: str, require_e2e: bool, vault: VaultClient, session: AsyncSession
) -> dict[str, Any]:
    """What a router grant opens, in the form the member may receive (lease holder or reviewer)."""
    registered = await MemberRepository(session).get(member.member, team_id=member.team)
    if registered is not None and registered.public_key is not None:
        # Sealed to the key the router put in the grant; the gateway carries only ciphertext.
        return {"confidential_sealed": await vault.deliver(grant=grant)}
    if require_e2e:
        # Without a registered key such data is never handed out in plaintext.
        raise EndToEndRequired()
    return {"confidential": await vault.open(grant=grant)}


@router.post("/{job_id}/complete", response_model=TeamJobRead)
async def complete(
    job_id: str,
    body: JobComplete,
    member: MemberDep,
    router_: RouterDep,
    vault: VaultDep,
    request: Request,
) -> dict[str, Any]:
    """Complete a job with its result; a confidential result is sealed at the vault first."""
    job_id = job_id_or_404(job_id)
    try:
        job = await _complete(job_id, body, member, router_, vault)
    except UpstreamError as error:
        job = await _unless_done_before(error, router_, job_id, member)
    failpoint("gateway.member_action.after_router")  # applied, answer not yet stored
    remember_moved_job(request.scope, job)
    return member_view(job)


async def _complete(
    job_id: str, body: JobComplete, member: Principal, router_: RouterClient, vault: VaultClient
) -> dict[str, Any]:
    """Seal the confidential result under a grant (the grant is refused once the lease is
    gone, as in a retry after the completion was applied), then complete at the router with
    the vault's receipt for it (shared.result_receipts)."""
    sealed = None
    if body.confidential_result is not None:
        grant = await router_.member_grant(
            member.team, job_id, member_id=member.member, action="seal"
        )
        sealed = await vault.seal_by_grant(grant=grant.grant, data=body.confidential_result)
    elif body.confidential_result_sealed is not None:
        # Sealed by the member for the tenant: passed to the vault untouched.
        grant = await router_.member_grant(
            member.team, job_id, member_id=member.member, action="seal"
        )
        sealed = await vault.store_sealed_result(
            grant=grant.grant, envelope=body.confidential_result_sealed
        )
    if sealed is not None and sealed.receipt is None:
        raise ServiceUnavailable("The vault gave no receipt for the sealed result.")
    return await router_.complete(
        member.team,
        job_id,
        member_id=member.member,
        result=body.result,
        confidential_result_receipt=None if sealed is None else sealed.receipt,
        request_id=reserved_resource_id(),
    )
