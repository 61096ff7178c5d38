"""The router's event feed into the webhook outbox: every change a client hears of, once.

The router writes each event a client hears of into its outbox, in the transaction that makes
the change (services/router/api/events.py). Each pass here reads the oldest of them, queues
their ``job.<status>`` webhooks in this gateway's outbox and commits, then has the router
delete them. A crash between the two steps reads the events again next time; an endpoint
holds one delivery per event id, so nothing is delivered twice, and several replicas may pull
at once. The request that made a change usually queued its event already
(services/gateway/api/job_events.py: the fast path); the feed adds the changes the router makes
alone and any event that path lost or left to it.

Each event carries its job as it is when the feed is read, so a ``job.queued`` event sent late
may show a job claimed since: the type says what happened, the object what is true now.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.api.job_events import queue_job_event
from services.gateway.clients.router import RouterClient
from services.gateway.db.repository import WebhookRepository
from services.gateway.domain.views import client_view
from shared.db import open_session
from shared.errors import ServiceUnavailable
from shared.request_context import current_request_id, set_request_id

logger = logging.getLogger("taskroute.gateway.job_feed")

# Events per read: one transaction and one call to mark them.
FEED_PAGE = 200
# Pages per pass at most: a backlog is taken over several passes, so the worker's other
# duties (forwarding pending jobs, pushing tenant policies) keep their turn.
PAGES_PER_PASS = 10


class JobEventFeed:
    def __init__(
        self,
        *,
        maker: async_sessionmaker[AsyncSession],
        router: RouterClient,
        page: int = FEED_PAGE,
    ) -> None:
        self.maker = maker
        self.router = router
        self.page = page

    async def pull(self) -> int:
        """Queue the webhooks of everything the router has published and mark it; how many
        events were taken. A router that is away leaves them for the next pass."""
        # Its own request id, as a request's would be, so the router's log lines of one pull
        # are found together.
        previous = current_request_id()
        set_request_id(uuid.uuid4().hex)
        try:
            return await self._pull()
        finally:
            set_request_id(previous)

    async def _pull(self) -> int:
        taken = 0
        for _ in range(PAGES_PER_PASS):
            if self.router.known_away():
                break
            try:
                read, handled = await self._take_page()
            except ServiceUnavailable:
                break  # the outage shows in readiness and the breaker; the events wait
            if handled:
                await self.router.mark_published(handled)
            taken += len(handled)
            if read < self.page:
                break
        return taken

    async def _take_page(self) -> tuple[int, list[int]]:
        """Queue the webhooks of one page; how many events it had, and the outbox ids of
        those now in this gateway's outbox (or of tenants without endpoints)."""
        events = await self.router.unpublished_events(limit=self.page, with_jobs_of=[])
        if not events:
            return 0, []
        # Looked up after the first read: every event in it happened before, so an endpoint
        # made since cannot miss one of them. Events only the second read has may be newer
        # than the lookup: they wait for the next pass.
        first_read = {int(event["id"]) for event in events}
        endpoints = await self._endpoints({_tenant_of(event) for event in events})
        wanted = sorted(tenant for tenant, ids in endpoints.items() if ids)
        if wanted:
            # The page again, with the jobs the webhooks carry (only for these tenants:
            # building a job's answer is most of a page's cost at the router).
            events = await self.router.unpublished_events(limit=self.page, with_jobs_of=wanted)
        handled: list[int] = []
        async with open_session(self.maker) as session:
            for event in events:
                if int(event["id"]) not in first_read:
                    continue
                endpoint_ids = endpoints[_tenant_of(event)]
                if endpoint_ids:
                    if event.get("job") is None:
                        continue  # not in the second read's answer as asked: the next pass
                    await self._queue(session, event, endpoint_ids)
                handled.append(int(event["id"]))
            await session.commit()
        return len(first_read), handled

    async def _endpoints(self, tenant_ids: set[str]) -> dict[str, list[str]]:
        """Each tenant's live webhook endpoints (most have none)."""
        async with open_session(self.maker) as session:
            return await WebhookRepository(session).live_endpoint_ids_of(sorted(tenant_ids))

    async def _queue(
        self, session: AsyncSession, event: dict[str, Any], endpoint_ids: list[str]
    ) -> None:
        """Queue the event's webhooks in ``session``'s transaction."""
        try:
            await queue_job_event(
                session,
                tenant_id=_tenant_of(event),
                job=client_view(event["job"]),
                seq=int(event["seq"]),
                status=str(event["to_status"]),
                endpoint_ids=endpoint_ids,
            )
        except (ValidationError, KeyError) as exc:
            # An event whose job this gateway cannot read (a newer router's field?) would be
            # read again at the head of every page, holding back every tenant's: it is logged
            # and let go. Anything else (a database error, a fault of this code) ends the
            # page unmarked, to be read again.
            logger.error(
                "feed event not queued",
                extra={"feed_event_id": event.get("id"), "error_type": type(exc).__name__},
            )


def _tenant_of(event: dict[str, Any]) -> str:
    """The event's tenant (a router of the previous release names it only in the job)."""
    tenant = event.get("tenant_id") or event["job"]["tenant_id"]
    return str(tenant)
