"""The event feed: the router's outbox of what clients hear of, drained by the gateway.

An event a client hears of (see ``domain.lifecycle.reported_to_client``) gets a row in
``job_event_outbox`` in the transaction that makes the change. The gateway reads the oldest
rows with their events (and the jobs of tenants with webhook endpoints), queues their
webhooks in its own outbox (deduplicated by event id, so reading one twice, from two replicas
or after a crash, queues it once), then has the rows deleted. So every change reaches the
tenant's webhooks at least once, including the ones the router makes alone (a lease expiring,
an escalation, an unroutable job routed later), and none is lost to a crash between the
router's commit and the gateway's.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import StringConstraints

from services.router.api.deps import require_gateway
from services.router.api.schemas import (
    FEED_PAGE_MAX,
    FeedEventList,
    FeedEventRead,
    PublishedCreate,
    PublishedRead,
    job_read,
)
from services.router.db.repository import JobRepository
from shared.db import SessionDep

router = APIRouter(
    prefix="/internal/v1/events", tags=["events"], dependencies=[Depends(require_gateway)]
)


@router.get("/unpublished")
async def unpublished_events(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=FEED_PAGE_MAX)] = 100,
    jobs: Literal["all", "named"] = "all",
    with_jobs_of: Annotated[
        list[Annotated[str, StringConstraints(max_length=64)]] | None,
        Query(max_length=FEED_PAGE_MAX),
    ] = None,
) -> FeedEventList:
    """The oldest events not yet published, with their jobs as they are now: every event's
    (``jobs=all``, what a gateway of the previous release reads), or only those of the
    tenants in ``with_jobs_of`` (``jobs=named``: building a job's answer is most of a page's
    cost, and most tenants have no webhook endpoint to send it to)."""
    repository = JobRepository(session)
    events = await repository.unpublished_events(limit=limit)
    wanted = set(with_jobs_of or ())
    loaded = await repository.jobs_by_id(
        {e.job_id for e in events if jobs == "all" or e.tenant_id in wanted}
    )
    return FeedEventList(
        data=[
            FeedEventRead(
                id=event.outbox_id,
                seq=event.seq,
                at=event.at,
                type=event.type,
                to_status=event.to_status,
                job_id=event.job_id,
                tenant_id=event.tenant_id,
                job=job_read(loaded[event.job_id]) if event.job_id in loaded else None,
            )
            for event in events
        ]
    )


@router.post("/published")
async def mark_published(body: PublishedCreate, session: SessionDep) -> PublishedRead:
    """The gateway holds these events in its webhook outbox: they leave the feed."""
    return PublishedRead(published=await JobRepository(session).mark_published(body.ids))
