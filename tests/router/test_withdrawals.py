"""A submit and the gateway's withdrawal of it, forced into the interleaving that matters.

The gateway's sweeper withdraws a submission it takes for dead (services/gateway/submissions.py)
while that submission may still reach the router. The dangerous moment is a submit that has
inserted the job and found no withdrawal, but not yet committed: a withdrawal then must wait
for it and see the job, not record itself beside it. This runs that moment on purpose, on both
backends (tests/router/test_races.py runs the two at random, on PostgreSQL).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.router.domain.classifier import LexiconClassifier
from services.router.settings import RouterSettings
from services.router.workflow import JobWorkflow
from tests.router.factories import TENANT, job_submission, new_uuid

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
# How long the withdrawal is given to (wrongly) get through while the submit is open.
BLOCKED_FOR_SECONDS = 0.5


def workflow(session: AsyncSession, settings: RouterSettings) -> JobWorkflow:
    return JobWorkflow(session, settings=settings, classifier=LexiconClassifier())


async def withdraw(
    maker: async_sessionmaker[AsyncSession], settings: RouterSettings, job_id: str, token: str
) -> bool:
    async with maker() as session:
        withdrawn = await workflow(session, settings).withdraw(
            job_id, tenant_id=TENANT, outbox_token=token, now=NOW
        )
        await session.commit()
        return withdrawn


async def test_a_withdrawal_waits_for_a_submit_in_flight_and_then_sees_its_job(
    maker: async_sessionmaker[AsyncSession], router_settings: RouterSettings
):
    job_id, token = new_uuid(), new_uuid()
    submission = job_submission(id=job_id, confidential_ref="rec_" + job_id, outbox_token=token)
    async with maker() as submitting:
        job, created = await workflow(submitting, router_settings).submit(submission, now=NOW)
        assert created  # inserted, and no withdrawal found: not yet committed
        withdrawing = asyncio.create_task(withdraw(maker, router_settings, job_id, token))
        await asyncio.sleep(BLOCKED_FOR_SECONDS)
        assert not withdrawing.done(), "the withdrawal did not wait for the submit in flight"
        await submitting.commit()
    assert await withdrawing is False  # the job is stored: its data must be kept
    async with maker() as session:
        stored = await workflow(session, router_settings).jobs.get(job_id)
        assert stored is not None
        assert not await workflow(session, router_settings).jobs.is_withdrawn(
            job_id, outbox_token=token
        )
