"""The submission outbox: no acknowledged job is lost, no half-made submission stays behind.

A submit touches two other services (the vault seals, the router stores and routes), and any
process may die between the steps. The gateway keeps a row per submission in flight
(models.JobSubmission) so that whoever comes next can finish or undo the work:

1. **Before sealing** (only jobs with confidential data), the row is written as ``sealing`` and
   committed (the request's transaction so far: one session per request), so a crash after the
   vault's seal leaves a trace.
2. The vault seals (idempotent per job id: a retry gets the same reference back).
3. The router stores and routes the job (idempotent per job id). On success the row is deleted
   and the job's webhook event queued in the request's next transaction, which commits before
   the 202 leaves.
4. If the router cannot be reached (or fails), the row becomes ``pending`` in the request's
   transaction and the client gets 202 with status ``pending``: the job is durable in the
   gateway and :class:`SubmissionSweeper` forwards it until the router takes it. While the
   router is away a pass tries one pending job, not each (the outage is one fact, not one per
   job), and none backs off for it: all go at the first pass after the router returns.

The sweeper also finds ``sealing`` rows older than ``submission_grace_seconds``: their request
died between steps 1 and 3 and the client never got a 2xx. If the router has the job after all
(the crash came after step 3), the row is just deleted; otherwise the vault discards the job's
sealed data (audited) and the row goes, so no confidential data is orphaned. A client that
retries with its Idempotency-Key reuses the job id, so nothing is duplicated either way.

Several gateway replicas may sweep at once: a row is claimed with a conditional update of its
``next_attempt_at`` before it is worked on.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.api.job_events import enqueue_job_event
from services.gateway.clients.router import RouterClient
from services.gateway.clients.vault import VaultClient
from services.gateway.db.models import JobSubmission
from services.gateway.db.repository import SubmissionRepository
from services.gateway.domain.views import client_view
from services.gateway.metrics import PENDING_SUBMISSIONS
from shared.db import utcnow
from shared.errors import ServiceUnavailable
from shared.http import UpstreamError

logger = logging.getLogger("taskroute.gateway.submissions")

SEALING = "sealing"
PENDING = "pending"
# Retries of a job the router (or, for a dead submission, the vault) answered with an error
# back off from the poll interval to this.
MAX_BACKOFF = timedelta(minutes=5)
BATCH = 100


class Outcome(enum.Enum):
    """What one attempt at a row came to."""

    SETTLED = "settled"  # forwarded or rolled back: the row is gone
    KEPT = "kept"  # failed; retried after its backoff
    ROUTER_AWAY = "router away"  # a forward found the router unreachable; retried next pass


async def begin_sealing(
    session: AsyncSession,
    *,
    job_id: str,
    tenant_id: str,
    submission: dict[str, Any],
    grace: timedelta,
) -> None:
    """Step 1: the durable trace of a submission about to seal data.

    Commits ``session`` (the request's, which has only read so far): the row must be durable
    before the vault is called. The session stays usable for the rest of the request."""
    now = utcnow()
    await SubmissionRepository(session).put(
        job_id=job_id,
        tenant_id=tenant_id,
        state=SEALING,
        submission=submission,
        now=now,
        next_attempt_at=now + grace,
    )
    await session.commit()


async def park_pending(
    session: AsyncSession, *, job_id: str, tenant_id: str, submission: dict[str, Any]
) -> datetime:
    """Step 4: keep a job the router could not take; due for forwarding at once. Returns the
    time the job was acknowledged (the row's: a sealing row's time if it had one), which the
    job keeps as its ``created_at`` once routed."""
    now = utcnow()
    return await SubmissionRepository(session).put(
        job_id=job_id,
        tenant_id=tenant_id,
        state=PENDING,
        submission=submission,
        now=now,
        next_attempt_at=now,
    )


def pending_view(submission: dict[str, Any], *, created_at: datetime) -> dict[str, Any]:
    """The job as its client sees it while the gateway holds it for the router."""
    return {
        "id": submission["id"],
        "status": PENDING,
        "title": submission["title"],
        "description": submission["description"],
        "service": submission.get("service"),
        "priority": submission["priority"],
        "due_at": submission.get("due_at"),
        "metadata": submission.get("metadata") or {},
        "policy": submission.get("policy"),
        "has_confidential": submission.get("confidential_ref") is not None,
        "classification": None,
        "assignment": None,
        "callback_url": submission.get("callback_url"),
        "created_at": created_at,
        "updated_at": created_at,
    }


async def pending_job(
    session: AsyncSession, job_id: str, *, tenant_id: str
) -> dict[str, Any] | None:
    """The tenant's job still pending in the gateway, as its client sees it (else None)."""
    row = await SubmissionRepository(session).get_for_tenant(job_id, tenant_id=tenant_id)
    if row is None or row.state != PENDING:
        return None
    return pending_view(row.submission, created_at=row.created_at)


class SubmissionSweeper:
    """Forwards pending jobs to the router and rolls back submissions that died mid-way."""

    def __init__(
        self,
        *,
        maker: async_sessionmaker[AsyncSession],
        router: RouterClient,
        vault: VaultClient,
        poll_seconds: float,
        grace: timedelta,
    ) -> None:
        self.maker = maker
        self.router = router
        self.vault = vault
        self.poll_seconds = poll_seconds
        self.grace = grace

    async def run_forever(self) -> None:
        while True:
            try:
                await self.sweep_once(utcnow())
            except Exception as exc:  # noqa: BLE001 - a bad pass must not stop the next one
                logger.error("submission sweep failed", extra={"error_type": type(exc).__name__})
            await PENDING_SUBMISSIONS.refresh(self.maker)  # at most every 15 s
            await asyncio.sleep(self.poll_seconds)

    async def sweep_once(self, now: datetime) -> int:
        """One pass over the due rows; how many were settled (forwarded or rolled back)."""
        async with self.maker() as session:
            due = await SubmissionRepository(session).due(now=now, limit=BATCH)
        settled = 0
        router_away = False
        for row in due:
            # One pending job that found the router away stands for all of them: the rest
            # keep their turn for the next pass instead of each waiting out a connect error.
            if router_away and row.state == PENDING:
                continue
            if await self._claim(row, now):
                outcome = await self._settle(row, now)
                settled += outcome is Outcome.SETTLED
                router_away = router_away or outcome is Outcome.ROUTER_AWAY
        return settled

    async def forward_now(self, tenant_id: str, *, job_id: str | None = None) -> int:
        """Forward the tenant's due pending jobs (or only ``job_id``) at once; how many went.

        For requests answered by the router about jobs the gateway may still hold: a list,
        or an action on one job. Between the router's return and the next pass such a job
        is the gateway's only, so without this a list would leave it out and a cancel would
        not find it. Rows another replica is working on are left to it; a router that is
        still away leaves them all as they were."""
        now = utcnow()
        async with self.maker() as session:
            due = await SubmissionRepository(session).due(
                now=now, limit=BATCH, tenant_id=tenant_id, job_id=job_id, state=PENDING
            )
        forwarded = 0
        for row in due:
            if not await self._claim(row, now):
                continue
            outcome = await self._settle(row, now)
            if outcome is Outcome.ROUTER_AWAY:
                break
            forwarded += outcome is Outcome.SETTLED
        return forwarded

    async def _claim(self, row: JobSubmission, now: datetime) -> bool:
        """Take the row and move its next attempt past this one: a failure below then only
        has to note why (the claim already scheduled the retry)."""
        backoff = min(
            MAX_BACKOFF, timedelta(seconds=self.poll_seconds * 2 ** min(row.attempts, 16))
        )
        if row.state == SEALING:
            backoff = max(backoff, self.grace)
        async with self.maker() as session:
            taken = await SubmissionRepository(session).claim(row, now=now, until=now + backoff)
            await session.commit()
        return taken

    async def _settle(self, row: JobSubmission, now: datetime) -> Outcome:
        try:
            if row.state == PENDING:
                await self._forward(row)
            else:
                await self._roll_back(row)
        except (ServiceUnavailable, UpstreamError) as exc:
            # Kept for the next pass, which the claim already scheduled: backing off, since
            # the same call may well fail the same way. Not for a router that was away,
            # though: that says nothing about the job, and a job that waited out a long
            # outage must not wait minutes more once the router is back.
            away = row.state == PENDING and isinstance(exc, ServiceUnavailable)
            error = type(exc).__name__ + (
                f" {exc.status}" if isinstance(exc, UpstreamError) else ""
            )
            async with self.maker() as session:
                await SubmissionRepository(session).note_failure(
                    row.id,
                    error=error,
                    retry_at=now if away else None,  # due again at the next pass
                )
                await session.commit()
            # A router that is away fails every forward alike; one that refuses a job (a 4xx)
            # will refuse it again: either way the job stays, and the pending-jobs age gauge
            # and this line say why it is not moving.
            logger.warning(
                "pending job not forwarded" if row.state == PENDING else "dead submission kept",
                extra={"job_id": row.id, "tenant_id": row.tenant_id, "error": error},
            )
            return Outcome.ROUTER_AWAY if away else Outcome.KEPT
        async with self.maker() as session:
            await SubmissionRepository(session).delete(row.id)
            await session.commit()
        return Outcome.SETTLED

    async def _forward(self, row: JobSubmission) -> None:
        # The time the client was given as the job's creation stays its creation time.
        job = await self.router.submit_job(
            {**row.submission, "acknowledged_at": row.created_at.isoformat()}
        )
        logger.info("pending job forwarded", extra={"job_id": row.id, "status": job.get("status")})
        try:
            await enqueue_job_event(self.maker, tenant_id=row.tenant_id, job=client_view(job))
        except Exception as exc:  # noqa: BLE001 - the job is routed; a lost event is logged
            logger.error("job event not queued", extra={"error_type": type(exc).__name__})

    async def _roll_back(self, row: JobSubmission) -> None:
        try:
            await self.router.get_job(row.id, tenant_id=row.tenant_id)
            return  # the router has it: the submission got through before its process died
        except UpstreamError as exc:
            if exc.status != 404:
                raise
        discarded = await self.vault.discard_unrouted(tenant_id=row.tenant_id, job_id=row.id)
        logger.warning(
            "dead submission rolled back",
            extra={"job_id": row.id, "tenant_id": row.tenant_id, "discarded": discarded},
        )


def create_sweeper(app: FastAPI) -> SubmissionSweeper:
    settings = app.state.settings
    return SubmissionSweeper(
        maker=app.state.sessionmaker,
        router=RouterClient(app.state.router_http),
        vault=VaultClient(app.state.vault_http),
        poll_seconds=settings.submission_poll_seconds,
        grace=timedelta(seconds=settings.submission_grace_seconds),
    )
