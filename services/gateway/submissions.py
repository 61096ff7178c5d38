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
died between steps 1 and 3 and the client never got a 2xx. The sweeper withdraws the submission
at the router, naming the row's token (its creation time, which the request sends along with
the job). If the router has the job after all (the crash came after step 3), the row is just
deleted; otherwise the router will refuse that submission for good, the vault discards the
job's sealed data (audited) and the row goes, so no confidential data is orphaned. A request
that only stalled past the grace and goes on afterwards is refused by the router, or, if the
router is away by then, finds its row gone and may not park the job as pending: its client
gets a 503, and what the sweeper settled stands (nothing, once rolled back; the job, if the
router had it after all, which a retry with the same Idempotency-Key is answered with).

A client that retries with its Idempotency-Key reuses the job id, so nothing is duplicated
either way; a retry that finds the sweeper working on the job's row (claimed: it may be
discarding the sealed data because the router does not have the job) is answered 503 and does
not touch the row, so it cannot route the job with a reference the roll-back is about to
discard.

Several gateway replicas, and requests that forward a tenant's pending jobs at once, may work
on the outbox together: a row is claimed with a conditional update of its ``next_attempt_at``
before it is worked on, for longer than the attempt can take, and the attempt's outcome is
written only while the claim still holds (the same column unchanged). So one attempt at a time
works on a row, and the job's webhook event is queued once, in the transaction that deletes the
row.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.api.job_events import queue_submit_event
from services.gateway.clients.resilience import new_breaker
from services.gateway.clients.router import RouterClient
from services.gateway.clients.vault import VaultClient
from services.gateway.db.models import JobSubmission
from services.gateway.db.repository import SubmissionRepository
from services.gateway.domain.errors import SubmissionBeingSettled
from services.gateway.domain.views import client_view
from services.gateway.job_feed import JobEventFeed
from services.gateway.metrics import PENDING_SUBMISSIONS
from services.gateway.tenant_policies import TenantPolicyPusher
from shared.db import utcnow
from shared.errors import ServiceUnavailable
from shared.http import UpstreamError, UpstreamUnreachable

logger = logging.getLogger("taskroute.gateway.submissions")

SEALING = "sealing"
PENDING = "pending"
# Retries of a job the router (or, for a dead submission, the vault) answered with an error
# back off from the poll interval to this.
MAX_BACKOFF = timedelta(minutes=5)
BATCH = 100
ATTEMPT_MARGIN_SECONDS = 5.0


class Outcome(enum.Enum):
    """What one attempt at a row came to."""

    SETTLED = "settled"  # forwarded or rolled back: the row is gone
    KEPT = "kept"  # failed; retried after its backoff
    ROUTER_AWAY = "router away"  # a forward found the router unreachable; retried next pass


def outbox_token(row_created_at: datetime) -> str:
    """The token the router knows a sealing row by: its creation time, which identifies it
    (a retry that rewrites an unclaimed row keeps it; a row is deleted, never reused)."""
    return row_created_at.isoformat()


async def begin_sealing(
    session: AsyncSession,
    *,
    job_id: str,
    tenant_id: str,
    submission: dict[str, Any],
    grace: timedelta,
) -> str:
    """Step 1: the durable trace of a submission about to seal data; the row's token, which
    the submission carries to the router.

    Commits ``session`` (the request's, which has only read so far): the row must be durable
    before the vault is called. The session stays usable for the rest of the request."""
    now = utcnow()
    written = await SubmissionRepository(session).put(
        job_id=job_id,
        tenant_id=tenant_id,
        state=SEALING,
        submission=submission,
        now=now,
        next_attempt_at=now + grace,
    )
    if written is None:
        raise SubmissionBeingSettled()
    await session.commit()
    return outbox_token(written)


