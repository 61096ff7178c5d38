"""Team profiles cached per router process (workflow.TeamProfileCache): a decision reuses them
only while every team's version is the one they were built from, so a change of a team, made
through any replica, is seen by the very next decision in every replica; loads are never cached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.router.app import create_app
from services.router.domain.classifier import LexiconClassifier
from services.router.domain.errors import InvalidTransition
from services.router.settings import RouterSettings
from services.router.workflow import (
    JobWorkflow,
    TeamProfileCache,
    TeamWorkflow,
    team_profile_with_load,
)
from shared.db import utcnow
from tests.conftest import running
from tests.router.factories import (
    create_team,
    job_submission,
    make_job,
    make_team,
    submit_job,
    team_fields,
)

T = TypeVar("T")
SWEEPERS = 3  # replicas of the sweeper running one pass at once


def _team_of(job: dict[str, Any]) -> str | None:
    assignment = job["assignment"]
    return None if assignment is None else str(assignment["team_id"])


async def test_a_team_change_through_one_replica_is_seen_by_the_next_decision_of_another(
    router_settings: RouterSettings, gateway_headers: dict[str, str]
) -> None:
    async with (
        running(create_app(router_settings)) as first,
        running(create_app(router_settings)) as second,
    ):
        for replica in (first, second):
            replica.headers.update(gateway_headers)
        best = await create_team(first, quality=0.95, capacity=1000)
        other = await create_team(first, quality=0.5, capacity=1000)
        # The second replica's cache is warm with both teams.
        assert _team_of(await submit_job(second)) == best["id"]
        assert _team_of(await submit_job(second)) == best["id"]

        switched_off = await first.patch(f"/internal/v1/teams/{best['id']}", json={"active": False})
        assert switched_off.status_code == 200, switched_off.text
        assert _team_of(await submit_job(second)) == other["id"]

        newcomer = await create_team(first, quality=0.99, capacity=1000)
        assert _team_of(await submit_job(second)) == newcomer["id"]

        full = await first.patch(f"/internal/v1/teams/{newcomer['id']}", json={"capacity": 1})
        assert full.status_code == 200, full.text
        assert _team_of(await submit_job(second)) == other["id"]


async def test_loads_are_read_by_every_decision(
    router_settings: RouterSettings, gateway_headers: dict[str, str]
) -> None:
    async with running(create_app(router_settings)) as client:
        client.headers.update(gateway_headers)
        only = await create_team(client, capacity=1)
        assert _team_of(await submit_job(client)) == only["id"]
        # Same teams, same versions, a cached profile: the team is full all the same.
        parked = await submit_job(client)
        assert parked["status"] == "unroutable"
        assert _team_of(parked) is None


async def test_concurrent_submits_fill_a_team_to_its_capacity_not_past_it(
    maker: async_sessionmaker[AsyncSession], router_settings: RouterSettings
) -> None:
    """Every submit reads the loads before it writes, so a burst may see room on the same team;
    each checks its team's load again after its insert and goes elsewhere if it overflowed."""
    settings = router_settings.model_copy(update={"triage_threshold": 0.0})
    small, large = await _teams(maker, ("Small", 2, 0.99), ("Large", 3, 0.5))

    async def submit(flow: JobWorkflow) -> str | None:
        job, _ = await flow.submit(job_submission(), now=utcnow())
        return job.team_id

    placed = await _at_once(maker, settings, submit, times=8)
    loads, counted = await _loads(maker, settings)
    assert placed.count(small.id) == 2
    assert placed.count(large.id) == 3
    assert placed.count(None) == 3  # unroutable: no room anywhere
    assert loads == counted == {small.id: 2, large.id: 3}


async def _teams(maker: Any, *specs: tuple[str, int, float]) -> list[Any]:
    async with maker() as session, session.begin():
        return [
            await TeamWorkflow(session).create(
                team_fields(
                    name=name, certifications=[], languages=[], capacity=capacity, quality=quality
                ),
                now=utcnow(),
            )
            for name, capacity, quality in specs
        ]


