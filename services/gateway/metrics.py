"""The gateway's Prometheus metrics: webhook deliveries (services/gateway/clients/webhooks.py).

* ``taskroute_gateway_webhook_attempts_total{outcome}`` counts every POST attempt to a receiver
  by outcome: ``succeeded`` (2xx), ``http_error`` (any other status), ``transport_error``
  (connection refused, timeout, TLS ...), ``endpoint_deleted`` (dropped without a POST). The
  attempt rate is their sum; the failure ratio is everything but ``succeeded`` over it.
* ``taskroute_gateway_webhook_deliveries_total{result}`` counts deliveries settled for good:
  ``delivered``, or ``failed`` once the retry schedule (~26 h) is spent.
* ``taskroute_gateway_webhook_attempt_duration_seconds{outcome}``: one attempt's POST, from
  sending to the receiver's answer (or the error).
* ``taskroute_gateway_webhook_outbox_backlog`` and ``..._outbox_oldest_age_seconds``: pending
  deliveries in the outbox and the age of the oldest, read from the database by each replica's
  delivery worker at most every ``BACKLOG_REFRESH_SECONDS``. Every replica reports the same
  database-wide numbers: aggregate with ``max``, not ``sum``.

And the submission outbox (services/gateway/submissions.py):

* ``taskroute_gateway_pending_jobs`` and ``..._oldest_age_seconds``: jobs accepted as
  ``pending`` and not yet taken by the router, and the age of the oldest, counted by each
  replica's sweeper as above (``max``, not ``sum``). An old one means the router has been away
  that long, or keeps refusing the job (the sweeper logs why, ``pending job not forwarded``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import Select, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.db.models import JobSubmission, WebhookDelivery
from services.gateway.domain.webhooks import DeliveryStatus
from shared.db import utcnow

logger = logging.getLogger("taskroute.gateway.metrics")

# The outbox is counted at most this often per replica (a scrape interval): one indexed COUNT.
BACKLOG_REFRESH_SECONDS = 15.0
# A slow database must not hold the delivery worker: past this the count waits for next time.
BACKLOG_QUERY_TIMEOUT_SECONDS = 2.0
# From a receiver answering at once to the 10 s delivery timeout.
ATTEMPT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OUTCOMES = ("succeeded", "http_error", "transport_error", "endpoint_deleted")

WEBHOOK_ATTEMPTS = Counter(
    "taskroute_gateway_webhook_attempts_total",
    "Webhook delivery attempts, by outcome (succeeded, http_error, transport_error, "
    "endpoint_deleted).",
    ["outcome"],
)
WEBHOOK_DELIVERIES = Counter(
    "taskroute_gateway_webhook_deliveries_total",
    "Webhook deliveries settled for good, by result (delivered, failed: retries spent).",
    ["result"],
)
WEBHOOK_ATTEMPT_SECONDS = Histogram(
    "taskroute_gateway_webhook_attempt_duration_seconds",
    "Time of one webhook POST, from sending to the receiver's answer or the error.",
    ["outcome"],
    buckets=ATTEMPT_BUCKETS,
)
WEBHOOK_BACKLOG = Gauge(
    "taskroute_gateway_webhook_outbox_backlog",
    "Webhook deliveries pending in the outbox (database-wide; aggregate with max).",
)
WEBHOOK_OLDEST_AGE = Gauge(
    "taskroute_gateway_webhook_outbox_oldest_age_seconds",
    "Age of the oldest pending webhook delivery, 0 when none (database-wide; aggregate with max).",
)
PENDING_JOBS = Gauge(
    "taskroute_gateway_pending_jobs",
    "Jobs accepted as pending and not yet taken by the router (database-wide; aggregate with max).",
)
PENDING_OLDEST_AGE = Gauge(
    "taskroute_gateway_pending_jobs_oldest_age_seconds",
    "Age of the oldest job still pending in the gateway, 0 when none (database-wide; aggregate "
    "with max).",
)
# Every label value exists from the start, so rates and ratios have series before any event.
for _outcome in OUTCOMES:
    WEBHOOK_ATTEMPTS.labels(outcome=_outcome)
    WEBHOOK_ATTEMPT_SECONDS.labels(outcome=_outcome)
for _result in ("delivered", "failed"):
    WEBHOOK_DELIVERIES.labels(result=_result)


def observe_delivery_attempt(
    *,
    endpoint_deleted: bool,
    status_code: int | None,
    error: str | None,
    seconds: float,
    final: bool,
) -> None:
    """Count one attempt as the delivery worker recorded it (``final``: no retry follows)."""
    if endpoint_deleted:
        outcome = "endpoint_deleted"
    elif error is None:
        outcome = "succeeded"
    else:
        outcome = "http_error" if status_code is not None else "transport_error"
    WEBHOOK_ATTEMPTS.labels(outcome=outcome).inc()
    if outcome != "endpoint_deleted":
        WEBHOOK_ATTEMPT_SECONDS.labels(outcome=outcome).observe(seconds)
    if final:
        WEBHOOK_DELIVERIES.labels(result="delivered" if outcome == "succeeded" else "failed").inc()


class Backlog:
    """An outbox's backlog gauges (how many rows wait, the age of the oldest), counted from the
    database at most every ``BACKLOG_REFRESH_SECONDS`` by whoever works that outbox."""

    def __init__(
        self, name: str, count: Gauge, oldest_age: Gauge, statement: Select[int, datetime]
    ):
        self.name = name
        self.count = count
        self.oldest_age = oldest_age
        self.statement = statement  # one row: the count and the oldest creation time
        self._last_refresh: float | None = None

    async def refresh(
        self, maker: async_sessionmaker[AsyncSession], *, force: bool = False
    ) -> bool:
        """Count into the gauges unless done in the last ``BACKLOG_REFRESH_SECONDS`` (``force``
        counts anyway); True if counted. Never raises: a worker must not stop for its gauges."""
        now = time.monotonic()
        if (
            not force
            and self._last_refresh is not None
            and now - self._last_refresh < BACKLOG_REFRESH_SECONDS
        ):
            return False
        self._last_refresh = now
        try:
            async with asyncio.timeout(BACKLOG_QUERY_TIMEOUT_SECONDS), maker() as session:
                row = (await session.execute(self.statement)).one()
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            logger.warning(
                "backlog not counted", extra={"outbox": self.name, "error_type": type(exc).__name__}
            )
            return False
        waiting, oldest = int(row[0]), row[1]
        self.count.set(waiting)
        self.oldest_age.set(max(0.0, (utcnow() - oldest).total_seconds()) if oldest else 0.0)
        return True


WEBHOOK_OUTBOX = Backlog(
    "webhooks",
    WEBHOOK_BACKLOG,
    WEBHOOK_OLDEST_AGE,
    select(func.count(), func.min(WebhookDelivery.created_at)).where(
        WebhookDelivery.status == DeliveryStatus.PENDING.value
    ),
)
PENDING_SUBMISSIONS = Backlog(
    "submissions",
    PENDING_JOBS,
    PENDING_OLDEST_AGE,
    # "sealing" rows are submissions in flight (or dead ones the sweeper rolls back), not jobs
    # a client was told are pending.
    select(func.count(), func.min(JobSubmission.created_at)).where(
        JobSubmission.state == "pending"
    ),
)
