"""Every query of the router. Tenant and team scoping happen here, not in routes.

State changes are conditional UPDATEs (``... WHERE id = :id AND status = :expected ...``) that
bump the job's ``event_seq`` and return the new row; ``None`` means another request changed the
job first. That keeps claims, leases and the sweeper correct with any number of replicas on
PostgreSQL (row locks taken by the UPDATE) and on SQLite (one writer at a time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Insert, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.router.db.models import Job, JobEvent, LabelledExample, RoutingDecision, Team
from services.router.db.pagination import decode_cursor, encode_cursor
from services.router.domain.lifecycle import JobStatus

# Statuses that occupy a team: they count against its capacity and make its queue.
ACTIVE_STATUSES = (JobStatus.QUEUED.value, JobStatus.IN_PROGRESS.value)


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    has_more: bool
    next_cursor: str | None


def _insert_if_absent(
    session: AsyncSession, model: type[Any], values: dict[str, Any], *, unique: str
) -> Insert:
    """``INSERT ... ON CONFLICT (unique) DO NOTHING RETURNING id`` on either backend.

    Used instead of a savepoint: pysqlite starts no transaction before SAVEPOINT, so on SQLite a
    savepoint's RELEASE would commit the insert before the rest of the request's work.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        pg_statement = postgresql.insert(model).values(**values)
        return pg_statement.on_conflict_do_nothing(index_elements=[unique]).returning(model.id)
    lite_statement = sqlite.insert(model).values(**values)
    return lite_statement.on_conflict_do_nothing(index_elements=[unique]).returning(model.id)


def _page(rows: Sequence[Any], limit: int, key: Any) -> Page[Any]:
    items = list(rows[:limit])
    has_more = len(rows) > limit
    return Page(
        items=items,
        has_more=has_more,
        next_cursor=encode_cursor(key(items[-1])) if has_more else None,
    )


class TeamRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_if_name_free(self, values: dict[str, Any]) -> Team | None:
        """Insert a team unless its name is taken (then ``None``), atomically."""
        statement = _insert_if_absent(self.session, Team, values, unique="name")
        inserted = (await self.session.execute(statement)).scalar_one_or_none()
        return None if inserted is None else await self.get(str(inserted))

    async def get(self, team_id: str) -> Team | None:
        return await self.session.get(Team, team_id)

    async def get_by_name(self, name: str) -> Team | None:
        result = await self.session.scalars(select(Team).where(Team.name == name))
        return result.first()

    async def all(self) -> Sequence[Team]:
        result = await self.session.scalars(select(Team).order_by(Team.name, Team.id))
        return result.all()

    async def list(
        self, *, limit: int, cursor: str | None, active: bool | None, tier: str | None
    ) -> Page[Team]:
        query = select(Team)
        if active is not None:
            query = query.where(Team.active == active)
        if tier is not None:
            query = query.where(Team.tier == tier)
        if cursor:
            created_at, team_id = decode_cursor(cursor, (datetime, str))
            query = query.where(
                or_(
                    Team.created_at > created_at,
                    and_(Team.created_at == created_at, Team.id > team_id),
                )
            )
        rows = (
            await self.session.scalars(query.order_by(Team.created_at, Team.id).limit(limit + 1))
        ).all()
        return _page(rows, limit, lambda team: [team.created_at, team.id])

    async def update_versioned(
        self, team_id: str, *, expected_version: int | None, values: dict[str, Any]
    ) -> Team | None:
        """Apply ``values`` and bump the version, only if the version is still the expected one."""
        conditions: list[ColumnElement[bool]] = [Team.id == team_id]
        if expected_version is not None:
            conditions.append(Team.version == expected_version)
        statement = (
            update(Team)
            .where(*conditions)
            .values(**values, version=Team.version + 1)
            .returning(Team)
            .execution_options(synchronize_session=False)
        )
        result = await self.session.execute(
            statement, execution_options={"populate_existing": True}
        )
        return result.scalars().first()


class JobRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_if_new(self, values: dict[str, Any]) -> Job | None:
        """Insert a job unless its id exists (then ``None``): concurrent submissions of one id
        make one row, without an error that would abort the transaction."""
        statement = _insert_if_absent(self.session, Job, values, unique="id")
        inserted = (await self.session.execute(statement)).scalar_one_or_none()
        return None if inserted is None else await self.get(str(inserted))

    async def get(self, job_id: str, *, tenant_id: str | None = None) -> Job | None:
        """A job by id; with ``tenant_id``, only if it belongs to that tenant."""
        query = select(Job).where(Job.id == job_id)
        if tenant_id is not None:
            query = query.where(Job.tenant_id == tenant_id)
        result = await self.session.scalars(query.execution_options(populate_existing=True))
        return result.first()

    async def get_for_team(self, job_id: str, *, team_id: str) -> Job | None:
        query = select(Job).where(Job.id == job_id, Job.team_id == team_id)
        result = await self.session.scalars(query.execution_options(populate_existing=True))
        return result.first()

    async def transition(
        self,
        job_id: str,
        *,
        expected_status: str,
        conditions: Sequence[ColumnElement[bool]] = (),
        values: dict[str, Any],
        now: datetime,
    ) -> Job | None:
        """Change a job that still has ``expected_status`` (and meets ``conditions``); bump its
        event sequence. ``None`` when the job no longer matches (someone else got there first)."""
        statement = (
            update(Job)
            .where(Job.id == job_id, Job.status == expected_status, *conditions)
            .values(**values, event_seq=Job.event_seq + 1, updated_at=now)
            .returning(Job)
            .execution_options(synchronize_session=False)
        )
        result = await self.session.execute(
            statement, execution_options={"populate_existing": True}
        )
        return result.scalars().first()

    async def touch(
        self,
        job_id: str,
        *,
        conditions: Sequence[ColumnElement[bool]],
        values: dict[str, Any],
    ) -> Job | None:
        """A conditional change that is not a status transition (heartbeat, retry time)."""
        statement = (
            update(Job)
            .where(Job.id == job_id, *conditions)
            .values(**values)
            .returning(Job)
            .execution_options(synchronize_session=False)
        )
        result = await self.session.execute(
            statement, execution_options={"populate_existing": True}
        )
        return result.scalars().first()

    async def add_event(self, event: JobEvent) -> None:
        self.session.add(event)
        await self.session.flush()

    async def events(self, job_id: str) -> Sequence[JobEvent]:
        result = await self.session.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)
        )
        return result.all()

    async def list_for_tenant(
        self, *, tenant_id: str, status: str | None, limit: int, cursor: str | None
    ) -> Page[Job]:
        """A tenant's jobs, newest first."""
        query = select(Job).where(Job.tenant_id == tenant_id)
        if status is not None:
            query = query.where(Job.status == status)
        if cursor:
            created_at, job_id = decode_cursor(cursor, (datetime, str))
            query = query.where(
                or_(
                    Job.created_at < created_at,
                    and_(Job.created_at == created_at, Job.id < job_id),
                )
            )
        query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
        rows = (await self.session.scalars(query)).all()
        return _page(rows, limit, lambda job: [job.created_at, job.id])

    async def team_queue(
        self, *, team_id: str, status: str | None, limit: int, cursor: str | None
    ) -> Page[Job]:
        """A team's queued and in-progress jobs: high priority first, then oldest first."""
        statuses = [status] if status is not None else list(ACTIVE_STATUSES)
        query = select(Job).where(Job.team_id == team_id, Job.status.in_(statuses))
        if cursor:
            rank, created_at, job_id = decode_cursor(cursor, (int, datetime, str))
            query = query.where(
                or_(
                    Job.priority_rank > rank,
                    and_(Job.priority_rank == rank, Job.created_at > created_at),
                    and_(Job.priority_rank == rank, Job.created_at == created_at, Job.id > job_id),
                )
            )
        query = query.order_by(Job.priority_rank, Job.created_at, Job.id).limit(limit + 1)
        rows = (await self.session.scalars(query)).all()
        return _page(rows, limit, lambda job: [job.priority_rank, job.created_at, job.id])

    async def by_status(self, *, status: str, limit: int, cursor: str | None) -> Page[Job]:
        """Jobs in one status, oldest first (the triage queue)."""
        query = select(Job).where(Job.status == status)
        if cursor:
            created_at, job_id = decode_cursor(cursor, (datetime, str))
            query = query.where(
                or_(
                    Job.created_at > created_at,
                    and_(Job.created_at == created_at, Job.id > job_id),
                )
            )
        query = query.order_by(Job.created_at, Job.id).limit(limit + 1)
        rows = (await self.session.scalars(query)).all()
        return _page(rows, limit, lambda job: [job.created_at, job.id])

    async def team_loads(self) -> dict[str, int]:
        """Queued plus in-progress jobs per team."""
        query = (
            select(Job.team_id, func.count())
            .where(Job.status.in_(ACTIVE_STATUSES), Job.team_id.is_not(None))
            .group_by(Job.team_id)
        )
        rows = (await self.session.execute(query)).all()
        return {str(team_id): int(count) for team_id, count in rows}

    async def expired_leases(self, *, now: datetime, limit: int) -> Sequence[Job]:
        query = (
            select(Job)
            .where(Job.status == JobStatus.IN_PROGRESS.value, Job.lease_expires_at <= now)
            .order_by(Job.lease_expires_at)
            .limit(limit)
        )
        return (await self.session.scalars(query)).all()

    async def due_unroutable(self, *, now: datetime, limit: int) -> Sequence[Job]:
        query = (
            select(Job)
            .where(Job.status == JobStatus.UNROUTABLE.value, Job.retry_at <= now)
            .order_by(Job.retry_at, Job.created_at)
            .limit(limit)
        )
        return (await self.session.scalars(query)).all()

    async def add_decision(self, decision: RoutingDecision) -> None:
        self.session.add(decision)
        await self.session.flush()

    async def latest_decision(self, job_id: str) -> RoutingDecision | None:
        query = (
            select(RoutingDecision)
            .where(RoutingDecision.job_id == job_id)
            .order_by(RoutingDecision.id.desc())
            .limit(1)
        )
        return (await self.session.scalars(query)).first()

    async def add_example(self, example: LabelledExample) -> None:
        self.session.add(example)
        await self.session.flush()

    async def examples(self, *, job_id: str) -> Sequence[LabelledExample]:
        query = select(LabelledExample).where(LabelledExample.job_id == job_id)
        return (await self.session.scalars(query.order_by(LabelledExample.id))).all()

    async def operator_examples(self) -> Sequence[LabelledExample]:
        """Every operator-labelled example, oldest first (``classifier train`` merges them)."""
        query = select(LabelledExample).where(LabelledExample.source == "operator")
        return (await self.session.scalars(query.order_by(LabelledExample.id))).all()

    async def count_by(self, column: str) -> dict[str, int]:
        """Job counts grouped by ``status``, ``tier`` or ``domain`` (indexed or small scans)."""
        field = {"status": Job.status, "tier": Job.tier, "domain": Job.domain}[column]
        query = select(field, func.count()).where(field.is_not(None)).group_by(field)
        return {str(key): int(count) for key, count in (await self.session.execute(query)).all()}

    async def queue_depths(self) -> list[tuple[str, str, int]]:
        """(team id, status, count) for queued and in-progress jobs."""
        query = (
            select(Job.team_id, Job.status, func.count())
            .where(Job.status.in_(ACTIVE_STATUSES), Job.team_id.is_not(None))
            .group_by(Job.team_id, Job.status)
        )
        return [(str(t), str(s), int(c)) for t, s, c in (await self.session.execute(query)).all()]