async def _in_transaction(
    maker: Any, settings: RouterSettings, act: Callable[[JobWorkflow], Awaitable[T]]
) -> T:
    """``act`` on a workflow of its own transaction, as one request or sweeper pass runs."""
    async with maker() as session, session.begin():
        return await act(JobWorkflow(session, settings=settings, classifier=LexiconClassifier()))


async def _at_once(
    maker: Any, settings: RouterSettings, act: Callable[[JobWorkflow], Awaitable[T]], *, times: int
) -> list[T]:
    """``act`` ``times`` over at once, each in its own transaction: concurrent requests, or
    sweeper replicas."""
    return list(
        await asyncio.gather(*(_in_transaction(maker, settings, act) for _ in range(times)))
    )


async def _placed_jobs(maker: Any, settings: RouterSettings, count: int) -> list[str]:
    async def submit(flow: JobWorkflow) -> str:
        job, _ = await flow.submit(job_submission(), now=utcnow())
        return job.id

    return [await _in_transaction(maker, settings, submit) for _ in range(count)]


async def _teams_with_fixed_ids(
    maker: Any, specs: Sequence[tuple[str, int, float]], jobs_in: Sequence[str]
) -> list[str]:
    """Teams (id, capacity, quality) whose ids a test chooses (counter rows are locked in id
    order), and one clinical job queued in each team of ``jobs_in``; the jobs' ids."""
    work = {"tier": "KPO", "domain": "clinical", "confidence": 0.9}
    async with maker() as session, session.begin():
        for team_id, capacity, quality in specs:
            await make_team(
                session, id=team_id, name=team_id[-2:], capacity=capacity, quality=quality
            )
        return [(await make_job(session, team_id=team_id, **work)).id for team_id in jobs_in]


def _decide_on_stale_loads(monkeypatch: Any) -> None:
    """Every decision sees every team empty, as decisions racing each other may."""
    profiles = JobWorkflow.profiles

    async def stale_profiles(self: JobWorkflow, **kwargs: Any) -> list[Any]:
        return [team_profile_with_load(p, 0) for p in await profiles(self, **kwargs)]

    monkeypatch.setattr(JobWorkflow, "profiles", stale_profiles)


async def _loads(maker: Any, settings: RouterSettings) -> tuple[dict[str, int], dict[str, int]]:
    async with maker() as session:
        flow = JobWorkflow(session, settings=settings, classifier=LexiconClassifier())
        return await flow.jobs.team_loads(), await flow.jobs.counted_team_loads()


async def test_concurrent_rejects_fill_the_next_team_to_its_capacity_not_past_it(
    maker: async_sessionmaker[AsyncSession], router_settings: RouterSettings
) -> None:
    """Six jobs rejected at once by the team holding them all have one other team to go to:
    each reject checks that team's load after its move and parks the job once it is full."""
    settings = router_settings.model_copy(update={"triage_threshold": 0.0})
    (first,) = await _teams(maker, ("First", 10, 0.99))
    jobs = await _placed_jobs(maker, settings, 6)
    (second,) = await _teams(maker, ("Second", 2, 0.5))

    async def reject(job_id: str) -> str | None:
        async def act(flow: JobWorkflow) -> str | None:
            job = await flow.reject(
                first.id, job_id, member_id=None, reason="not ours", now=utcnow()
            )
            return job.team_id

        return await _in_transaction(maker, settings, act)

    placed = await asyncio.gather(*(reject(job_id) for job_id in jobs))
    loads, counted = await _loads(maker, settings)
    assert placed.count(second.id) == 2
    assert placed.count(None) == 4  # unroutable: the only other team is full
    assert loads == counted == {second.id: 2}


