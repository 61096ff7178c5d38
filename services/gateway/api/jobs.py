"""Client routes: submit jobs, follow them, read their results.

Every call is scoped to the key's tenant: the router answers 404 for another tenant's job, the
same answer as for an unknown id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from fastapi import Body, Depends, Query, Request, Response, status
from pydantic import StringConstraints

from services.gateway import submissions
from services.gateway.api.deps import (
    DEFAULT_LIMIT,
    ClientDep,
    CursorQuery,
    LimitQuery,
    RouterDep,
    SessionDep,
    VaultDep,
)
from services.gateway.api.edge import reserved_resource_id
from services.gateway.api.job_events import queue_submit_event, remember_moved_job
from services.gateway.api.keyed_retries import cancelled_under_this_key
from services.gateway.api.list_filters import (
    CreatedAfterQuery,
    CreatedBeforeQuery,
    time_range,
)
from services.gateway.api.routing import public_router
from services.gateway.api.schemas import (
    JobCancel,
    JobCreate,
    JobEventList,
    JobFeedbackCreate,
    JobFeedbackRead,
    JobList,
    JobRead,
    JobResultRead,
    RoutingRead,
)
from services.gateway.clients.vault import VaultClient
from services.gateway.db.repository import (
    SubmissionRepository,
    TenantRepository,
)
from services.gateway.domain.errors import InvalidApiKey, JobNotRoutedYet, SubmissionRolledBack
from services.gateway.domain.jobs import JobStatus
from services.gateway.domain.policy import DataPolicy, PolicyNarrowing, effective_policy
from services.gateway.domain.views import client_view, job_id_or_404
from shared.db import new_id, utcnow
from shared.errors import ServiceUnavailable
from shared.failpoints import async_failpoint, failpoint
from shared.http import UpstreamError
from shared.vocabulary import Domain, Priority, Tier

# An event type as the router names them (`created`, `claimed`, `escalated`, ...).
EventType = Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,32}$")]

router = public_router(prefix="/v1/jobs", tag="jobs")

Answer = TypeVar("Answer")


async def get_pending_forwarder(request: Request) -> submissions.SubmissionSweeper:
    sweeper: submissions.SubmissionSweeper = request.app.state.submission_sweeper
    return sweeper


PendingDep = Annotated[submissions.SubmissionSweeper, Depends(get_pending_forwarder)]


async def _at_router(
    call: Callable[[], Awaitable[Answer]],
    pending: submissions.SubmissionSweeper,
    *,
    tenant_id: str,
    job_id: str,
) -> Answer:
    """The router's answer about one job; a job it does not know yet but the gateway holds
    as pending (accepted while the router was away) is forwarded first, then asked again.
    One the gateway holds but could not forward now (another replica is forwarding it, or
    the router is away again) is 503 with Retry-After: it exists, so never 404."""
    try:
        return await call()
    except UpstreamError as error:
        if error.status != status.HTTP_404_NOT_FOUND:
            raise
        if not await pending.forward_now(tenant_id, job_id=job_id):
            if await pending.holds_pending(tenant_id, job_id):
                raise JobNotRoutedYet() from None
            raise
    return await call()


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobRead)
async def submit_job(
    body: JobCreate,
    client: ClientDep,
    session: SessionDep,
    router_: RouterDep,
    vault: VaultDep,
    request: Request,
) -> dict[str, Any]:
    """Submit a job: its confidential data is sealed at the vault, the rest goes to routing."""
    tenant_id = client.tenant
    stored = await TenantRepository(session).policy(tenant_id)
    if stored is None:
        raise InvalidApiKey()  # the key outlived its tenant
    stored_policy, policy_version = stored
    narrowing = None
    if body.data_policy is not None:
        narrowing = PolicyNarrowing(
            allowed_countries=None
            if body.data_policy.allowed_countries is None
            else tuple(body.data_policy.allowed_countries),
            required_certifications=tuple(body.data_policy.required_certifications),
            require_e2e=body.data_policy.require_e2e,
            require_review=body.data_policy.require_review,
        )
    policy = effective_policy(DataPolicy.from_json(stored_policy), narrowing)
    job_id = reserved_resource_id() or new_id()  # an Idempotency-Key's id, kept by retries
    submission: dict[str, Any] = {
        "id": job_id,
        "tenant_id": tenant_id,
        "title": body.title,
        "description": body.description,
        "service": body.service.value if body.service else None,
        "priority": body.priority.value,
        "due_at": body.due_at.isoformat() if body.due_at else None,
        "policy": policy.to_json(),
        # So the router holds the job to a policy change it learns of later, and not to an
        # older policy it still has (services/gateway/tenant_policies.py).
        "policy_version": policy_version,
        "metadata": body.metadata,
        "confidential_ref": None,
        "callback_url": body.callback_url,
    }
    # Sealed first, since the router needs the reference; the outbox row written before the
    # seal lets a sweeper undo it if this process dies before the router has the job.
    if body.confidential is not None or body.confidential_sealed is not None:
        submission["outbox_token"] = await submissions.begin_sealing(
            session,
            job_id=job_id,
            tenant_id=tenant_id,
            submission=submission,
            grace=timedelta(seconds=request.app.state.settings.submission_grace_seconds),
        )
        submission["confidential_ref"] = await _seal(
            vault, body, tenant_id=tenant_id, job_id=job_id
        )
        await async_failpoint("gateway.submit.after_seal")
    # The creation time the client is shown however the job reaches the router, sent with this
    # submit too: one the router takes late, or whose answer is lost (so this request keeps the
    # job as pending), is not dated by when it got there. A sealing row's time, if there is one.
    token = submission.get("outbox_token")
    submission["acknowledged_at"] = token if token is not None else utcnow().isoformat()
    outbox = SubmissionRepository(session)
    try:
        job = await router_.submit_job(submission)
    except UpstreamError as error:
        if error.problem != "submission-withdrawn":
            raise
        # This request stalled past the grace period and the sweeper rolled it back.
        raise SubmissionRolledBack() from error
    except ServiceUnavailable:
        # The router is away: the job is kept here (committed before the 202 leaves) and
        # forwarded by the sweeper when it is back.
        created_at = await submissions.park_pending(
            session, job_id=job_id, tenant_id=tenant_id, submission=submission
        )
        return submissions.pending_view(submission, created_at=created_at)
    if submission["confidential_ref"] is not None:
        await outbox.delete(job_id)
    view = client_view(job)
    # The webhook event commits with the outbox delete, before the 202 leaves.
    await queue_submit_event(session, tenant_id=tenant_id, job=view)
    return view


async def _seal(vault: VaultClient, body: JobCreate, *, tenant_id: str, job_id: str) -> str:
    """The vault's reference to the job's confidential data, sealed there or by the client."""
    if body.confidential_sealed is not None:
        # Sealed by the client: the gateway never sees plaintext and passes the envelope on.
        stored = await vault.store_sealed(
            tenant_id=tenant_id, job_id=job_id, envelope=body.confidential_sealed
        )
        return stored.ref
    sealed = await vault.seal(
        tenant_id=tenant_id, job_id=job_id, purpose="job", data=body.confidential
    )
    return sealed.ref


@router.get("", response_model=JobList)
async def list_jobs(
    client: ClientDep,
    router_: RouterDep,
    pending: PendingDep,
    status_: Annotated[
        list[JobStatus] | None,
        Query(
            alias="status",
            max_length=10,
            description="Only jobs in this status; repeat for any of several.",
        ),
    ] = None,
    priority: Annotated[
        list[Priority] | None,
        Query(max_length=3, description="Only jobs of this priority; repeat for several."),
    ] = None,
    tier: Annotated[Tier | None, Query(description="Only jobs classified in this tier.")] = None,
    domain: Annotated[
        list[Domain] | None,
        Query(max_length=17, description="Only jobs classified in this domain; repeatable."),
    ] = None,
    created_after: CreatedAfterQuery = None,
    created_before: CreatedBeforeQuery = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    """List the tenant's jobs, newest first, narrowed by the filters given (all must hold).

    The filters run in the router's query, so pages stay exact; a `next_cursor` only
    continues the list under the same filters (400 `invalid-cursor` otherwise).
    """
    after, before = time_range(created_after, created_before)
    # Jobs accepted while the router was away join the list (and the router) first, at the
    # place their acknowledged creation time gives them: pages stay the router's, exact.
    await pending.forward_now(client.tenant)
    page = await router_.list_jobs(
        tenant_id=client.tenant,
        status=None,
        limit=limit,
        cursor=cursor,
        filters={
            "status": sorted({s.value for s in status_ or ()}),
            "priority": sorted({p.value for p in priority or ()}),
            "tier": tier.value if tier else None,
            "domain": sorted({d.value for d in domain or ()}),
            "created_after": after,
            "created_before": before,
        },
    )
    return {**page, "data": [client_view(job) for job in page.get("data", [])]}


@router.get("/{job_id}", response_model=JobRead)
async def get_job(
    job_id: str, client: ClientDep, router_: RouterDep, session: SessionDep
) -> dict[str, Any]:
    """Read one job: status, classification, assignment."""
    job_id = job_id_or_404(job_id)
    try:
        job = await router_.get_job(job_id, tenant_id=client.tenant)
    except (UpstreamError, ServiceUnavailable) as error:
        # Not (yet) at the router: a job accepted while it was away is still the gateway's.
        if isinstance(error, UpstreamError) and error.status != 404:
            raise
        pending = await submissions.pending_job(session, job_id, tenant_id=client.tenant)
        if pending is None:
            raise
        return pending
    return client_view(job)


@router.get("/{job_id}/events", response_model=JobEventList)
async def job_events(
    job_id: str,
    client: ClientDep,
    router_: RouterDep,
    pending: PendingDep,
    event_type: Annotated[
        list[EventType] | None,
        Query(
            alias="type",
            max_length=10,
            description="Only events of this type (e.g. `claimed`); repeat for several.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Events per page.")] = 100,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    """The job's timeline: every status change with time, actor and reason, oldest first."""
    job_id = job_id_or_404(job_id)
    return await _at_router(
        lambda: router_.job_events(
            job_id,
            tenant_id=client.tenant,
            limit=limit,
            cursor=cursor,
            types=sorted(set(event_type or ())) or None,
        ),
        pending,
        tenant_id=client.tenant,
        job_id=job_id,
    )


