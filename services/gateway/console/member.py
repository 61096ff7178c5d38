"""The member workspace: the team's queue, claim, a job page, confidential data on demand,
heartbeats, release / reject / complete, and the browser's end-to-end key.

Every action calls the same route function the REST API runs for a member (so the router's
lease checks, the vault's grants and audit, and the gateway's views apply unchanged) and queues
the same webhook event the API would. Confidential data is fetched only by the page's script on
a button press (a POST with the CSRF token, answered ``no-store``), never rendered into HTML,
never put in a URL.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from services.gateway.api import member_keys, team_jobs
from services.gateway.api.deps import RouterDep, SessionDep, VaultDep
from services.gateway.api.job_events import queue_moved_job_event
from services.gateway.api.schemas import JobComplete, JobReject, JobRelease
from services.gateway.console import views
from services.gateway.console.web import (
    BadForm,
    CsrfHeaderDep,
    FormDep,
    MemberUser,
    console_router,
    render,
    see_other,
)
from services.gateway.db.repository import MemberRepository
from services.gateway.domain.errors import JobNotFound
from services.gateway.domain.views import job_id_or_404, member_view
from shared import sealed_envelope

router = console_router()

# The whole queue on one page: a team's live work (queued + in progress) is bounded by its
# capacity and backlog; 100 is the API's page limit.
QUEUE_PAGE = 100
_OPEN_STATUSES = frozenset({"queued", "in_progress"})
NOTICES = {
    "claimed": "You claimed the job. Its lease is kept alive while this page is open.",
    "released": "The job is back in the team's queue.",
    "rejected": "The job was passed on to the next eligible team.",
    "completed": "The job is completed. Thank you.",
}


def _object_field(form: dict[str, str], name: str, *, required: bool) -> dict[str, Any] | None:
    """A result field: a JSON object as typed, or plain text kept as ``{"text": ...}``."""
    text = form.get(name, "").strip()
    if not text:
        if required:
            raise BadForm(f"Fill in the {name.replace('_', ' ')}.")
        return None
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            label = name.replace("_", " ")
            raise BadForm(f"The {label} starts with '{{' but is not valid JSON.") from None
        if isinstance(value, dict):
            return value
    return {"text": text}


@router.get("/queue")
async def queue_page(
    request: Request, user: MemberUser, router_: RouterDep, done: str | None = None
) -> Response:
    """The team's queued and in-progress jobs."""
    page = await team_jobs.team_queue(
        member=user.principal, router_=router_, status_=None, limit=QUEUE_PAGE, cursor=None
    )
    jobs = [views.queue_row(job, member_id=user.principal.member) for job in page["data"]]
    return render(
        request,
        "queue.html",
        {
            "user": user,
            "jobs": jobs,
            "notice": NOTICES.get(done or ""),
            "has_more": page.get("has_more"),
        },
    )


@router.post("/jobs/{job_id}/claim")
async def claim(
    job_id: str, request: Request, user: MemberUser, _form: FormDep, router_: RouterDep
) -> Response:
    """Claim a queued job and open its page."""
    job = await team_jobs.claim(
        job_id=job_id, member=user.principal, router_=router_, request=request
    )
    await queue_moved_job_event(request.scope)
    return see_other(f"/console/jobs/{job['id']}?done=claimed")


async def _team_job(router_: RouterDep, user: MemberUser, job_id: str) -> dict[str, Any]:
    """A live job of the member's own team; anything else looks unknown (404)."""
    job = await router_.get_job(job_id_or_404(job_id), tenant_id=None)
    assignment = job.get("assignment") or {}
    if assignment.get("team_id") != user.principal.team or job.get("status") not in _OPEN_STATUSES:
        raise JobNotFound()
    return member_view(job)


@router.get("/jobs/{job_id}")
async def job_page(
    job_id: str,
    request: Request,
    user: MemberUser,
    router_: RouterDep,
    session: SessionDep,
    done: str | None = None,
) -> Response:
    """One job: description, lease, confidential data on demand, and the actions."""
    job = await _team_job(router_, user, job_id)
    row = await MemberRepository(session).get(user.principal.member, team_id=user.principal.team)
    key_id = None
    if row is not None and row.public_key is not None:
        key_id = sealed_envelope.key_id_for(sealed_envelope.load_public_key(row.public_key))
    return render(
        request,
        "job.html",
        {
            "user": user,
            "job": views.queue_row(job, member_id=user.principal.member),
            "raw": job,
            "notice": NOTICES.get(done or ""),
            "member_key_id": key_id,
        },
    )