async def test_concurrent_sweeper_passes_fill_teams_to_their_capacity_not_past_it(
    maker: async_sessionmaker[AsyncSession], router_settings: RouterSettings
) -> None:
    """Parked jobs retried by three sweeper replicas at once (each takes its own jobs): every
    pass read the loads when it began, so all saw room on the best team."""
    settings = router_settings.model_copy(
        update={"triage_threshold": 0.0, "sweep_batch_size": 2, "unroutable_retry_seconds": 1}
    )
    await _placed_jobs(maker, settings, 6)  # no team yet: all unroutable
    small, large = await _teams(maker, ("Small", 2, 0.99), ("Large", 3, 0.5))
    later = utcnow() + timedelta(seconds=5)

    routed = await _at_once(
        maker, settings, lambda flow: flow.retry_unroutable(now=later), times=SWEEPERS
    )
    loads, counted = await _loads(maker, settings)
    assert sum(routed) == 5
    assert loads == counted == {small.id: 2, large.id: 3}


async def test_concurrent_escalations_fill_the_next_team_to_its_capacity_not_past_it(
    maker: async_sessionmaker[AsyncSession], router_settings: RouterSettings
) -> None:
    """Unclaimed jobs escalated by three sweeper replicas at once: the job stays where it was
    (escalation held) once the only other team is full."""
    settings = router_settings.model_copy(update={"triage_threshold": 0.0, "sweep_batch_size": 2})
    (first,) = await _teams(maker, ("First", 10, 0.99))
    await _placed_jobs(maker, settings, 6)
    (second,) = await _teams(maker, ("Second", 2, 0.5))
    later = utcnow() + timedelta(days=30)

    moved = await _at_once(
        maker, settings, lambda flow: flow.escalate_unclaimed(now=later), times=SWEEPERS
    )
    loads, counted = await _loads(maker, settings)
    assert sum(moved) == 2
    assert loads == counted == {first.id: 4, second.id: 2}


async def test_two_rejects_crossing_a_full_team_do_not_deadlock(
    maker: async_sessionmaker[AsyncSession], router_settings: RouterSettings, monkeypatch: Any
) -> None:
    """X (in A) and Y (in C) are both rejected towards B, which their stale loads show free
    and which is full. X moves into B, finds it full, undoes the move and pauses; meanwhile Y
    moves into B too. Had X kept B's counter row after its undo, X's next move (into C, whose
    row Y holds) and Y's (waiting for B) would wait for each other: PostgreSQL would abort one.
    The counter rows are locked in team-id order within one move, so the ids are C < A < B."""
    settings = router_settings.model_copy(update={"triage_threshold": 0.0})
    team_c, team_a, team_b = (f"00000000-0000-4000-8000-00000000000{n}" for n in (1, 2, 3))
    _, job_x, job_y = await _teams_with_fixed_ids(
        maker,
        [(team_c, 5, 0.6), (team_a, 5, 0.5), (team_b, 1, 0.99)],
        jobs_in=[team_b, team_a, team_c],  # B is full
    )
    _decide_on_stale_loads(monkeypatch)
    move_into = JobWorkflow._move_into

    async def pausing_move_into(self: JobWorkflow, team: Any, job: Any, **kwargs: Any) -> Any:
        moved = await move_into(self, team, job, **kwargs)
        if moved is None and job.id == job_x:
            await asyncio.sleep(0.5)  # Y moves into B now
        return moved

    monkeypatch.setattr(JobWorkflow, "_move_into", pausing_move_into)

    async def reject(team_id: str, job_id: str) -> str | None:
        async def act(flow: JobWorkflow) -> str | None:
            job = await flow.reject(team_id, job_id, member_id=None, reason="no", now=utcnow())
            return job.team_id

        return await _in_transaction(maker, settings, act)

    async def reject_y_later() -> str | None:
        await asyncio.sleep(0.1)
        return await reject(team_c, job_y)

    placed = await asyncio.gather(reject(team_a, job_x), reject_y_later())
    loads, counted = await _loads(maker, settings)
    assert list(placed) == [team_c, team_a]  # B stayed full; each went to the other's team
    assert loads == counted == {team_a: 1, team_b: 1, team_c: 1}


