"""The webhook delivery worker: drains the outbox of every gateway replica's database.

Each round claims due deliveries with a conditional UPDATE (see
:class:`services.gateway.db.repository.WebhookRepository`), posts each signed event, and records
the attempt. Runs in the gateway's lifespan; several replicas may run it at once. Receivers see
each event at least once (a worker that dies after the POST but before recording the attempt
posts it again after its claim lapses), hence ``Taskroute-Event-Id`` for deduplication.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.db.models import WebhookDelivery, WebhookEndpoint
from services.gateway.db.repository import WebhookRepository
from services.gateway.domain import webhooks as rules
from shared.db import utcnow

logger = logging.getLogger("taskroute.gateway.webhooks")

# A receiver has this long to answer; Stripe allows a little more, but a receiver should
# acknowledge at once and work afterwards.
DELIVERY_TIMEOUT_SECONDS = 10.0
# A claim outlives the longest POST with room to record it; past it another replica may retry.
CLAIM_LEASE = timedelta(seconds=60)
# Deliveries per round: a few concurrent POSTs keep one slow receiver from stalling the rest.
BATCH_SIZE = 20
# Only the start of a receiver's error is worth keeping in the attempt log.
MAX_ERROR_CHARS = 200


class WebhookSender:
    def __init__(
        self,
        *,
        maker: async_sessionmaker[AsyncSession],
        pepper: bytes,
        backoff_base: timedelta,
        poll_seconds: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.maker = maker
        self.pepper = pepper
        self.backoff_base = backoff_base
        self.poll_seconds = poll_seconds
        self.http = httpx.AsyncClient(
            timeout=DELIVERY_TIMEOUT_SECONDS,
            follow_redirects=False,  # a redirect could point the signed event anywhere
            transport=transport,
            headers={"User-Agent": "taskroute-webhooks"},
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def run_forever(self) -> None:
        while True:
            try:
                await self.deliver_due()
            except Exception as exc:  # noqa: BLE001 - retried next round; never kill the worker
                logger.warning("webhook round failed", extra={"error_type": type(exc).__name__})
            await asyncio.sleep(self.poll_seconds)

    async def deliver_due(self) -> int:
        """One round: claim, send and record what is due now; how many were attempted."""
        async with self.maker() as session:
            claimed = await WebhookRepository(session).claim_due(
                now=utcnow(), lease=CLAIM_LEASE, limit=BATCH_SIZE
            )
            await session.commit()
        await asyncio.gather(*(self._deliver(delivery, endpoint) for delivery, endpoint in claimed))
        return len(claimed)

    async def _deliver(self, delivery: WebhookDelivery, endpoint: WebhookEndpoint) -> None:
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        if endpoint.deleted_at is not None:
            error = "endpoint deleted"
        else:
            secret = rules.open_secret(
                endpoint.sealed_secret,
                endpoint_id=endpoint.id,
                tenant_id=endpoint.tenant_id,
                pepper=self.pepper,
            )
            body = delivery.payload.encode()
            headers = {
                "Content-Type": "application/json",
                rules.SIGNATURE_HEADER: rules.signature(
                    secret, timestamp=int(time.time()), body=body
                ),
                rules.EVENT_ID_HEADER: delivery.event_id,
                rules.EVENT_TYPE_HEADER: delivery.event_type,
            }
            try:
                response = await self.http.post(endpoint.url, content=body, headers=headers)
                status_code = response.status_code
                if not response.is_success:
                    error = f"HTTP {status_code}"
            except httpx.HTTPError as exc:
                # The error's type only: its text can quote the URL, which may carry a token.
                error = type(exc).__name__
        now = utcnow()
        succeeded = error is None
        attempt = {
            "at": now.isoformat(),
            "status_code": status_code,
            "error": error[:MAX_ERROR_CHARS] if error else None,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        retry_at = (
            None
            if succeeded or endpoint.deleted_at is not None
            else rules.next_attempt_at(delivery.attempts + 1, now=now, base=self.backoff_base)
        )
        async with self.maker() as session:
            row = await session.get(WebhookDelivery, delivery.id)
            if row is None:
                return  # its endpoint (and tenant) were deleted meanwhile
            await WebhookRepository(session).record_attempt(
                row, attempt=attempt, succeeded=succeeded, retry_at=retry_at, now=now
            )
            await session.commit()
        logger.info(
            "webhook attempt",
            extra={
                "delivery_id": delivery.id,
                "event_type": delivery.event_type,
                "status_code": status_code,
                "succeeded": succeeded,
            },
        )