async def park_pending(
    session: AsyncSession, *, job_id: str, tenant_id: str, submission: dict[str, Any]
) -> datetime:
    """Step 4: keep a job the router could not take; due for forwarding at once. Returns the
    time the job was acknowledged (the row's: a sealing row's time if it had one), which the
    job keeps as its ``created_at`` once routed.

    A job with sealed data parks only its own sealing row, and only while no sweeper has
    taken it: a row rolled back meanwhile (its data discarded) must not come back as pending."""
    now = utcnow()
    repository = SubmissionRepository(session)
    token = submission.get("outbox_token")
    if token is None:
        sent = submission.get("acknowledged_at")
        acknowledged_at = await repository.put(
            job_id=job_id,
            tenant_id=tenant_id,
            state=PENDING,
            submission=submission,
            now=now,
            next_attempt_at=now,
            # The time the submit told the router: the router may have the job after all.
            created_at=datetime.fromisoformat(sent) if sent is not None else None,
        )
    else:
        acknowledged_at = await repository.park_sealing(
            job_id=job_id,
            created_at=datetime.fromisoformat(token),
            # A pending row is never withdrawn, so its forwards need no token; without one
            # they also suit a router rolled back to before it knew the field.
            submission={key: value for key, value in submission.items() if key != "outbox_token"},
            now=now,
        )
    if acknowledged_at is None:
        raise SubmissionBeingSettled()
    return acknowledged_at


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
        attempt_seconds: float,
        policies: TenantPolicyPusher | None = None,
        feed: JobEventFeed | None = None,
    ) -> None:
        self.maker = maker
        # Tenant policies the router has not confirmed, and the router's event feed, ride on
        # the same worker and poll.
        self.policies = policies
        self.feed = feed
        self.router = router
        self.vault = vault
        self.poll_seconds = poll_seconds
        self.grace = grace
        # A claim outlasts the attempt it covers, so no one else takes the row meanwhile.
        self.attempt = timedelta(seconds=attempt_seconds)

    async def run_forever(self) -> None:
        while True:
            try:
                if self.policies is not None:
                    await self.policies.push_due()
                await self.sweep_once(utcnow())
            except Exception as exc:  # noqa: BLE001 - a bad pass must not stop the next one
                logger.error("submission sweep failed", extra={"error_type": type(exc).__name__})
            try:
                if self.feed is not None:
                    await self.feed.pull()
            except Exception as exc:  # noqa: BLE001 - the events wait at the router
                logger.error("event feed pull failed", extra={"error_type": type(exc).__name__})
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
            claimed_until = await self._claim(row, now)
            if claimed_until is not None:
                outcome = await self._settle(row, claimed_until, now)
                settled += outcome is Outcome.SETTLED
                router_away = router_away or outcome is Outcome.ROUTER_AWAY
        return settled

    async def forward_now(self, tenant_id: str, *, job_id: str | None = None) -> int:
        """Forward the tenant's due pending jobs (or only ``job_id``) at once; how many the
        router now has.

        For requests answered by the router about jobs the gateway may still hold: a list,
        or an action on one job. Between the router's return and the next pass such a job
        is the gateway's only, so without this a list would leave it out and a cancel would
        not find it. Rows another replica is working on are left to it; a router that is
        still away leaves them all as they were. Best effort: whatever goes wrong here is
        logged and left to the sweeper, and the request goes on to ask the router."""
        if self.router.known_away():
            return 0  # its circuit is open: the call would be refused, so nothing is written
        now = utcnow()
        forwarded = 0
        try:
            async with self.maker() as session:
                due = await SubmissionRepository(session).due_pending(
                    tenant_id=tenant_id, now=now, limit=BATCH, job_id=job_id
                )
            for row in due:
                claimed_until = await self._claim(row, now)
                if claimed_until is None:
                    continue
                outcome = await self._settle(row, claimed_until, now)
                if outcome is Outcome.ROUTER_AWAY:
                    break
                forwarded += outcome is Outcome.SETTLED
        except Exception as exc:  # noqa: BLE001 - the sweeper's next pass tries again
            logger.error(
                "pending jobs not forwarded on request",
                extra={"tenant_id": tenant_id, "error_type": type(exc).__name__},
            )
        return forwarded

    async def holds_pending(self, tenant_id: str, job_id: str) -> bool:
        """Whether the gateway still holds the tenant's job as pending (not yet forwarded)."""
        async with self.maker() as session:
            row = await SubmissionRepository(session).get_for_tenant(job_id, tenant_id=tenant_id)
        return row is not None and row.state == PENDING

    async def _claim(self, row: JobSubmission, now: datetime) -> datetime | None:
        """Take the row for one attempt: the claim's end, which is also the next attempt's
        time after a backoff (so a failure only has to note why), or None if another sweeper
        or request has the row."""
        backoff = min(
            MAX_BACKOFF, timedelta(seconds=self.poll_seconds * 2 ** min(row.attempts, 16))
        )
        if row.state == SEALING:
            backoff = max(backoff, self.grace)
        until = now + max(backoff, self.attempt)
        async with self.maker() as session:
            taken = await SubmissionRepository(session).claim(row, now=now, until=until)
            await session.commit()
        return until if taken else None

    async def _settle(self, row: JobSubmission, claimed_until: datetime, now: datetime) -> Outcome:
        job: dict[str, Any] | None = None
        try:
            if row.state == PENDING:
                job = await self._forward(row)
            else:
                await self._roll_back(row)
        except Exception as exc:  # noqa: BLE001 - one row's failure must not end the pass
            # Kept for the next attempt, which the claim already scheduled: backing off, since
            # the same call may well fail the same way. Not for a router that was away,
            # though: that says nothing about the job, and a job that waited out a long
            # outage must not wait minutes more once the router is back.
            away = row.state == PENDING and isinstance(exc, UpstreamUnreachable)
            error = type(exc).__name__ + (
                f" {exc.status}" if isinstance(exc, UpstreamError) else ""
            )
            async with self.maker() as session:
                await SubmissionRepository(session).note_failure(
                    row.id,
                    claimed_until=claimed_until,
                    error=error,
                    retry_at=now if away else None,  # due again at the next pass
                )
                await session.commit()
            # A router that is away fails every forward alike; one that refuses a job (a 4xx)
            # or fails on it (a 500) will likely do so again: either way the job stays, and
            # the pending-jobs age gauge and this line say why it is not moving.
            expected = isinstance(exc, ServiceUnavailable | UpstreamError)
            (logger.warning if expected else logger.error)(
                "pending job not forwarded" if row.state == PENDING else "dead submission kept",
                extra={"job_id": row.id, "tenant_id": row.tenant_id, "error": error},
            )
            return Outcome.ROUTER_AWAY if away else Outcome.KEPT
        async with self.maker() as session:
            repository = SubmissionRepository(session)
            # The job's event goes with the row: whoever deletes it queues the event, once.
            if await repository.delete_claimed(row.id, claimed_until=claimed_until):
                if job is not None:
                    await queue_submit_event(session, tenant_id=row.tenant_id, job=client_view(job))
                await session.commit()
            else:
                # The claim ran out during the attempt and another took the row: it settles
                # it (the router's submit is idempotent per job id, so the job is there once).
                logger.warning("submission claim lost", extra={"job_id": row.id})
        return Outcome.SETTLED

    async def _forward(self, row: JobSubmission) -> dict[str, Any]:
        # The time the client was given as the job's creation stays its creation time.
        job: dict[str, Any] = await self.router.submit_job(
            {**row.submission, "acknowledged_at": row.created_at.isoformat()}
        )
        logger.info("pending job forwarded", extra={"job_id": row.id, "status": job.get("status")})
        return job

    async def _roll_back(self, row: JobSubmission) -> None:
        # Withdrawn at the router first: from then on the submission cannot store the job
        # there, even if its request only stalled and goes on later; only then is the data
        # discarded. Asking the router whether it has the job would leave that window open.
        withdrawn = await self.router.withdraw_submission(
            row.id, tenant_id=row.tenant_id, outbox_token=outbox_token(row.created_at)
        )
        if not withdrawn:
            return  # the router has it: the submission got through before its process died
        discarded = await self.vault.discard_unrouted(tenant_id=row.tenant_id, job_id=row.id)
        logger.warning(
            "dead submission rolled back",
            extra={"job_id": row.id, "tenant_id": row.tenant_id, "discarded": discarded},
        )


def create_sweeper(app: FastAPI) -> SubmissionSweeper:
    settings = app.state.settings
    router = RouterClient(app.state.router_http)
    return SubmissionSweeper(
        maker=app.state.sessionmaker,
        router=router,
        policies=TenantPolicyPusher(maker=app.state.sessionmaker, router=router),
        feed=JobEventFeed(
            maker=app.state.sessionmaker,
            router=RouterClient(app.state.router_http, breaker=new_breaker("router-feed")),
        ),
        vault=VaultClient(app.state.vault_http),
        poll_seconds=settings.submission_poll_seconds,
        grace=timedelta(seconds=settings.submission_grace_seconds),
        # A forward is one router call, a roll-back a router and a vault call, each within
        # the upstream timeout; the margin covers the database statements around them.
        attempt_seconds=2 * settings.upstream_timeout_seconds + ATTEMPT_MARGIN_SECONDS,
    )
