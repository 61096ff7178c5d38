"""Job events for webhooks, queued when a transition is made through the gateway.

A pure ASGI layer (innermost, see :mod:`services.gateway.api.edge`) watches the routes that
change a job: cancel, claim, release, reject, complete and an operator's manual routing. After
a 2xx answer it queues ``job.<new status>`` for every webhook endpoint of the job's tenant in
the outbox, in its own committed transaction, before the answer leaves (so a client that reacts
to the answer finds the event queued). Idempotent replays never reach this layer.

The submit route (``POST /v1/jobs``, the hottest) queues its event itself with
:func:`queue_job_event`, in the request's transaction that also settles the submission outbox:
one transaction fewer per submit, and the same guarantee (committed before the 202 leaves, only
for a job the router took; a replay does not run the route).

This is the fast path. The router's event feed (:mod:`services.gateway.job_feed`) brings every
change a client hears of again, including those the router makes alone (a lease expiring, an
escalation, an ``unroutable`` job routed later) and any this layer lost to a crash between the
router's commit and its own. An event's id is derived from its job and its place in the job's
timeline, the same on both paths, and an endpoint holds one delivery per event id: queued
twice, an event is delivered once.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.api.schemas import JobRead
from services.gateway.db.repository import WebhookRepository
from services.gateway.domain import webhooks as rules
from services.gateway.domain.views import client_view
from shared.db import open_session, utcnow

logger = logging.getLogger("taskroute.gateway.job_events")

# The POST routes that move a job, by audience. Each route keeps the router's full answer for
# this layer (remember_moved_job): the answers it sends lack the event's seq, and a member's
# the tenant.
# A submit (POST /v1/jobs) is not watched: the route queues its event in its own transaction.
_CLIENT_ACTION = re.compile(r"^/v1/jobs/[^/]+/cancel$")
_MEMBER_ACTION = re.compile(r"^/v1/team/jobs/[^/]+/(?:claim|release|reject|complete)$")
_OPERATOR_ACTION = re.compile(r"^/v1/admin/jobs/[^/]+/route$")
# Event ids are derived from (job, the event's seq in the job's timeline): the same whether the
# request that made the change or the router's feed queues it, or a request run twice.
_EVENT_NAMESPACE = uuid.UUID("6f1c2a0e-3b8d-4e55-9a41-7c0d5e2b9f13")
_MOVED_JOB = "taskroute_moved_job"


def remember_moved_job(scope: Scope, job: dict[str, Any]) -> None:
    """Keep the router's answer to a move (with the event's seq, and the tenant that a
    member's answer hides) for this layer, so queuing the event needs no second call to the
    router."""
    scope.setdefault("state", {})[_MOVED_JOB] = job


class JobEventsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not (
                _CLIENT_ACTION.match(path)
                or _MEMBER_ACTION.match(path)
                or _OPERATOR_ACTION.match(path)
            )
        ):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        if start is None:
            return
        if 200 <= int(start["status"]) < 300:
            await queue_moved_job_event(scope)
        await send(start)
        await send({"type": "http.response.body", "body": b"".join(chunks)})


async def queue_moved_job_event(scope: Scope) -> None:
    """Queue the event of the move the request's route made (the router's answer it kept,
    see remember_moved_job), in its own transaction; failures are logged, not raised: the
    change is done and the answer must go (the router's feed brings the event later)."""
    job: dict[str, Any] | None = scope.get("state", {}).get(_MOVED_JOB)
    if job is None:
        return
    try:
        await enqueue_job_event(
            scope["app"].state.sessionmaker, tenant_id=str(job["tenant_id"]), job=client_view(job)
        )
    except Exception as exc:  # noqa: BLE001 - see above
        logger.error("job event not queued", extra={"error_type": type(exc).__name__})


async def enqueue_job_event(
    maker: async_sessionmaker[AsyncSession], *, tenant_id: str, job: dict[str, Any]
) -> None:
    """Queue ``job.<status>`` for the tenant's endpoints (its own transaction)."""
    if rules.job_event_type(str(job.get("status"))) is None:
        return
    async with open_session(maker) as session:
        if await queue_job_event(session, tenant_id=tenant_id, job=job):
            await session.commit()


async def queue_job_event(
    session: AsyncSession,
    *,
    tenant_id: str,
    job: dict[str, Any],
    seq: int | None = None,
    status: str | None = None,
    endpoint_ids: list[str] | None = None,
) -> bool:
    """Add ``job.<status>`` for the tenant's endpoints to ``session``'s transaction (the
    caller commits); whether anything was added.

    ``seq`` and ``status``: the event's, when it is not the job's latest (the router's feed
    sends each event with its job as it is now); by default the job's own. ``endpoint_ids``:
    the tenant's live endpoints, when the caller has just read them.

    The submit route calls this in its own transaction, so the event commits with the
    submission before the 202 leaves, at no extra transaction."""
    status = str(job.get("status")) if status is None else status
    event_type = rules.job_event_type(status)
    if event_type is None:
        return False
    repository = WebhookRepository(session)
    if endpoint_ids is None:
        endpoint_ids = await repository.live_endpoint_ids(tenant_id)
    if not endpoint_ids:
        return False  # most tenants: no payload to build, nothing to write
    now = utcnow()
    event_seq = int(job["event_seq"]) if seq is None else seq
    event_id = str(uuid.uuid5(_EVENT_NAMESPACE, f"{job['id']}:{event_seq}"))
    payload = json.dumps(
        {
            "id": event_id,
            "type": event_type,
            "created_at": now.isoformat(),
            "data": {"object": JobRead.model_validate(job).model_dump(mode="json")},
        },
        separators=(",", ":"),
    )
    await repository.enqueue(
        tenant_id=tenant_id,
        event_id=event_id,
        event_type=event_type,
        payload=payload,
        now=now,
        endpoint_ids=endpoint_ids,
    )
    return True


# A submit's own event, its routing, is the second of the job's timeline (after its creation).
SUBMIT_ROUTING_SEQ = 2


async def queue_submit_event(session: AsyncSession, *, tenant_id: str, job: dict[str, Any]) -> bool:
    """:func:`queue_job_event` for a submit's answer, if it is the job just routed. A stored
    job that has moved on since (a retried submit, a pending job forwarded late) is left to
    the router's feed: its latest event may be one clients are not told of (an escalation that
    found no other team), which would give its status a second id."""
    if job.get("event_seq") != SUBMIT_ROUTING_SEQ:
        return False
    return await queue_job_event(session, tenant_id=tenant_id, job=job)
