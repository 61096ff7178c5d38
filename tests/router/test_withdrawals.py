"""A submit and the gateway's withdrawal of it, forced into the interleaving that matters.

The gateway's sweeper withdraws a submission it takes for dead (services/gateway/submissions.py)
while that submission may still reach the router. The dangerous moment is a submit that has
inserted the job and found no withdrawal, but not yet committed: a withdrawal then must wait
for it and see the job, not record itself beside it. This runs that moment on purpose, on both
backends (tests/router/test_races.py runs the two at random, on PostgreSQL).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.router.domain.classifier import LexiconClassifier
from services.router.domain.routing import DataPolicy
from services.router.domain.taxonomy import Priority
from services.router.settings import RouterSettings
from services.router.workflow import JobSubmission, JobWorkflow
from shared.db import create_engine, create_sessionmaker
from tests.router.factories import TENANT, new_uuid

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
# How long the withdrawal is given to (wrongly) get through while the submit is open.
BLOCKED_FOR_SECONDS = 0.5


@pytest.fixture
async def engine(databases: dict[str, str]) -> AsyncIterator[AsyncEngine]:
    pool = create_engine(databases["router"])
    try:
        yield pool
    finally:
        await pool.dispose()


def submission(job_id: str, token: str) -> JobSubmission:
    return JobSubmission(
        id=job_id,
        tenant_id=TENANT,
        title="Code adverse events",
        description="Code the adverse events of the trial protocol to MedDRA terms.",
        service=None,
        priority=Priority.NORMAL,
        due_at=None,
        policy=DataPolicy.from_json({}),
        metadata={},
        confidential_ref="rec_" + job_id,
        callback_url=None,
        outbox_token=token,
    )


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
    engine: AsyncEngine, router_settings: RouterSettings
):
    maker = create_sessionmaker(engine)
    job_id, token = new_uuid(), new_uuid()
    async with maker() as submitting:
        job, created = await workflow(submitting, router_settings).submit(
            submission(job_id, token), now=NOW
        )
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
