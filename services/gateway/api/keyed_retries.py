"""Keyed retries of a change whose first attempt was applied but never answered.

The Idempotency-Key record is the gateway's; a cancel, claim, release, reject or completion is
applied in the router's database. When the router applied the first attempt but its answer
never became the stored one (the call timed out or the connection dropped, so the 5xx released
the claim; or this process died or failed to store the answer, so the claim was taken over
later), the retry runs the change again and the router refuses it: "already cancelled", "not
queued", "not your team's job". Stripe's semantics want the first answer instead.

The router keeps no request ids, so the gateway recognises its own earlier attempt: this is a
retry (the key's claim was taken again after a release or a take-over, not its first attempt),
and the job's timeline shows the change made by this caller no earlier than the key's first
attempt began (less clock skew). The same change made by another request of the same caller in
that window is answered the same way, which is what the caller asked for.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from services.gateway.api.edge import reserved_resource_id
from services.gateway.clients.router import RouterClient
from services.gateway.db.repository import IdempotencyRepository
from services.gateway.domain import idempotency
from services.gateway.domain.jobs import JobStatus
from services.gateway.domain.principal import Principal

# How far the router's clock may trail the gateway's when telling whether a change happened
# after a key's first attempt began.
CLOCK_SKEW = timedelta(seconds=5)

# The reason the router records for a cancel without one (services/router/workflow.py).
DEFAULT_CANCEL_REASON = "cancelled by the client"

MemberAction = Literal["claim", "release", "reject", "complete"]

# The timeline events each member action writes (services/router/workflow.py): a completion
# under a review policy is a submission for review.
MEMBER_ACTION_EVENTS: dict[MemberAction, tuple[str, ...]] = {
    "claim": ("claimed",),
    "release": ("released",),
    "reject": ("rejected",),
    "complete": ("completed", "submitted_for_review"),
}


async def cancelled_under_this_key(
    session: AsyncSession,
    router_: RouterClient,
    job_id: str,
    *,
    client: Principal,
    reason: str | None,
) -> dict[str, Any] | None:
    """The job, if a keyed cancel refused with 409 is a retry whose earlier attempt did it
    (cancelled by this tenant, for this reason, since the key's first attempt)."""
    began = await _retry_began_at(session, client)
    if began is None:
        return None
    job = await router_.get_job(job_id, tenant_id=client.tenant)
    if job.get("status") != JobStatus.CANCELLED.value:
        return None
    timeline = await router_.job_events(job_id, tenant_id=client.tenant, types=["cancelled"])
    cancels = [e for e in timeline.get("data", []) if e.get("to_status") == "cancelled"]
    if not cancels or not _made_by(cancels[-1], f"client:{client.tenant}", since=began):
        return None
    if cancels[-1].get("reason") != (reason or DEFAULT_CANCEL_REASON):
        return None
    return job


async def member_acted_under_this_key(
    session: AsyncSession,
    router_: RouterClient,
    job_id: str,
    *,
    member: Principal,
    action: MemberAction,
) -> dict[str, Any] | None:
    """The job, if a keyed member action refused with 404 or 409 is a retry whose earlier
    attempt did it (this member's event of that action since the key's first attempt).

    Only while the job still stands as that action left it (its last change is that event):
    a retry never shows a later state of a job that has moved on, perhaps to another team.
    """
    began = await _retry_began_at(session, member)
    if began is None:
        return None
    timeline = await router_.job_events(
        job_id, tenant_id=None, types=list(MEMBER_ACTION_EVENTS[action])
    )
    events = timeline.get("data", [])
    if not events or not _made_by(events[-1], f"member:{member.member}", since=began):
        return None
    job = await router_.get_job(job_id, tenant_id=None)
    if _time(job.get("updated_at")) != _time(events[-1].get("at")):
        return None  # changed since
    return job


async def _retry_began_at(session: AsyncSession, principal: Principal) -> datetime | None:
    """When the key's first attempt began, if this request is a later attempt of it."""
    resource_id = reserved_resource_id()
    if resource_id is None:
        return None  # no key: the refusal is the answer
    times = await IdempotencyRepository(session).claim_times(
        scope=idempotency.scope_of(principal), resource_id=resource_id
    )
    if times is None:
        return None
    first_attempt, this_attempt = times
    if this_attempt is not None and this_attempt <= first_attempt:
        return None  # the key's first attempt: nothing earlier can have done it
    return first_attempt


def _made_by(event: dict[str, Any], actor: str, *, since: datetime) -> bool:
    at = _time(event.get("at"))
    return event.get("actor") == actor and at is not None and at >= since - CLOCK_SKEW


def _time(value: Any) -> datetime | None:
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at
