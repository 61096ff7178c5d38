"""Client routes: submit jobs, follow them, read their results.

Every call is scoped to the key's tenant: the router answers 404 for another tenant's job, the
same answer as for an unknown id.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import Body, Query, Request, Response, status

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
from services.gateway.db.repository import SubmissionRepository, TenantRepository
from services.gateway.domain.errors import InvalidApiKey
from services.gateway.domain.jobs import JobStatus
from services.gateway.domain.policy import DataPolicy, PolicyNarrowing, effective_policy
from services.gateway.domain.views import client_view, job_id_or_404
from shared.db import new_id
from shared.errors import ServiceUnavailable
from shared.failpoints import failpoint
from shared.http import UpstreamError

router = public_router(prefix="/v1/jobs", tag="jobs")


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
    tenant = await TenantRepository(session).get(client.tenant)
    if tenant is None:
        raise InvalidApiKey()  # the key outlived its tenant
    narrowing = None
    if body.data_policy is not None:
        narrowing = PolicyNarrowing(
            allowed_countries=None
            if body.data_policy.allowed_countries is None
            else tuple(body.data_policy.allowed_countries),
            required_certifications=tuple(body.data_policy.required_certifications),
            require_e2e=body.data_policy.require_e2e,
        )
    policy = effective_policy(DataPolicy.from_json(tenant.policy), narrowing)
    job_id = reserved_resource_id() or new_id()  # an Idempotency-Key's id, kept by retries
    submission: dict[str, Any] = {
        "id": job_id,
        "tenant_id": tenant.id,
        "title": body.title,
        "description": body.description,
        "service": body.service.value if body.service else None,
        "priority": body.priority.value,
        "due_at": body.due_at.isoformat() if body.due_at else None,
        "policy": policy.to_json(),
        "metadata": body.metadata,
        "confidential_ref": None,
        "callback_url": body.callback_url,
    }
    # Sealed first, since the router needs the reference; the outbox row written before the
    # seal lets a sweeper undo it if this process dies before the router has the job.
    if body.confidential is not None or body.confidential_sealed is not None:
        await submissions.begin_sealing(
            request.app.state.sessionmaker,
            job_id=job_id,
            tenant_id=tenant.id,
            submission=submission,
            grace=timedelta(seconds=request.app.state.settings.submission_grace_seconds),
        )
        submission["confidential_ref"] = await _seal(
            vault, body, tenant_id=tenant.id, job_id=job_id
        )
        failpoint("gateway.submit.after_seal")
    outbox = SubmissionRepository(session)
    try:
        job = await router_.submit_job(submission)
    except ServiceUnavailable:
        # The router is away: the job is kept here (committed before the 202 leaves) and
        # forwarded by the sweeper when it is back.
        created_at = await submissions.park_pending(
            session, job_id=job_id, tenant_id=tenant.id, submission=submission
        )
        return submissions.pending_view(submission, created_at=created_at)
    if submission["confidential_ref"] is not None:
        await outbox.delete(job_id)
    return client_view(job)


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
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    """List the tenant's jobs, newest first."""
    page = await router_.list_jobs(
        tenant_id=client.tenant,
        status=status_.value if status_ else None,
        limit=limit,
        cursor=cursor,
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
async def job_events(job_id: str, client: ClientDep, router_: RouterDep) -> dict[str, Any]:
    """The job's timeline: every status change with time, actor and reason."""
    return await router_.job_events(job_id_or_404(job_id), tenant_id=client.tenant)


@router.get("/{job_id}/routing", response_model=RoutingRead)
async def job_routing(job_id: str, client: ClientDep, router_: RouterDep) -> dict[str, Any]:
    """Why the job went where it went: eligible and excluded teams, and the scores."""
    return await router_.job_routing(job_id_or_404(job_id), tenant_id=client.tenant)


@router.post("/{job_id}/cancel", response_model=JobRead)
async def cancel_job(
    job_id: str,
    client: ClientDep,
    router_: RouterDep,
    body: Annotated[JobCancel | None, Body()] = None,
) -> dict[str, Any]:
    """Cancel a job that is not yet completed."""
    job = await router_.cancel_job(
        job_id_or_404(job_id), tenant_id=client.tenant, reason=body.reason if body else None
    )
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
