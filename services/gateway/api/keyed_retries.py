"""Keyed retries of a change whose first attempt was applied but never answered.

The Idempotency-Key record is the gateway's; a cancel, claim, release, reject or completion is
applied in the router's database. When the router applied the first attempt but its answer
never became the stored one (the call timed out or the connection dropped, so the 5xx released
the claim; or this process died or failed to store the answer, so the claim was taken over
later), the retry runs the change again and the router refuses it: "already cancelled", "not
queued", "not your team's job". Stripe's semantics want the first answer instead.

Every attempt under a key sends the router the id the gateway reserved with that key
(:func:`~services.gateway.api.edge.reserved_resource_id`), and the router stores it on the event
the change makes. A refused retry asks for the job's event with that id: there is one exactly
when an earlier attempt of this key was applied.
"""

from __future__ import annotations

from typing import Any

from services.gateway.api.edge import reserved_resource_id
from services.gateway.clients.router import RouterClient
from services.gateway.domain.principal import Principal


async def cancelled_under_this_key(
    router_: RouterClient, job_id: str, *, client: Principal
) -> dict[str, Any] | None:
    """The job, if a keyed cancel refused with 409 is a retry whose earlier attempt did it."""
    request_id = reserved_resource_id()
    if request_id is None:
        return None  # no key: the refusal is the answer
    timeline = await router_.job_events(job_id, tenant_id=client.tenant, request_id=request_id)
    if not timeline.get("data"):
        return None
    return await router_.get_job(job_id, tenant_id=client.tenant)


async def member_acted_under_this_key(
    router_: RouterClient, job_id: str, *, member: Principal
) -> dict[str, Any] | None:
    """The job, if a keyed member action refused with 404 or 409 is a retry whose earlier
    attempt did it.

    Only while the job still stands as that action left it (its latest event is that one): a
    retry never shows a later state of a job that has moved on, perhaps to another team.
    """
    request_id = reserved_resource_id()
    if request_id is None:
        return None
    timeline = await router_.job_events(job_id, tenant_id=None, request_id=request_id)
    events = timeline.get("data", [])
    if not events or events[-1].get("actor") != f"member:{member.member}":
        return None
    job = await router_.get_job(job_id, tenant_id=None)
    latest, ours = job.get("event_seq"), events[-1].get("seq")
    if not isinstance(latest, int) or latest != ours:
        return None  # another event since (a heartbeat makes none)
    return job