@router.post("/jobs/{job_id}/confidential")
async def confidential(
    job_id: str,
    user: MemberUser,
    _csrf: CsrfHeaderDep,
    router_: RouterDep,
    vault: VaultDep,
    session: SessionDep,
) -> Response:
    """The confidential data for the page's script (lease holder only; audited by the vault)."""
    response = JSONResponse({})
    body = await team_jobs.read_confidential(
        job_id=job_id,
        member=user.principal,
        router_=router_,
        vault=vault,
        session=session,
        response=response,
    )
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.post("/jobs/{job_id}/heartbeat")
async def heartbeat(
    job_id: str, user: MemberUser, _csrf: CsrfHeaderDep, router_: RouterDep
) -> Response:
    """Extend the lease while the job's page is open."""
    job = await team_jobs.heartbeat(job_id=job_id, member=user.principal, router_=router_)
    lease = job.get("lease") or {}
    return JSONResponse({"status": job.get("status"), "expires_at": lease.get("expires_at")})


@router.post("/jobs/{job_id}/release")
async def release(
    job_id: str, request: Request, user: MemberUser, form: FormDep, router_: RouterDep
) -> Response:
    """Give the job back to the team's queue."""
    reason = form.get("reason", "").strip()
    body = JobRelease(reason=reason) if reason else None
    await team_jobs.release(
        job_id=job_id, member=user.principal, router_=router_, request=request, body=body
    )
    await queue_moved_job_event(request.scope)
    return see_other("/console/queue?done=released")


@router.post("/jobs/{job_id}/reject")
async def reject(
    job_id: str, request: Request, user: MemberUser, form: FormDep, router_: RouterDep
) -> Response:
    """Refuse the job for the team, with a reason."""
    body = JobReject(reason=form.get("reason", ""))
    await team_jobs.reject(
        job_id=job_id, body=body, member=user.principal, router_=router_, request=request
    )
    await queue_moved_job_event(request.scope)
    return see_other("/console/queue?done=rejected")


@router.post("/jobs/{job_id}/complete")
async def complete(
    job_id: str,
    request: Request,
    user: MemberUser,
    form: FormDep,
    router_: RouterDep,
    vault: VaultDep,
) -> Response:
    """Complete the job with the result form (a confidential result is sealed by the vault)."""
    body = JobComplete(
        result=_object_field(form, "result", required=True),
        confidential_result=_object_field(form, "confidential_result", required=False),
    )
    await team_jobs.complete(
        job_id=job_id,
        body=body,
        member=user.principal,
        router_=router_,
        vault=vault,
        request=request,
    )
    await queue_moved_job_event(request.scope)
    return see_other("/console/queue?done=completed")


@router.get("/keys")
async def keys_page(request: Request, user: MemberUser, session: SessionDep) -> Response:
    """The member's end-to-end key: made in this browser, only its public half registered."""
    row = await MemberRepository(session).get(user.principal.member, team_id=user.principal.team)
    key_id = None
    if row is not None and row.public_key is not None:
        key_id = sealed_envelope.key_id_for(sealed_envelope.load_public_key(row.public_key))
    return render(request, "keys.html", {"user": user, "member_key_id": key_id})


@router.post("/keys")
async def register_key(
    request: Request,
    user: MemberUser,
    _csrf: CsrfHeaderDep,
    session: SessionDep,
    router_: RouterDep,
) -> Response:
    """Register the public half of a key pair the browser made (JSON ``{"public_key"}``)."""
    try:
        payload = json.loads(await request.body())
    except ValueError:
        raise BadForm("Send the public key as JSON.") from None
    if not isinstance(payload, dict):
        raise BadForm("Send the public key as a JSON object.")
    body = member_keys.MemberKeyPut.model_validate({"public_key": payload.get("public_key")})
    answer = await member_keys.put_member_key(
        body=body, member=user.principal, session=session, router_=router_
    )
    return JSONResponse({"key_id": answer["key_id"]})
