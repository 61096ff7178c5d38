"""The per-team load counter (``team_loads``, kept by triggers, migration 0005) against a real
``COUNT(*)`` after random transitions: in sequence on every backend, and concurrently on
PostgreSQL. The clock is an argument; nothing sleeps."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from services.router.db.models import Job, TeamLoad
from services.router.db.repository import JobRepository
from services.router.domain.classifier import LexiconClassifier
from services.router.domain.routing import DataPolicy
from services.router.domain.taxonomy import Priority, Tier
from services.router.reviews import ReviewWorkflow
from services.router.settings import RouterSettings
from services.router.sweeper import sweep_once
from services.router.workflow import JobSubmission, JobWorkflow, TeamFields, TeamWorkflow
from shared.db import create_sessionmaker
from shared.errors import TaskrouteError
from tests.router.factories import ALWAYS, TENANT, new_uuid

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
CLINICAL = (
    "Code the adverse event narratives from the case report forms to MedDRA terms and flag "
    "serious adverse events for the clinical trial."
)
MEMBERS = [new_uuid() for _ in range(6)]
ACTIONS = (
    "submit",
    "submit",
    "claim",
    "claim",
    "release",
    "complete",
    "reject",
    "cancel",
    "approve",
    "send_back",
    "route",
    "capacity",
    "sweep",
    "delete",
)


@pytest.fixture
async def engine(databases: dict[str, str]) -> AsyncIterator[AsyncEngine]:
    pool = create_async_engine(databases["router"], pool_size=10, max_overflow=0)
    try:
        yield pool
    finally:
        await pool.dispose()


class Model:
    """Random work against one router database; every action is its own transaction."""

    def __init__(
        self, maker: async_sessionmaker[AsyncSession], settings: RouterSettings, seed: int
    ) -> None:
        self.maker = maker
        self.settings = settings.model_copy(update={"triage_threshold": 0.0})
        self.classifier = LexiconClassifier()
        self.rng = random.Random(seed)
        self.teams: list[str] = []
        self.jobs: list[str] = []
        self.now = T0
        self.refused = 0
        self.aborted = 0

    async def _in_transaction(self, work: Callable[[JobWorkflow], Awaitable[Any]]) -> None:
        try:
            async with self.maker() as session, session.begin():
                await work(JobWorkflow(session, settings=self.settings, classifier=self.classifier))
        except TaskrouteError:
            self.refused += 1  # a 4xx: the transaction rolled back
        except DBAPIError:
            self.aborted += 1  # e.g. a deadlock PostgreSQL broke: rolled back whole

    async def add_team(self, index: int) -> None:
        async with self.maker() as session, session.begin():
            team = await TeamWorkflow(session).create(
                TeamFields(
                    name=f"Clinical {index} {new_uuid()[:8]}",
                    country=("IN", "PH", "IE")[index % 3],
                    timezone="Asia/Kolkata",
                    working_hours=ALWAYS,
                    tier=Tier.KPO,
                    skills=["clinical"],
                    certifications=["HIPAA"],
                    languages=["en"],
                    capacity=3 + index,
                    hourly_rate=20.0 + index,
                    quality=0.8,
                    active=True,
                ),
                now=self.now,
            )
            self.teams.append(team.id)

    async def job_row(self, job_id: str) -> Job | None:
        async with self.maker() as session:
            return await session.get(Job, job_id)

    async def step(self) -> None:
        rng = self.rng
        self.now += timedelta(minutes=rng.choice((0, 1, 5, 30)))
        now = self.now
        action = rng.choice(ACTIONS)
        if action == "submit" or not self.jobs:
            job_id = new_uuid()
            self.jobs.append(job_id)
            policy = DataPolicy(
                allowed_countries=rng.choice((None, frozenset({"IN", "IE"}))),
                require_review=rng.random() < 0.3,
            )
            submission = JobSubmission(
                id=job_id,
                tenant_id=TENANT,
                title="Adverse events",
                description=CLINICAL,
                service=None,
                priority=rng.choice(list(Priority)),
                due_at=None,
                policy=policy,
                metadata={},
                confidential_ref=None,
                callback_url=None,
            )
            await self._in_transaction(lambda flow: flow.submit(submission, now=now))
            return
        job_id = rng.choice(self.jobs)
        job = await self.job_row(job_id)
        if job is None:
            return
        team = job.team_id or rng.choice(self.teams)
        member = job.lease_member_id or rng.choice(MEMBERS)
        if action == "claim":
            await self._in_transaction(
                lambda flow: flow.claim(team, job_id, member_id=rng.choice(MEMBERS), now=now)
            )
        elif action == "release":
            await self._in_transaction(
                lambda flow: flow.release(team, job_id, member_id=member, reason=None, now=now)
            )
        elif action == "complete":
            await self._in_transaction(
                lambda flow: flow.complete(
                    team,
                    job_id,
                    member_id=member,
                    result={"ok": True},
                    confidential_result=None,
                    now=now,
                )
            )
        elif action == "reject":
            await self._in_transaction(
                lambda flow: flow.reject(team, job_id, member_id=member, reason="no", now=now)
            )
        elif action == "cancel":
            await self._in_transaction(
                lambda flow: flow.cancel(job_id, tenant_id=TENANT, reason=None, now=now)
            )
        elif action in ("approve", "send_back"):
            reviewer = job.review_team_id or team
            other = rng.choice(MEMBERS)

            async def review(flow: JobWorkflow) -> Any:
                reviews = ReviewWorkflow(flow)
                if action == "approve":
                    return await reviews.approve(
                        reviewer, job_id, member_id=other, comment=None, now=now
                    )
                return await reviews.send_back(
                    reviewer, job_id, member_id=other, comment="again", now=now
                )

            await self._in_transaction(review)
        elif action == "route":
            target = rng.choice(self.teams)
            await self._in_transaction(
                lambda flow: flow.route_manually(
                    job_id, team_id=target, actor="operator", domain=None, now=now
                )
            )
        elif action == "capacity":
            target = rng.choice(self.teams)
            capacity = rng.randint(0, 6)

            async def resize(flow: JobWorkflow) -> Any:
                return await TeamWorkflow(flow.session).update(
                    target, {"capacity": capacity}, expected_version=None, now=now
                )

            await self._in_transaction(resize)
        elif action == "sweep":
            self.now += timedelta(minutes=rng.choice((20, 200)))
            try:
                await sweep_once(
                    self.maker, settings=self.settings, classifier=self.classifier, now=self.now
                )
            except DBAPIError:
                self.aborted += 1
        elif action == "delete" and rng.random() < 0.2:
            # Any writer keeps the counter right, not only the workflow: here a raw DELETE.
            try:
                async with self.maker() as session, session.begin():
                    await session.execute(delete(Job).where(Job.id == job_id))
            except DBAPIError:
                self.aborted += 1  # a deadlock PostgreSQL broke, as for the workflow's steps
            else:
                self.jobs.remove(job_id)
        elif action == "delete":
            # ... and a raw UPDATE moving a job to another team.
            target = rng.choice(self.teams)
            try:
                async with self.maker() as session, session.begin():
                    await session.execute(
                        update(Job).where(Job.id == job_id).values(team_id=target)
                    )
            except DBAPIError:
                self.aborted += 1


async def assert_counters_match(maker: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    async with maker() as session:
        repo = JobRepository(session)
        counted = await repo.counted_team_loads()
        assert await repo.team_loads() == counted
        rows = dict((await session.execute(select(TeamLoad.team_id, TeamLoad.active_jobs))).all())
        teams = (await session.execute(text("SELECT id FROM teams"))).scalars().all()
    # Every team has its row, none negative, each equal to the count (zeros included).
    assert set(rows) == set(teams)
    assert {team: rows[team] for team in rows if rows[team]} == counted
    assert min(rows.values(), default=0) >= 0
    return counted


async def test_the_counter_follows_random_transitions(engine, router_settings):
    maker = create_sessionmaker(engine)
    model = Model(maker, router_settings, seed=20261127)
    for index in range(4):
        await model.add_team(index)
    for step in range(400):
        await model.step()
        if step % 50 == 49:
            await assert_counters_match(maker)
    counted = await assert_counters_match(maker)
    assert sum(counted.values()) > 0
    assert model.refused > 0


async def test_one_team_s_load_is_what_all_loads_say(engine, router_settings):
    maker = create_sessionmaker(engine)
    model = Model(maker, router_settings, seed=7)
    for index in range(3):
        await model.add_team(index)
    for _ in range(60):
        await model.step()
    async with maker() as session:
        repo = JobRepository(session)
        everyone = await repo.team_loads()
        assert {t: await repo.team_load(t) for t in model.teams} == {
            t: everyone.get(t, 0) for t in model.teams
        }


@pytest.mark.postgres_only
async def test_the_counter_is_right_under_concurrent_transitions(engine, router_settings):
    maker = create_sessionmaker(engine)
    seeder = Model(maker, router_settings, seed=1)
    for index in range(4):
        await seeder.add_team(index)
    for _ in range(40):
        await seeder.step()
    workers = []
    for seed in range(8):
        worker = Model(maker, router_settings, seed=100 + seed)
        worker.teams = list(seeder.teams)
        worker.jobs = list(seeder.jobs)
        worker.now = seeder.now
        workers.append(worker)

    async def run(worker: Model) -> None:
        for _ in range(60):
            await worker.step()

    await asyncio.gather(*(run(worker) for worker in workers))
    counted = await assert_counters_match(maker)
    assert sum(counted.values()) >= 0
    # Concurrency really happened: some actions lost a race and were refused.
    assert sum(worker.refused for worker in workers) > 0