@router.get("/{job_id}/routing", response_model=RoutingRead)
async def job_routing(
    job_id: str, client: ClientDep, router_: RouterDep, pending: PendingDep
) -> dict[str, Any]:
    """Why the job went where it went: eligible and excluded teams, and the scores."""
    job_id = job_id_or_404(job_id)
    return await _at_router(
        lambda: router_.job_routing(job_id, tenant_id=client.tenant),
        pending,
        tenant_id=client.tenant,
        job_id=job_id,
    )


@router.post("/{job_id}/cancel", response_model=JobRead)
async def cancel_job(
    job_id: str,
    request: Request,
    client: ClientDep,
    router_: RouterDep,
    pending: PendingDep,
    body: Annotated[JobCancel | None, Body()] = None,
) -> dict[str, Any]:
    """Cancel a job that is not yet completed (409 if it is completed or cancelled already).

    With an `Idempotency-Key`, a retry after a lost answer (a timeout, a dropped connection)
    answers 200 with the job even though the first attempt's cancel was applied: see
    :func:`~services.gateway.api.keyed_retries.cancelled_under_this_key`.
    """
    job_id = job_id_or_404(job_id)
    reason = body.reason if body else None
    try:
        job = await _at_router(
            lambda: router_.cancel_job(
                job_id, tenant_id=client.tenant, reason=reason, request_id=reserved_resource_id()
            ),
            pending,
            tenant_id=client.tenant,
            job_id=job_id,
        )
    except UpstreamError as error:
        if error.status != status.HTTP_409_CONFLICT:
            raise
        earlier = await cancelled_under_this_key(router_, job_id, client=client)
        if earlier is None:
            raise
        job = earlier
    failpoint("gateway.cancel.after_router")  # applied at the router, answer not yet stored
    remember_moved_job(request.scope, job)
    return client_view(job)