@pytest.mark.postgres_only
async def test_a_claim_landing_while_a_reject_undoes_its_move_wins(
    maker: async_sessionmaker[AsyncSession], router_settings: RouterSettings, monkeypatch: Any
) -> None:
    """On PostgreSQL the undo rolls back to a savepoint, which gives the job's row back: a claim
    waiting for it may commit before the reject decides again. The reject must then lose (the
    job changed), not move the claimed job to another team and clear its lease."""
    settings = router_settings.model_copy(update={"triage_threshold": 0.0})
    team_a, team_b, team_c = (f"00000000-0000-4000-8000-00000000001{n}" for n in (1, 2, 3))
    member = "00000000-0000-4000-8000-0000000000aa"
    _, job_id = await _teams_with_fixed_ids(
        maker,
        [(team_a, 5, 0.5), (team_b, 1, 0.99), (team_c, 5, 0.6)],
        jobs_in=[team_b, team_a],  # B is full
    )
    _decide_on_stale_loads(monkeypatch)
    refresh = AsyncSession.refresh
    claimed: list[str | None] = []

    async def claim_first(self: AsyncSession, instance: Any, *args: Any, **kw: Any) -> None:
        if not claimed:  # the undo's refresh: the waiting claim commits just before it
            job = await _in_transaction(
                maker,
                settings,
                lambda flow: flow.claim(team_a, job_id, member_id=member, now=utcnow()),
            )
            claimed.append(job.lease_member_id)
        await refresh(self, instance, *args, **kw)

    monkeypatch.setattr(AsyncSession, "refresh", claim_first)
    reject = _in_transaction(
        maker,
        settings,
        lambda flow: flow.reject(team_a, job_id, member_id=None, reason="no", now=utcnow()),
    )
    with pytest.raises(InvalidTransition):
        await reject
    monkeypatch.undo()
    async with maker() as session:
        flow = JobWorkflow(session, settings=settings, classifier=LexiconClassifier())
        job = await flow.get(job_id, tenant_id=None)
        events = [event.type for event in await flow.jobs.events(job_id)]
    assert claimed == [member]
    assert (job.status, job.team_id, job.lease_member_id) == ("in_progress", team_a, member)
    assert "rejected" not in events


async def test_a_warm_cache_makes_a_submit_seven_statements(
    engine: AsyncEngine, maker: async_sessionmaker[AsyncSession], router_settings: RouterSettings
) -> None:
    """Versions and loads, the tenant's policy, then the job, its team's load, its events and
    its decision record: the teams are read only when the cache does not hold them at their
    versions."""
    settings = router_settings.model_copy(update={"triage_threshold": 0.0})
    cache = TeamProfileCache()
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]).split(None, 1)[0].upper())

    async def submit() -> list[str]:
        statements.clear()
        event.listen(engine.sync_engine, "before_cursor_execute", count)
        try:
            async with maker() as session, session.begin():
                flow = JobWorkflow(
                    session, settings=settings, classifier=LexiconClassifier(), team_cache=cache
                )
                job, created = await flow.submit(job_submission(), now=utcnow())
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", count)
        assert created
        assert job.status == "queued"
        return list(statements)

    async with maker() as session, session.begin():
        await TeamWorkflow(session).create(
            team_fields(
                name="Pune Clinical",
                certifications=[],
                languages=[],
                capacity=5,
                hourly_rate=20.0,
            ),
            now=utcnow(),
        )
    # Versions and loads, the teams, the tenant's policy (on PostgreSQL after the tenant's
    # lock, a statement of its own), the job, its team's load again (the capacity check after
    # the insert), the events, the routing's row in the event outbox, the decision record.
    policy = ["SELECT", "SELECT"] if engine.dialect.name == "postgresql" else ["SELECT"]
    warm = ["SELECT", *policy, "INSERT", "SELECT", "INSERT", "INSERT", "INSERT"]
    assert await submit() == ["SELECT", *warm]
    assert await submit() == warm
