"""Races on PostgreSQL with real concurrency (issue 4 item 4, issue 6 item 3).

Each contender has its own database connection, so the database really runs the competing
transactions at once and its row locks decide the winner. SQLite serialises every write, so
these tests exist only in their PostgreSQL variant (``postgres_only``).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from services.router.app import create_app
from services.router.db.models import Job, JobEvent
from services.router.domain.classifier import LexiconClassifier
from services.router.domain.errors import InvalidTransition
from services.router.settings import RouterSettings
from services.router.sweeper import sweep_once
from services.router.workflow import JobWorkflow
from shared.db import create_sessionmaker
from tests.conftest import running
from tests.router.factories import TENANT, job_body, make_team, new_uuid, outbox_token

pytestmark = pytest.mark.postgres_only

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
MEMBERS = 50
JOBS = 1000
# Jobs every member claims at the same instant, before the free-for-all: 49 sure losers each.
HEAD_ON_JOBS = 5
# A member picks at random among the first jobs of the queue, as people do from a long list:
# 50 members among 100 jobs collide on about one pick in four, without retrying forever.
QUEUE_PAGE = 100
# The end-of-work race: fresh in-progress jobs per round, and sweeper replicas per round.
ROUNDS = 3
JOBS_PER_ROUND = 40
SWEEPERS = 3
ENDINGS = ("completed", "cancelled", "released", "lease_expired")
# Submissions raced by the gateway sweeper's withdrawal of each, all at once.
WITHDRAWN_RACES = 60


@pytest.fixture
async def engine(databases: dict[str, str]) -> AsyncIterator[AsyncEngine]:
    """A pool with one connection per member: nobody waits for a connection, only for rows."""
    pool = create_async_engine(databases["router"], pool_size=MEMBERS, max_overflow=0)
    try:
        yield pool
    finally:
        await pool.dispose()


async def queued_jobs(
    maker: async_sessionmaker[AsyncSession], team: Any, count: int, *, at: datetime
) -> list[str]:
    """``count`` jobs queued for ``team``, each with its routing event, in two bulk inserts."""
    ids = [new_uuid() for _ in range(count)]
    rows = [
        {
            "id": job_id,
            "tenant_id": TENANT,
            "status": "queued",
            "title": "Code adverse events",
            "description": "Code the adverse events of the trial to MedDRA terms.",
            "priority": "normal",
            "priority_rank": 1,
            "job_metadata": {},
            "policy": {"allowed_countries": None, "required_certifications": []},
            "tier": "KPO",
            "domain": "clinical",
            "confidence": 1.0,
            "reasons": [],
            "team_id": team.id,
            "team_name": team.name,
            "assigned_at": at,
            "assignment_score": 1.0,
            "rejected_team_ids": [],
            "event_seq": 1,
            "created_at": at + timedelta(microseconds=index),
            "updated_at": at,
        }
        for index, job_id in enumerate(ids)
    ]
    events = [
        {
            "job_id": job_id,
            "seq": 1,
            "at": at,
            "type": "routed",
            "from_status": None,
            "to_status": "queued",
            "actor": "router",
            "reason": f"routed to {team.name}",
        }
        for job_id in ids
    ]
    async with maker() as session, session.begin():
        await session.execute(insert(Job), rows)
        await session.execute(insert(JobEvent), events)
    return ids


async def new_team(maker: async_sessionmaker[AsyncSession], **overrides: Any) -> Any:
    async with maker() as session, session.begin():
        return await make_team(session, **overrides)


async def events_by_job(maker: async_sessionmaker[AsyncSession]) -> dict[str, list[JobEvent]]:
    async with maker() as session:
        rows = (await session.scalars(select(JobEvent).order_by(JobEvent.seq))).all()
    grouped: dict[str, list[JobEvent]] = {}
    for event in rows:
        grouped.setdefault(event.job_id, []).append(event)
    return grouped


async def all_jobs(maker: async_sessionmaker[AsyncSession]) -> dict[str, Job]:
    async with maker() as session:
        return {job.id: job for job in (await session.scalars(select(Job))).all()}


# ----------------------------------------------------------------------------- claims


async def test_fifty_members_claim_a_thousand_jobs_exactly_once(
    engine: AsyncEngine, router_settings: RouterSettings
):
    maker = create_sessionmaker(engine)
    team = await new_team(maker, name="Clinical race", capacity=JOBS)
    job_ids = await queued_jobs(maker, team, JOBS, at=T0)
    classifier = LexiconClassifier()
    now = T0 + timedelta(minutes=1)
    members = [new_uuid() for _ in range(MEMBERS)]
    won: dict[str, list[str]] = {member: [] for member in members}
    conflicts: Counter[str] = Counter()
    start = asyncio.Event()

    async def try_claim(member: str, job_id: str) -> bool:
        """One claim in its own transaction; ``False`` for the 409 "already claimed"."""
        try:
            async with maker() as session, session.begin():
                workflow = JobWorkflow(session, settings=router_settings, classifier=classifier)
                claimed = await workflow.claim(team.id, job_id, member_id=member, now=now)
        except InvalidTransition as exc:
            # The API answers this error with 409 "Another member claimed this job first."
            status = exc.status
            conflicts[member] += status == 409
            return False
        assert claimed.lease_member_id == member
        won[member].append(job_id)
        return True

    async def head_on(member: str, job_id: str) -> bool:
        await start.wait()
        return await try_claim(member, job_id)

    # Head-on: all fifty members claim the same job at the same instant, job after job.
    for job_id in job_ids[:HEAD_ON_JOBS]:
        start.clear()
        contenders = [asyncio.create_task(head_on(member, job_id)) for member in members]
        await asyncio.sleep(0)
        start.set()
        outcomes = await asyncio.gather(*contenders)
        assert outcomes.count(True) == 1
    assert sum(conflicts.values()) == HEAD_ON_JOBS * (MEMBERS - 1)

    # Free for all: each member reads the queue's first page and claims one of those jobs at
    # random, until the queue is empty. Two members often pick the same job.
    async def member_loop(member: str, seed: int) -> None:
        pick = random.Random(seed)
        # The member's view of the queue: the first page, oldest first, as the team queue
        # endpoint serves it (a plain SELECT of ids, to spend the test's time on the claims).
        page_query = (
            select(Job.id)
            .where(Job.team_id == team.id, Job.status == "queued")
            .order_by(Job.created_at, Job.id)
            .limit(QUEUE_PAGE)
        )
        while True:
            async with engine.connect() as connection:
                page = (await connection.scalars(page_query)).all()
            if not page:
                return
            await try_claim(member, pick.choice(page))

    await asyncio.gather(*(member_loop(member, seed) for seed, member in enumerate(members)))

    claims = [job_id for jobs in won.values() for job_id in jobs]
    assert len(claims) == JOBS
    assert set(claims) == set(job_ids)
    holder = {job_id: member for member, jobs in won.items() for job_id in jobs}
    jobs = await all_jobs(maker)
    events = await events_by_job(maker)
    for job_id in job_ids:
        job = jobs[job_id]
        assert job.status == "in_progress"
        assert job.lease_member_id == holder[job_id]
        assert job.event_seq == 2
        claimed = [e for e in events[job_id] if e.type == "claimed"]
        assert len(claimed) == 1
        assert claimed[0].actor == f"member:{holder[job_id]}"


# ----------------------------------------------------------------------------- endings


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


async def test_complete_cancel_release_and_lease_expiry_have_one_winner(
    engine: AsyncEngine, router_settings: RouterSettings, gateway_headers: dict[str, str]
):
    """Per job, at once: the lease holder completes and releases, the client cancels, and
    sweeper replicas (clocks just past the lease's end) requeue it. One wins; the others get
    409 or, for a sweeper, skip the job; the final state is the winner's."""
    settings = router_settings.model_copy(update={"sweep_batch_size": 1000})
    maker = create_sessionmaker(engine)
    team = await new_team(maker, name="Clinical endings", capacity=ROUNDS * JOBS_PER_ROUND)
    base = f"/internal/v1/teams/{team.id}/jobs"
    clock = Clock(T0)
    app = create_app(settings)
    # Sweeper replicas: each its own pool, as separate router processes would have.
    replicas = [
        create_async_engine(settings.resolved_database_url(), pool_size=1, max_overflow=0)
        for _ in range(SWEEPERS)
    ]
    outcomes: dict[str, dict[str, int]] = {}
    holders: dict[str, str] = {}
    requeued_total = 0

    async def end(http: httpx.AsyncClient, job_id: str, action: str) -> tuple[str, str, int]:
        member = {"member_id": holders[job_id]}
        if action == "completed":
            body = {**member, "result": {"job": job_id}}
            response = await http.post(f"{base}/{job_id}/complete", json=body)
        elif action == "released":
            response = await http.post(f"{base}/{job_id}/release", json=member)
        else:
            response = await http.post(
                f"/internal/v1/jobs/{job_id}/cancel", json={"tenant_id": TENANT, "reason": "race"}
            )
        if response.status_code == 409:
            assert response.headers["content-type"].startswith("application/problem+json")
        return job_id, action, response.status_code

    try:
        async with running(app) as http:
            http.headers.update(gateway_headers)
            app.state.clock = clock
            for round_index in range(ROUNDS):
                # Rounds 1000 s apart: far inside the escalation window, so nothing but the
                # contenders moves these jobs.
                start = T0 + timedelta(seconds=1000 * round_index)
                job_ids = await queued_jobs(maker, team, JOBS_PER_ROUND, at=start)
                async with maker() as session, session.begin():
                    workflow = JobWorkflow(
                        session, settings=settings, classifier=LexiconClassifier()
                    )
                    for job_id in job_ids:
                        holders[job_id] = new_uuid()
                        await workflow.claim(team.id, job_id, member_id=holders[job_id], now=start)
                # Members act one second before the lease ends; the sweepers' clocks read one
                # second after it (replicas' clocks are never exactly equal).
                clock.now = start + timedelta(seconds=settings.lease_seconds - 1)
                sweep_now = start + timedelta(seconds=settings.lease_seconds + 1)
                shuffle = random.Random(round_index)
                requests: list[Any] = []
                for job_id in job_ids:
                    actions = ["completed", "released", "cancelled"]
                    shuffle.shuffle(actions)
                    requests += [end(http, job_id, action) for action in actions]
                sweeps = [
                    sweep_once(
                        create_sessionmaker(replica),
                        settings=settings,
                        classifier=LexiconClassifier(),
                        now=sweep_now,
                    )
                    for replica in replicas
                ]
                results = await asyncio.gather(*requests, *sweeps)
                for job_id, action, status in results[: len(requests)]:
                    assert status in (200, 409), (action, status)
                    outcomes.setdefault(job_id, {})[action] = status
                requeued_total += sum(report.requeued for report in results[len(requests) :])
    finally:
        for replica in replicas:
            await replica.dispose()

    jobs = await all_jobs(maker)
    events = await events_by_job(maker)
    winners: Counter[str] = Counter()
    for job_id, answers in outcomes.items():
        history = events[job_id]
        assert [e.type for e in history[:2]] == ["routed", "claimed"]
        after = history[2:]
        # Exactly one change took the job out of in_progress: the winner.
        assert after, job_id
        winner = after[0]
        assert winner.type in ENDINGS
        assert winner.from_status == "in_progress"
        winners[winner.type] += 1
        # A release or a lease expiry puts the job back in the queue, where the client may still
        # cancel it: a cancel that arrived just after them is a later, legitimate change (from
        # "queued"), not a second winner. Nothing else may follow.
        later = after[1:]
        assert len(later) <= 1, [e.type for e in history]
        if later:
            assert winner.type in ("released", "lease_expired")
            assert (later[0].type, later[0].from_status) == ("cancelled", "queued")
        applied = {event.type for event in after}
        for action, status in answers.items():
            assert status == (200 if action in applied else 409), (job_id, action, status)
        job = jobs[job_id]
        assert job.event_seq == history[-1].seq
        assert job.lease_member_id is None
        assert job.lease_expires_at is None
        final = history[-1].type
        if final == "completed":
            assert (job.status, job.result) == ("completed", {"job": job_id})
            assert job.completed_at is not None
        elif final == "cancelled":
            assert job.status == "cancelled"
            assert job.result is None
        else:
            assert job.status == "queued"
            assert job.team_id == team.id
            assert job.result is None
    assert len(outcomes) == ROUNDS * JOBS_PER_ROUND
    # Each requeue the sweepers reported is one job whose lease expiry won, and only one.
    assert requeued_total == winners["lease_expired"]
    assert sum(winners.values()) == ROUNDS * JOBS_PER_ROUND


# ------------------------------------------------------------------- withdrawals


async def test_a_submit_and_its_withdrawal_have_one_winner(
    router_settings: RouterSettings, gateway_headers: dict[str, str]
):
    """The gateway's sweeper withdraws a stalled submission while the submission itself
    arrives: either the job is stored and the withdrawal says so (the sealed data is kept), or
    the withdrawal is recorded and the submit refused (the data may go). Never both stored and
    withdrawn: that job would point at discarded data."""
    app = create_app(router_settings)
    engine = create_async_engine(router_settings.resolved_database_url())
    maker = create_sessionmaker(engine)
    await new_team(maker, name="Clinical withdrawals", capacity=WITHDRAWN_RACES)
    bodies = [job_body(outbox_token=outbox_token()) for _ in range(WITHDRAWN_RACES)]
    shuffle = random.Random(7)

    async def submit(http: httpx.AsyncClient, body: dict[str, Any]) -> tuple[str, str, int]:
        response = await http.post("/internal/v1/jobs", json=body)
        return body["id"], "submit", response.status_code

    async def withdraw(
        http: httpx.AsyncClient, body: dict[str, Any], delay: float
    ) -> tuple[str, str, int]:
        # A submit classifies before it writes, so undelayed withdrawals would all win.
        await asyncio.sleep(delay)
        response = await http.post(
            f"/internal/v1/jobs/{body['id']}/withdrawals",
            json={"tenant_id": TENANT, "outbox_token": body["outbox_token"]},
        )
        assert response.status_code == 200, response.text
        return body["id"], "withdrawn", int(response.json()["withdrawn"])

    try:
        async with running(app) as http:
            http.headers.update(gateway_headers)
            contenders: list[Any] = []
            for body in bodies:
                pair = [submit(http, body), withdraw(http, body, shuffle.random() * 0.2)]
                shuffle.shuffle(pair)
                contenders += pair
            results = await asyncio.gather(*contenders)
        stored = set((await all_jobs(maker)).keys())
    finally:
        await engine.dispose()

    outcomes: dict[str, dict[str, int]] = {}
    for job_id, what, value in results:
        outcomes.setdefault(job_id, {})[what] = value
    winners: Counter[str] = Counter()
    for job_id, outcome in outcomes.items():
        if outcome["withdrawn"]:
            assert outcome["submit"] == 409, outcome
            assert job_id not in stored
            winners["withdrawal"] += 1
        else:
            assert outcome["submit"] == 201, outcome
            assert job_id in stored
            winners["submit"] += 1
    assert sum(winners.values()) == WITHDRAWN_RACES
