"""The event feed: the router's outbox of what clients hear of, drained by the gateway.

An event a client hears of (see ``domain.lifecycle.reported_to_client``) gets a row in
``job_event_outbox`` in the transaction that makes the change. The gateway reads the oldest
rows with their events and jobs, queues their webhooks in its own outbox (deduplicated by
event id, so reading one twice, from two replicas or after a crash, queues it once), then has
the rows deleted. So every change reaches the tenant's webhooks at least once, including the
ones the router makes alone (a lease expiring, an escalation, an unroutable job routed later),
and none is lost to a crash between the router's commit and the gateway's.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

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
    session: SessionDep, limit: Annotated[int, Query(ge=1, le=FEED_PAGE_MAX)] = 100
) -> FeedEventList:
    """The oldest events not yet published, each with its job as it is now."""
    rows = await JobRepository(session).unpublished_events(limit=limit)
    return FeedEventList(
        data=[
            FeedEventRead(
                id=outbox_id,
                seq=event.seq,
                at=event.at,
                type=event.type,
                to_status=str(event.to_status),
                job=job_read(job),
            )
            for outbox_id, event, job in rows
        ]
    )


@router.post("/published")
async def mark_published(body: PublishedCreate, session: SessionDep) -> PublishedRead:
    """The gateway holds these events in its webhook outbox: they leave the feed."""
    return PublishedRead(published=await JobRepository(session).mark_published(body.ids))