@router.post(
    "/{job_id}/feedback", status_code=status.HTTP_201_CREATED, response_model=JobFeedbackRead
)
async def job_feedback(
    job_id: str, body: JobFeedbackCreate, client: ClientDep, router_: RouterDep
) -> dict[str, Any]:
    """Rate a completed job (1-5) once; the rating moves the team's quality score."""
    return await router_.job_feedback(
        job_id_or_404(job_id), tenant_id=client.tenant, rating=body.rating, comment=body.comment
    )


@router.get("/{job_id}/result", response_model=JobResultRead, response_model_exclude_unset=True)
async def job_result(
    job_id: str, client: ClientDep, router_: RouterDep, vault: VaultDep, response: Response
) -> dict[str, Any]:
    """The completed job's result, with its confidential part opened from the vault."""
    # The confidential part must not linger in a browser or proxy cache.
    response.headers["Cache-Control"] = "no-store"
    job_id = job_id_or_404(job_id)
    outcome = await router_.job_result(job_id, tenant_id=client.tenant)
    answer: dict[str, Any] = {"result": outcome.result}
    if outcome.confidential_result_ref:
        grant = await router_.result_grant(job_id, tenant_id=client.tenant)
        answer["confidential_result"] = await vault.open(grant=grant.grant)
    return answer
