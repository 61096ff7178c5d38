"""A submit and the gateway's withdrawal of it, forced into the interleaving that matters.

The gateway's sweeper withdraws a submission it takes for dead (services/gateway/submissions.py)
while that submission may still reach the router. The dangerous moment is a submit that has
inserted the job and found no withdrawal, but not yet committed: a withdrawal then must wait
for it and see the job, not record itself beside it. This runs that moment on purpose, on both
backends (tests/router/test_races.py runs the two at random, on PostgreSQL).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.router.db.models import Job, JobWithdrawal
from services.router.domain.classifier import LexiconClassifier
from services.router.domain.errors import SubmissionWithdrawn
from services.router.settings import RouterSettings
from services.router.sweeper import sweep_once
from services.router.workflow import JobWorkflow
from tests.router.factories import TENANT, job_submission, new_uuid, outbox_token

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
    job_id, token = new_uuid(), outbox_token(NOW)
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


async def test_a_submit_with_a_token_past_the_retention_is_refused_as_withdrawn(
    maker: async_sessionmaker[AsyncSession], router_settings: RouterSettings
):
    """Withdrawals are forgotten after a while, so a token older than the router remembers
    them cannot be let through: its submission may have been withdrawn and its data gone."""
    retention = timedelta(seconds=router_settings.withdrawal_retention_seconds)
    for token, stored in (
        (outbox_token(NOW - retention, seconds_later=-1), False),
        (outbox_token(NOW - retention, seconds_later=60), True),
    ):
        submission = job_submission(id=new_uuid(), confidential_ref="rec_1", outbox_token=token)
        async with maker() as session:
            if stored:
                _, created = await workflow(session, router_settings).submit(submission, now=NOW)
                assert created
                await session.commit()
            else:
                with pytest.raises(SubmissionWithdrawn):
                    await workflow(session, router_settings).submit(submission, now=NOW)
                await session.rollback()  # what the route does with the refusal
        async with maker() as session:
            assert (await session.get(Job, submission.id) is not None) is stored


async def test_the_sweeper_forgets_withdrawals_after_twice_the_retention(
    maker: async_sessionmaker[AsyncSession], router_settings: RouterSettings
):
    retention = timedelta(seconds=router_settings.withdrawal_retention_seconds)
    old, recent = new_uuid(), new_uuid()
    async with maker() as session:
        for job_id, at in (
            (old, NOW - 2 * retention - timedelta(seconds=1)),
            (recent, NOW - 2 * retention + timedelta(seconds=60)),
        ):
            # The token's own time is later (the gateway's clock may run ahead): what is
            # forgotten goes by when the router recorded the withdrawal.
            token = outbox_token(at, seconds_later=retention.total_seconds())
            await workflow(session, router_settings).withdraw(
                job_id, tenant_id=TENANT, outbox_token=token, now=at
            )
        await session.commit()
    report = await sweep_once(
        maker, settings=router_settings, classifier=LexiconClassifier(), now=NOW
    )
    assert report.forgotten == 1
    async with maker() as session:
        left = (await session.scalars(select(JobWithdrawal.job_id))).all()
    assert left == [recent]
