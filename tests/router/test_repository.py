"""The router's queries and migrations, on the run's real databases."""

from __future__ import annotations

from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncSession

from services.router.db.migrate import VERSION_TABLE
from services.router.db.models import Base, Job
from services.router.db.repository import JobRepository, TeamRepository
from shared.db import utcnow
from tests.router.factories import OTHER_TENANT, TENANT, make_job, make_team


async def test_migrations_build_exactly_the_models_schema(session: AsyncSession):
    def diff(sync_connection):
        context = MigrationContext.configure(sync_connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    connection = await session.connection()
    changes = await connection.run_sync(diff)
    # Only the version table is in the database and not in the models.
    leftovers = [c for c in changes if not (c[0] == "remove_table" and c[1].name == VERSION_TABLE)]
    assert leftovers == []


async def test_transition_is_conditional_and_bumps_the_event_sequence(session: AsyncSession):
    repo = JobRepository(session)
    job = await make_job(session, status="queued")
    now = utcnow()
    moved = await repo.transition(
        job.id, expected_status="queued", values={"status": "in_progress"}, now=now
    )
    assert moved is not None
    assert (moved.status, moved.event_seq, moved.updated_at) == ("in_progress", 2, now)
    # The same move again finds nothing to change: the caller answers 409.
    again = await repo.transition(
        job.id, expected_status="queued", values={"status": "in_progress"}, now=now
    )
    assert again is None
    fenced = await repo.transition(
        job.id,
        expected_status="in_progress",
        conditions=[Job.lease_member_id == "someone-else"],
        values={"status": "queued"},
        now=now,
    )
    assert fenced is None
    assert (await repo.get(job.id)).status == "in_progress"  # type: ignore[union-attr]


async def test_get_scopes_by_tenant(session: AsyncSession):
    repo = JobRepository(session)
    job = await make_job(session)
    assert await repo.get(job.id, tenant_id=TENANT) is not None
    assert await repo.get(job.id, tenant_id=OTHER_TENANT) is None
    assert await repo.get(job.id) is not None


async def test_team_loads_count_queued_and_in_progress_only(session: AsyncSession):
    repo = JobRepository(session)
    team = await make_team(session)
    other = await make_team(session)
    for status in ("queued", "in_progress", "in_progress", "completed", "cancelled"):
        await make_job(session, status=status, team_id=team.id, team_name=team.name)
    await make_job(session, status="queued", team_id=other.id, team_name=other.name)
    await make_job(session, status="triage")
    assert await repo.team_loads() == {team.id: 3, other.id: 1}
    depths = sorted(await repo.queue_depths())
    assert depths == sorted(
        [(team.id, "queued", 1), (team.id, "in_progress", 2), (other.id, "queued", 1)]
    )


async def test_sweeper_queries_find_only_due_rows(session: AsyncSession):
    repo = JobRepository(session)
    now = utcnow()
    expired = await make_job(
        session, status="in_progress", lease_member_id="m", lease_expires_at=now - timedelta(1)
    )
    await make_job(
        session, status="in_progress", lease_member_id="m", lease_expires_at=now + timedelta(1)
    )
    due = await make_job(session, status="unroutable", retry_at=now - timedelta(seconds=1))
    await make_job(session, status="unroutable", retry_at=now + timedelta(hours=1))
    assert [job.id for job in await repo.expired_leases(now=now, limit=10)] == [expired.id]
    assert [job.id for job in await repo.due_unroutable(now=now, limit=10)] == [due.id]


async def test_tenant_list_pages_are_stable_when_times_tie(session: AsyncSession):
    repo = JobRepository(session)
    same_time = utcnow()
    ids = sorted([(await make_job(session, created_at=same_time)).id for _ in range(5)])
    await make_job(session, tenant_id=OTHER_TENANT, created_at=same_time)
    seen: list[str] = []
    cursor = None
    while True:
        page = await repo.list_for_tenant(tenant_id=TENANT, status=None, limit=2, cursor=cursor)
        seen += [job.id for job in page.items]
        if not page.has_more:
            break
        cursor = page.next_cursor
    # Newest first, and the id breaks the tie in the same direction.
    assert seen == list(reversed(ids))


async def test_versioned_team_update(session: AsyncSession):
    repo = TeamRepository(session)
    team = await make_team(session)
    assert await repo.update_versioned(team.id, expected_version=2, values={"capacity": 1}) is None
    updated = await repo.update_versioned(team.id, expected_version=1, values={"capacity": 1})
    assert updated is not None
    assert (updated.capacity, updated.version) == (1, 2)


async def test_an_event_type_outside_the_vocabulary_is_never_written(session):
    """The timeline's ``type`` filter takes only lifecycle.EVENT_TYPES: an event of another
    type could never be filtered for, so writing one is a bug caught here."""
    row = {
        "job_id": "00000000-0000-4000-8000-000000000001",
        "seq": 1,
        "at": utcnow(),
        "type": "teleported",
        "from_status": None,
        "to_status": "queued",
        "actor": "router",
        "reason": None,
        "request_id": None,
    }
    with pytest.raises(ValueError, match="EVENT_TYPES"):
        await JobRepository(session).add_events([row])
