"""The router's background sweeper: nothing stays stuck because nobody moved it.

Every ``sweep_interval_seconds`` one pass, in its own transaction:

1. jobs ``in_progress`` whose lease has expired go back to ``queued`` (event ``lease_expired``);
2. ``unroutable`` jobs whose ``retry_at`` has come are routed again (teams or capacity may have
   changed); those still without a team wait another ``unroutable_retry_seconds``;
3. ``queued`` jobs nobody claimed before their ``escalate_at`` pass to the next eligible team
   (event ``escalated``), or stay where they are when no other team is eligible (event
   ``escalation_held``; see :meth:`JobWorkflow.escalate_unclaimed`);
4. the active jobs of tenants whose data policy changed, and the jobs of teams that changed, in
   the last ``policy_recheck_seconds`` are held to the policy again (a submission that read
   the old policy just before the change may have landed after it, a claim may have won a race
   with the change's move; :meth:`JobWorkflow.recheck_policies`);
5. withdrawals (submissions the gateway rolled back) older than twice
   ``withdrawal_retention_seconds`` are forgotten: a submit with a token that old is refused
   anyway (services/router/domain/withdrawals.py).

Each change is a conditional UPDATE on the state the sweeper read, so several replicas sweeping
at once cannot requeue a job twice or undo a heartbeat that landed in between. A failed pass is
logged (error type only) and the next one tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.router.domain.classifier import Classifier
from services.router.settings import RouterSettings
from services.router.workflow import JobWorkflow

logger = logging.getLogger("taskroute.router.sweeper")


@dataclass(frozen=True)
class SweepReport:
    requeued: int
    rerouted: int
    escalated: int = 0
    forgotten: int = 0
    policed: int = 0


async def sweep_once(
    maker: async_sessionmaker[AsyncSession],
    *,
    settings: RouterSettings,
    classifier: Classifier,
    now: datetime,
) -> SweepReport:
    async with maker() as session, session.begin():
        workflow = JobWorkflow(session, settings=settings, classifier=classifier)
        requeued = await workflow.requeue_expired_leases(now=now)
    async with maker() as session, session.begin():
        workflow = JobWorkflow(session, settings=settings, classifier=classifier)
        rerouted = await workflow.retry_unroutable(now=now)
    async with maker() as session, session.begin():
        workflow = JobWorkflow(session, settings=settings, classifier=classifier)
        escalated = await workflow.escalate_unclaimed(now=now)
    async with maker() as session, session.begin():
        workflow = JobWorkflow(session, settings=settings, classifier=classifier)
        policed = await workflow.recheck_policies(now=now)
    async with maker() as session, session.begin():
        workflow = JobWorkflow(session, settings=settings, classifier=classifier)
        forgotten = await workflow.forget_withdrawals(now=now)
    return SweepReport(
        requeued=requeued,
        rerouted=rerouted,
        escalated=escalated,
        forgotten=forgotten,
        policed=policed,
    )


async def run_sweeper(
    maker: async_sessionmaker[AsyncSession],
    *,
    settings: RouterSettings,
    classifier: Classifier,
    clock: Callable[[], datetime],
    stop: asyncio.Event,
) -> None:
    """Sweep every ``settings.sweep_interval_seconds`` until ``stop`` is set.

    Stopping waits for the pass under way: cancelling one mid-query would strand its database
    connection (asyncpg cannot hand a connection back from the middle of a statement).
    """
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.sweep_interval_seconds)
        if stop.is_set():
            return
        try:
            report = await sweep_once(maker, settings=settings, classifier=classifier, now=clock())
        except Exception as exc:  # noqa: BLE001 - a failed pass must not end the sweeper
            logger.error("sweep failed", extra={"error_type": type(exc).__name__})
            continue
        counts = {
            "requeued": report.requeued,
            "rerouted": report.rerouted,
            "escalated": report.escalated,
            "policed": report.policed,
            "forgotten_withdrawals": report.forgotten,
        }
        if any(counts.values()):
            logger.info("sweep", extra=counts)
