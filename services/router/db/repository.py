"""Every query of the router. Tenant and team scoping happen here, not in routes.

State changes are conditional UPDATEs (``... WHERE id = :id AND status = :expected ...``) that
bump the job's ``event_seq`` and return the new row; ``None`` means another request changed the
job first. That keeps claims, leases and the sweeper correct with any number of replicas on
PostgreSQL (row locks taken by the UPDATE) and on SQLite (one writer at a time).
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from services.router.db.models import (
    Job,
    JobEvent,
    JobEventOutbox,
    JobFeedback,
    JobView,
    JobWithdrawal,
    LabelledExample,
    RoutingDecision,
    Team,
    TeamLoad,
    TenantPolicy,
)
from services.router.db.pagination import (
    decode_filtered_cursor,
    encode_cursor,
    encode_filtered_cursor,
)
from services.router.domain.lifecycle import EVENT_TYPES, JobStatus, reported_to_client
from shared.statements import execute, execute_many

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
    returned = model.id
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        pg_statement = postgresql.insert(model).values(**values)
        return pg_statement.on_conflict_do_nothing(index_elements=[unique]).returning(returned)
    lite_statement = sqlite.insert(model).values(**values)
    return lite_statement.on_conflict_do_nothing(index_elements=[unique]).returning(returned)


def _insert_new_job(dialect: str) -> Insert:
    """``INSERT INTO jobs ... ON CONFLICT (id) DO NOTHING RETURNING <every column>``, built
    once per dialect with the values left as bind parameters.

    A Core statement on the table, not the ORM's bulk insert returning the entity: building
    ``.values(**values)`` anew, the ORM's execution state and the entity it loads were most of
    a submit's database CPU. Each returned column is labelled with the ``Job`` attribute it
    maps to (``metadata`` is ``job_metadata``), so the row reads like a ``Job`` (:class:`JobView`).
    """
    table: Table = Job.__table__  # type: ignore[assignment]
    returning = [column.label(_JOB_ATTRIBUTE_OF_COLUMN[column.key]) for column in table.c]
    on_dialect = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    return on_dialect.on_conflict_do_nothing(index_elements=["id"]).returning(*returning)


def _page(rows: Sequence[Any], limit: int, key: Any) -> Page[Any]:
    items = list(rows[:limit])
    has_more = len(rows) > limit
    return Page(
        items=items,
        has_more=has_more,
        next_cursor=encode_cursor(key(items[-1])) if has_more else None,
    )


def _filtered_page(rows: Sequence[Any], limit: int, key: Any, filters: dict[str, Any]) -> Page[Any]:
    """A page whose next cursor is bound to ``filters`` (see pagination.py)."""
    items = list(rows[:limit])
    has_more = len(rows) > limit
    return Page(
        items=items,
        has_more=has_more,
        next_cursor=encode_filtered_cursor(key(items[-1]), filters) if has_more else None,
    )


def _json_list_contains(session: AsyncSession, column: Any, value: str) -> ColumnElement[bool]:
    """``value`` is an element of the JSON array in ``column``, in the database's own terms."""
    if session.get_bind().dialect.name == "postgresql":
        return column.cast(JSONB).contains([value])  # type: ignore[no-any-return]
    each = func.json_each(column).table_valued("value").alias()
    return exists(select(literal(1)).select_from(each).where(each.c.value == value))


@dataclass(frozen=True)
class TeamFilters:
    """What an operator may narrow the team list by; every field set must hold (AND)."""

    active: bool | None = None
    tiers: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    # Teams skilled in every one of these domains / holding every one of these certifications.
    skills: tuple[str, ...] = ()
    certifications: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "tier": self.tiers,
            "country": self.countries,
            "skill": self.skills,
            "certification": self.certifications,
        }


@dataclass(frozen=True)
class JobFilters:
    """What a job list may be narrowed by; applied in the query, every field set must hold."""

    statuses: tuple[str, ...] = ()
    priorities: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    # Operators' lists only (the triage queue): never set from a client's request.
    tenant_id: str | None = None

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.statuses:
            query = query.where(Job.status.in_(self.statuses))
        if self.priorities:
            query = query.where(Job.priority.in_(self.priorities))
        if self.tiers:
            query = query.where(Job.tier.in_(self.tiers))
        if self.domains:
            query = query.where(Job.domain.in_(self.domains))
        if self.created_after is not None:
            query = query.where(Job.created_at >= self.created_after)
        if self.created_before is not None:
            query = query.where(Job.created_at < self.created_before)
        if self.tenant_id is not None:
            query = query.where(Job.tenant_id == self.tenant_id)
        return query

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.statuses,
            "priority": self.priorities,
            "tier": self.tiers,
            "domain": self.domains,
            "created_after": self.created_after,
            "created_before": self.created_before,
            "tenant_id": self.tenant_id,
        }


def _with_status(filters: JobFilters, status: str | None) -> JobFilters:
    """``filters`` plus the single ``status`` argument older callers pass."""
    if status is None or status in filters.statuses:
        return filters
    return JobFilters(**{**filters.__dict__, "statuses": (*filters.statuses, status)})


_TEAMS: Table = Team.__table__  # type: ignore[assignment]
_TEAM_LOADS: Table = TeamLoad.__table__  # type: ignore[assignment]
# Every team's id, version and load in one prebuilt Core statement (no ORM entities, compiled
# once): what a routing decision reads to know whether its cached team profiles still hold.
_TEAM_VERSIONS_AND_LOADS = (
    select(
        _TEAMS.c.id,
        _TEAMS.c.version,
        func.coalesce(_TEAM_LOADS.c.active_jobs, 0),
    )
    .select_from(_TEAMS.outerjoin(_TEAM_LOADS, _TEAM_LOADS.c.team_id == _TEAMS.c.id))
    .order_by(_TEAMS.c.name, _TEAMS.c.id)
)


class TeamRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def versions_and_loads(self) -> list[tuple[str, int, int]]:
        """``(id, version, load)`` of every team by name, in one statement: the version of
        each team (bumped by every change of it) and its queued plus in-progress jobs (the
        ``team_loads`` counter, 0 without one; see :meth:`JobRepository.team_loads`)."""
        rows: Sequence[Any] = (await execute(self.session, _TEAM_VERSIONS_AND_LOADS)).all()
        return [(str(team_id), int(version), int(load)) for team_id, version, load in rows]

    async def add_if_name_free(self, values: dict[str, Any]) -> Team | None:
        """Insert a team unless its name is taken (then ``None``), atomically."""
        statement = _insert_if_absent(self.session, Team, values, unique="name")
        inserted = (await self.session.execute(statement)).scalar_one_or_none()
        return None if inserted is None else await self.get(str(inserted))

    async def get(self, team_id: str) -> Team | None:
        return await self.session.get(Team, team_id)

    async def get_for_update(self, team_id: str) -> Team | None:
        """A team, row-locked until the transaction ends on PostgreSQL (read-modify-write)."""
        query = select(Team).where(Team.id == team_id).with_for_update()
        result = await self.session.scalars(query.execution_options(populate_existing=True))
        return result.first()

    async def names(self, team_ids: Sequence[str]) -> dict[str, str]:
        """Team names by id (the teams a decision record names)."""
        query = select(Team.id, Team.name).where(Team.id.in_(list(team_ids)))
        return {str(i): str(n) for i, n in (await self.session.execute(query)).all()}

    async def get_by_name(self, name: str) -> Team | None:
        result = await self.session.scalars(select(Team).where(Team.name == name))
        return result.first()

    async def all(self) -> Sequence[Team]:
        result = await self.session.scalars(select(Team).order_by(Team.name, Team.id))
        return result.all()

    async def list(
        self,
        *,
        limit: int,
        cursor: str | None,
        active: bool | None,
        tier: str | None,
        filters: TeamFilters | None = None,
    ) -> Page[Team]:
        """Teams in registration order, narrowed in the query by ``filters`` (and the older
        ``active``/``tier`` arguments); the cursor is bound to the filters."""
        filters = filters or TeamFilters()
        tiers = tuple(sorted({*filters.tiers, *((tier,) if tier else ())}))
        filters = TeamFilters(
            active=filters.active if active is None else active,
            tiers=tiers,
            countries=filters.countries,
            skills=filters.skills,
            certifications=filters.certifications,
        )
        query = select(Team)
        if filters.active is not None:
            query = query.where(Team.active == filters.active)
        if filters.tiers:
            query = query.where(Team.tier.in_(filters.tiers))
        if filters.countries:
            query = query.where(Team.country.in_(filters.countries))
        for skill in filters.skills:
            query = query.where(_json_list_contains(self.session, Team.skills, skill))
        for certification in filters.certifications:
            query = query.where(
                _json_list_contains(self.session, Team.certifications, certification)
            )
        scope = {"list": "teams", **filters.as_dict()}
        if cursor:
            created_at, team_id = decode_filtered_cursor(cursor, (datetime, str), scope)
            query = query.where(
                or_(
                    Team.created_at > created_at,
                    and_(Team.created_at == created_at, Team.id > team_id),
                )
            )
        rows = (
            await self.session.scalars(query.order_by(Team.created_at, Team.id).limit(limit + 1))
        ).all()
        return _filtered_page(rows, limit, lambda team: [team.created_at, team.id], scope)

    async def to_recheck(self, since: datetime) -> Sequence[Team]:
        """The teams updated at or after ``since``, and the paused teams with jobs queued at
        them (a lease that ended after the pause put its job back there): the sweeper's
        recheck."""
        queued_at_team = (
            select(Job.id)
            .where(Job.team_id == Team.id, Job.status == JobStatus.QUEUED.value)
            .exists()
        )
        query = (
            select(Team)
            .where(or_(Team.updated_at >= since, and_(Team.active.is_(False), queued_at_team)))
            .order_by(Team.id)
        )
        return (await self.session.scalars(query)).all()

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


_JOB_EVENTS: Table = JobEvent.__table__  # type: ignore[assignment]
_ROUTING_DECISIONS: Table = RoutingDecision.__table__  # type: ignore[assignment]
# ``Job`` attribute names <-> ``jobs`` column keys (they differ for ``job_metadata``).
_JOB_ATTRIBUTE_OF_COLUMN = {
    attribute.columns[0].key: attribute.key for attribute in Job.__mapper__.column_attrs
}
_JOB_COLUMN_OF_ATTRIBUTE = {value: key for key, value in _JOB_ATTRIBUTE_OF_COLUMN.items()}
# The prebuilt job inserts by dialect name (see _insert_new_job).
_NEW_JOB_INSERTS = {dialect: _insert_new_job(dialect) for dialect in ("postgresql", "sqlite")}
# Prebuilt Core inserts: their compiled forms are cached, not built again for every submit.
_INSERT_EVENTS = insert(_JOB_EVENTS)
_INSERT_DECISION = insert(_ROUTING_DECISIONS)


# A submit carrying an outbox token and the gateway's withdrawal of that token must not both
# succeed: one stores the job, the other records that it must never be stored. On SQLite each
# side's first write takes the database's write lock, so they run one after the other. On
# PostgreSQL two READ COMMITTED transactions would each miss the other's uncommitted row, so
# both take an advisory lock on the job id (a submit a shared one: retries of one submit do not
# wait on each other) before the statement that reads the other's row.
_WITHDRAWAL_LOCK_SPACE = 0x54524A57  # "TRJW" in ASCII: this fence's slice of the lock space
_WITHDRAWALS: Table = JobWithdrawal.__table__  # type: ignore[assignment]
_JOBS: Table = Job.__table__  # type: ignore[assignment]
_LOCK_JOB_ID_SHARED = select(
    func.pg_advisory_xact_lock_shared(
        literal(_WITHDRAWAL_LOCK_SPACE), func.hashtext(bindparam("job_id", type_=String))
    )
)
_LOCK_JOB_ID = select(
    func.pg_advisory_xact_lock(
        literal(_WITHDRAWAL_LOCK_SPACE), func.hashtext(bindparam("job_id", type_=String))
    )
)
_TEAM_LOAD = select(_TEAM_LOADS.c.active_jobs).where(_TEAM_LOADS.c.team_id == bindparam("team_id"))
_IS_WITHDRAWN = select(literal(1)).where(
    _WITHDRAWALS.c.job_id == bindparam("job_id"),
    _WITHDRAWALS.c.outbox_token == bindparam("outbox_token"),
)
_TENANT_HAS_JOB = select(literal(1)).where(
    _JOBS.c.id == bindparam("job_id"), _JOBS.c.tenant_id == bindparam("tenant_id")
)


def _withdraw_unless_stored(dialect: str) -> Insert:
    """The withdrawal row, unless the tenant's job is stored: one statement, so on SQLite the
    check is made under the write lock the insert takes."""
    columns = ("job_id", "outbox_token", "tenant_id", "withdrawn_at")
    values = select(*(bindparam(name, type_=_WITHDRAWALS.c[name].type) for name in columns))
    on_dialect = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        on_dialect(_WITHDRAWALS)
        .from_select(columns, values.where(~exists(_TENANT_HAS_JOB)))
        .on_conflict_do_nothing()
    )


_WITHDRAW = {dialect: _withdraw_unless_stored(dialect) for dialect in ("postgresql", "sqlite")}


# The statuses a tenant's policy still governs: everything but completed and cancelled.
_GOVERNED_STATUSES = tuple(
    status.value for status in JobStatus if status not in (JobStatus.COMPLETED, JobStatus.CANCELLED)
)

# A job's policy as stored (JSON text: PostgreSQL's json type has no equality to group by).
_POLICY_TEXT = cast(Job.policy, Text)


def _held_by(team_id: str) -> ColumnElement[bool]:
    """The jobs in a team's hands: queued for it, leased to one of its members, or in review
    (its work, or its to review)."""
    return or_(
        and_(
            Job.team_id == team_id,
            Job.status.in_((JobStatus.QUEUED.value, JobStatus.IN_PROGRESS.value)),
        ),
        and_(
            or_(Job.review_team_id == team_id, Job.team_id == team_id),
            Job.status == JobStatus.IN_REVIEW.value,
        ),
    )


def _governed_of(tenant_id: str) -> ColumnElement[bool]:
    return and_(Job.tenant_id == tenant_id, Job.status.in_(_GOVERNED_STATUSES))


def _made_before(version: int) -> ColumnElement[bool]:
    """Whether a job was made (or last held) under a tenant policy older than ``version``."""
    return or_(Job.policy_version.is_(None), Job.policy_version < version)


@dataclass(frozen=True)
class PolicyStance:
    """What a change to a tenant's policy or to a team decides a job by: its status, team
    and review team, its policy (JSON text), and whether it was made under an older version
    of the tenant's policy (0 or 1; always 0 for a team's change)."""

    status: str
    team_id: str | None
    review_team_id: str | None
    policy: str
    made_before: int


def _stance_columns(made_before: ColumnElement[bool] | None) -> tuple[Any, ...]:
    older = literal(0) if made_before is None else case((made_before, 1), else_=0)
    return (Job.status, Job.team_id, Job.review_team_id, _POLICY_TEXT, older)


# Jobs loaded by id per query: well under SQLite's limit on bound parameters.
_LOAD_BATCH = 500


# A tenant's policy change and a submission for that tenant must not miss each other: the
# change tightens the stored jobs, the submission reads the policy before deciding. On SQLite
# the write lock puts one after the other (a submission's read may still come first: the
# sweeper's recheck of recent changes, and every claim and read, cover that). On PostgreSQL
# the submission holds a shared advisory lock on the tenant from its read to its commit and the
# change an exclusive one, so the change waits for submissions that read the old policy and
# then finds their jobs.
_TENANT_POLICY_LOCK_SPACE = 0x54525450  # "TRTP" in ASCII
_TENANT_POLICIES: Table = TenantPolicy.__table__  # type: ignore[assignment]
_TENANT_KEY = func.hashtext(bindparam("tenant_id", type_=String))
_POLICY_OF_TENANT = select(_TENANT_POLICIES.c.version, _TENANT_POLICIES.c.policy).where(
    _TENANT_POLICIES.c.tenant_id == bindparam("tenant_id")
)
# Its own statement, before the read: under READ COMMITTED a statement sees the database as
# it was when it began, so a read that waited for the lock in the same statement would still
# see the policy from before the change it waited for.
_LOCK_TENANT_POLICY_SHARED = select(
    func.pg_advisory_xact_lock_shared(literal(_TENANT_POLICY_LOCK_SPACE), _TENANT_KEY)
)
_LOCK_TENANT_POLICY = select(
    func.pg_advisory_xact_lock(literal(_TENANT_POLICY_LOCK_SPACE), _TENANT_KEY)
)


def _put_newer_policy(dialect: str) -> Insert:
    """The tenant's policy at ``version``, unless a version as new is stored already."""
    on_dialect = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = on_dialect(_TENANT_POLICIES).values(
        tenant_id=bindparam("tenant_id"),
        version=bindparam("version"),
        policy=bindparam("policy"),
        updated_at=bindparam("updated_at"),
    )
    return statement.on_conflict_do_update(
        index_elements=[_TENANT_POLICIES.c.tenant_id],
        set_={
            "version": statement.excluded.version,
            "policy": statement.excluded.policy,
            "updated_at": statement.excluded.updated_at,
        },
        where=_TENANT_POLICIES.c.version < statement.excluded.version,
    ).returning(_TENANT_POLICIES.c.version)


_PUT_NEWER_POLICY = {dialect: _put_newer_policy(dialect) for dialect in ("postgresql", "sqlite")}


@dataclass(frozen=True)
class StoredTenantPolicy:
    version: int
    policy: dict[str, Any]


class TenantPolicyRepository:
    """Tenants' policies as the gateway pushed them (:class:`TenantPolicy`)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name

    async def for_submission(self, tenant_id: str) -> StoredTenantPolicy | None:
        """The tenant's policy for a submission being decided; on PostgreSQL with the tenant's
        shared lock, held to commit (see ``_TENANT_POLICY_LOCK_SPACE``)."""
        if self.dialect == "postgresql":
            await execute(self.session, _LOCK_TENANT_POLICY_SHARED, {"tenant_id": tenant_id})
        return await self.get(tenant_id)

    async def get(self, tenant_id: str) -> StoredTenantPolicy | None:
        row = (await execute(self.session, _POLICY_OF_TENANT, {"tenant_id": tenant_id})).first()
        return None if row is None else StoredTenantPolicy(version=int(row[0]), policy=row[1])

    async def put_if_newer(
        self, tenant_id: str, *, version: int, policy: dict[str, Any], now: datetime
    ) -> bool:
        """Store the tenant's policy at ``version`` unless as new a one is stored (a push
        repeated, or overtaken); whether it was stored. On PostgreSQL it first waits for the
        submissions of the tenant that read the policy before (``_TENANT_POLICY_LOCK_SPACE``)."""
        if self.dialect == "postgresql":
            await execute(self.session, _LOCK_TENANT_POLICY, {"tenant_id": tenant_id})
        stored = await execute(
            self.session,
            _PUT_NEWER_POLICY[self.dialect],
            {"tenant_id": tenant_id, "version": version, "policy": policy, "updated_at": now},
        )
        return stored.first() is not None

    async def changed_since(self, since: datetime) -> Sequence[TenantPolicy]:
        """The policies pushed at or after ``since`` (the sweeper's recheck)."""
        query = select(TenantPolicy).where(TenantPolicy.updated_at >= since)
        return (await self.session.scalars(query)).all()


def _check_event_type(event_type: str) -> None:
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}: add it to lifecycle.EVENT_TYPES")


# The event feed (api/events.py): the oldest outbox rows, each with its event and tenant.
UNPUBLISHED_EVENTS = (
    select(
        JobEventOutbox.id,
        JobEvent.job_id,
        JobEvent.seq,
        JobEvent.at,
        JobEvent.type,
        JobEvent.to_status,
        Job.tenant_id,
    )
    .join(
        JobEvent,
        and_(JobEvent.job_id == JobEventOutbox.job_id, JobEvent.seq == JobEventOutbox.seq),
    )
    .join(Job, Job.id == JobEventOutbox.job_id)
    .order_by(JobEventOutbox.id)
    .limit(bindparam("limit"))
)


@dataclass(frozen=True)
class FeedEvent:
    """One row of the event feed."""

    outbox_id: int
    job_id: str
    seq: int
    at: datetime
    type: str
    to_status: str
    tenant_id: str


_EVENT_OUTBOX: Table = JobEventOutbox.__table__  # type: ignore[assignment]
_INSERT_OUTBOX = insert(_EVENT_OUTBOX)


class JobRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def dialect(self) -> str:
        """The database's dialect name ("postgresql", "sqlite")."""
        return self.session.get_bind().dialect.name

    async def add_if_new(self, values: dict[str, Any]) -> JobView | None:
        """Insert a job (``values`` by ``Job`` attribute) unless its id exists (then ``None``):
        concurrent submissions of one id make one row, without an error that would abort the
        transaction. Returns the stored row as a read-only :class:`JobView`, not an entity."""
        statement = _NEW_JOB_INSERTS[self.dialect]
        parameters = {_JOB_COLUMN_OF_ATTRIBUTE[key]: value for key, value in values.items()}
        # RETURNING the whole row: one round trip where a re-read made two.
        row: JobView | None = (await execute(self.session, statement, parameters)).first()
        return row

    async def is_withdrawn(self, job_id: str, *, outbox_token: str) -> bool:
        """Whether the gateway withdrew this submission (see :class:`JobWithdrawal`). Call it
        after inserting the job, in the same transaction: the answer then holds until commit."""
        parameters = {"job_id": job_id, "outbox_token": outbox_token}
        if self.dialect == "postgresql":
            await execute(self.session, _LOCK_JOB_ID_SHARED, {"job_id": job_id})
        return (await execute(self.session, _IS_WITHDRAWN, parameters)).first() is not None

    async def withdraw(
        self, job_id: str, *, tenant_id: str, outbox_token: str, now: datetime
    ) -> bool:
        """Record that the submission with ``outbox_token`` must never store the job, unless
        the tenant's job is already stored; whether it is withdrawn (False: the job is here)."""
        if self.dialect == "postgresql":
            await execute(self.session, _LOCK_JOB_ID, {"job_id": job_id})
        await execute(
            self.session,
            _WITHDRAW[self.dialect],
            {
                "job_id": job_id,
                "outbox_token": outbox_token,
                "tenant_id": tenant_id,
                "withdrawn_at": now,
            },
        )
        stored = await execute(
            self.session, _TENANT_HAS_JOB, {"job_id": job_id, "tenant_id": tenant_id}
        )
        return stored.first() is None

    async def forget_withdrawals(self, *, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` withdrawals recorded before ``before``; how many."""
        oldest = (
            select(_WITHDRAWALS.c.job_id, _WITHDRAWALS.c.outbox_token)
            .where(_WITHDRAWALS.c.withdrawn_at < before)
            .limit(limit)
        )
        result = await self.session.execute(
            delete(_WITHDRAWALS).where(
                tuple_(_WITHDRAWALS.c.job_id, _WITHDRAWALS.c.outbox_token).in_(oldest)
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)

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
        _check_event_type(event.type)
        self.session.add(event)
        await self.session.flush()
        if reported_to_client(event.type, event.to_status):
            await execute(self.session, _INSERT_OUTBOX, {"job_id": event.job_id, "seq": event.seq})

    async def add_events(self, rows: Sequence[dict[str, Any]]) -> None:
        """Several events in one round trip: a Core insert given a list of rows is sent as one
        multi-row INSERT ("insertmanyvalues"), and unlike ``.values([...])`` on the entity its
        compiled form is cached instead of compiled again for every submit."""
        for row in rows:
            _check_event_type(row["type"])
        await execute_many(self.session, _INSERT_EVENTS, rows)
        await execute_many(
            self.session,
            _INSERT_OUTBOX,
            [
                {"job_id": row["job_id"], "seq": row["seq"]}
                for row in rows
                if reported_to_client(row["type"], row["to_status"])
            ],
        )

    async def unpublished_events(self, *, limit: int) -> list[FeedEvent]:
        """The oldest events in the outbox (clients hear of them, the gateway has not taken
        them yet), with their outbox ids and tenants."""
        rows = await self.session.execute(UNPUBLISHED_EVENTS, {"limit": limit})
        return [
            FeedEvent(
                outbox_id=outbox_id,
                job_id=job_id,
                seq=seq,
                at=at,
                type=event_type,
                # Only events with a new status are in the outbox (reported_to_client).
                to_status=str(to_status),
                tenant_id=tenant_id,
            )
            for outbox_id, job_id, seq, at, event_type, to_status, tenant_id in rows
        ]

    async def jobs_by_id(self, job_ids: set[str]) -> dict[str, Job]:
        """These jobs as they are now, by id (the feed's, for tenants with webhooks)."""
        if not job_ids:
            return {}
        jobs = await self.session.scalars(select(Job).where(Job.id.in_(sorted(job_ids))))
        return {job.id: job for job in jobs}

    async def event_outbox_backlog(self) -> tuple[int, datetime | None]:
        """How many events wait in the outbox, and when the oldest of them happened."""
        count = (await self.session.execute(select(func.count(JobEventOutbox.id)))).scalar_one()
        oldest = await self.unpublished_events(limit=1)
        return int(count), oldest[0].at if oldest else None

    async def mark_published(self, outbox_ids: Sequence[int]) -> int:
        """The gateway has these events in its webhook outbox: their rows go; how many were
        still there (a second replica, or a retried call, marking them again changes nothing)."""
        result = await self.session.execute(
            delete(JobEventOutbox).where(JobEventOutbox.id.in_(outbox_ids))
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def events_page(
        self,
        job_id: str,
        *,
        limit: int,
        cursor: str | None,
        types: tuple[str, ...] = (),
        request_id: str | None = None,
    ) -> Page[JobEvent]:
        """A job's timeline, oldest first, ``limit`` events a page, optionally of ``types``
        only, or made by one request (the cursor is bound to these filters)."""
        query = select(JobEvent).where(JobEvent.job_id == job_id)
        if types:
            query = query.where(JobEvent.type.in_(types))
        scope: dict[str, Any] = {"list": "events", "job": job_id, "type": types}
        if request_id is not None:
            query = query.where(JobEvent.request_id == request_id)
            scope["request_id"] = request_id
        if cursor:
            (after_seq,) = decode_filtered_cursor(cursor, (int,), scope)
            query = query.where(JobEvent.seq > after_seq)
        rows = (await self.session.scalars(query.order_by(JobEvent.seq).limit(limit + 1))).all()
        return _filtered_page(rows, limit, lambda event: [event.seq], scope)

    async def events(self, job_id: str) -> Sequence[JobEvent]:
        result = await self.session.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)
        )
        return result.all()

    async def list_for_tenant(
        self,
        *,
        tenant_id: str,
        status: str | None,
        limit: int,
        cursor: str | None,
        filters: JobFilters | None = None,
    ) -> Page[Job]:
        """A tenant's jobs, newest first, narrowed in the query by ``filters``.

        The tenant condition is always added: no filter can widen the list beyond it.
        """
        filters = _with_status(filters or JobFilters(), status)
        filters = JobFilters(**{**filters.__dict__, "tenant_id": None})
        query = filters.apply(select(Job).where(Job.tenant_id == tenant_id))
        scope = {"list": "jobs", "tenant": tenant_id, **filters.as_dict()}
        if cursor:
            created_at, job_id = decode_filtered_cursor(cursor, (datetime, str), scope)
            query = query.where(
                or_(
                    Job.created_at < created_at,
                    and_(Job.created_at == created_at, Job.id < job_id),
                )
            )
        query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
        rows = (await self.session.scalars(query)).all()
        return _filtered_page(rows, limit, lambda job: [job.created_at, job.id], scope)

    async def team_queue(
        self,
        *,
        team_id: str,
        status: str | None,
        limit: int,
        cursor: str | None,
        filters: JobFilters | None = None,
    ) -> Page[Job]:
        """A team's queued and in-progress jobs in serving order: priority with aging, i.e.
        by the virtual enqueue time ``queue_order_at`` (see domain/queueing.py), then id.

        ``filters`` narrow it (their statuses only within the queue's own statuses)."""
        filters = _with_status(filters or JobFilters(), status)
        allowed = [s for s in (filters.statuses or ACTIVE_STATUSES) if s in ACTIVE_STATUSES]
        narrowed = JobFilters(**{**filters.__dict__, "statuses": (), "tenant_id": None})
        query = narrowed.apply(select(Job).where(Job.team_id == team_id, Job.status.in_(allowed)))
        scope = {"list": "queue", "team": team_id, **narrowed.as_dict(), "status": filters.statuses}
        if cursor:
            order_at, job_id = decode_filtered_cursor(cursor, (datetime, str), scope)
            query = query.where(
                or_(
                    Job.queue_order_at > order_at,
                    and_(Job.queue_order_at == order_at, Job.id > job_id),
                )
            )
        query = query.order_by(Job.queue_order_at, Job.id).limit(limit + 1)
        rows = (await self.session.scalars(query)).all()
        return _filtered_page(rows, limit, lambda job: [job.queue_order_at, job.id], scope)

    async def by_status(
        self, *, status: str, limit: int, cursor: str | None, filters: JobFilters | None = None
    ) -> Page[Job]:
        """Jobs in one status, oldest first (the triage queue), narrowed by ``filters``
        (their own statuses are ignored: the list is of ``status`` alone)."""
        narrowed = JobFilters(**{**(filters or JobFilters()).__dict__, "statuses": ()})
        query = narrowed.apply(select(Job).where(Job.status == status))
        scope = {"list": f"status:{status}", **narrowed.as_dict()}
        if cursor:
            created_at, job_id = decode_filtered_cursor(cursor, (datetime, str), scope)
            query = query.where(
                or_(
                    Job.created_at > created_at,
                    and_(Job.created_at == created_at, Job.id > job_id),
                )
            )
        query = query.order_by(Job.created_at, Job.id).limit(limit + 1)
        rows = (await self.session.scalars(query)).all()
        return _filtered_page(rows, limit, lambda job: [job.created_at, job.id], scope)

    async def team_loads(self) -> dict[str, int]:
        """Queued plus in-progress jobs per team with any (one team's: :meth:`team_load`).

        Read from the ``team_loads`` counters the database keeps in step with every job write
        (models.TeamLoad, migration 0005): one indexed row per team, however long the queues.
        :meth:`counted_team_loads` is the same figure counted from the jobs."""
        query = select(TeamLoad.team_id, TeamLoad.active_jobs).where(TeamLoad.active_jobs != 0)
        rows = (await self.session.execute(query)).all()
        return {str(team_id): int(count) for team_id, count in rows}

    async def team_load(self, team_id: str) -> int:
        """One team's queued plus in-progress jobs (see :meth:`team_loads`). A prebuilt
        statement on the driver: routing reads it on every submit and claim (an ``IN`` list
        through the ORM cost ~6 % of the router's CPU per submit; BENCHMARKS.md, session 22)."""
        row = (await execute(self.session, _TEAM_LOAD, {"team_id": team_id})).first()
        return 0 if row is None else int(row[0])

    async def counted_team_loads(self) -> dict[str, int]:
        """``team_loads()`` by ``COUNT(*)`` over the jobs (to check the counters)."""
        query = (
            select(Job.team_id, func.count())
            .where(Job.status.in_(ACTIVE_STATUSES), Job.team_id.is_not(None))
            .group_by(Job.team_id)
        )
        rows = (await self.session.execute(query)).all()
        return {str(team_id): int(count) for team_id, count in rows}

    async def expired_leases(self, *, now: datetime, limit: int) -> Sequence[Job]:
        """In-progress jobs whose lease ran out, locked like :meth:`due_escalations` so sweeper
        replicas share the work instead of queueing behind each other."""
        query = (
            select(Job)
            .where(Job.status == JobStatus.IN_PROGRESS.value, Job.lease_expires_at <= now)
            .order_by(Job.lease_expires_at, Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
        return (await self.session.scalars(query)).all()

    async def due_unroutable(self, *, now: datetime, limit: int) -> Sequence[Job]:
        query = (
            select(Job)
            .where(Job.status == JobStatus.UNROUTABLE.value, Job.retry_at <= now)
            .order_by(Job.retry_at, Job.created_at)
            .limit(limit)
            # Locked up front like the other scans: a pass then never waits for a job row
            # while holding team-load counters it updated for earlier jobs (no lock cycle).
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
        return (await self.session.scalars(query)).all()

    # A policy or team change decides jobs that stand alike (status, teams, policy, whether
    # made under an older tenant policy) alike: its pass reads the distinct stances, grouped
    # by SQL, and loads only the jobs of the stances it has something to do with.

    async def held_stances(self, team_id: str) -> list[PolicyStance]:
        """Where the jobs in ``team_id``'s hands stand (:func:`_held_by`)."""
        return await self._stances(_held_by(team_id), made_before=None)

    async def held_in(self, team_id: str, stances: Set[PolicyStance]) -> list[Job]:
        """The jobs in ``team_id``'s hands that stand as one of ``stances`` says, by id."""
        return await self._standing(_held_by(team_id), stances, made_before=None)

    async def active_stances(self, tenant_id: str, *, version: int) -> list[PolicyStance]:
        """Where the tenant's jobs not yet completed or cancelled (those a policy still
        governs) stand, under a change to its policy ``version``."""
        return await self._stances(_governed_of(tenant_id), made_before=_made_before(version))

    async def active_in(
        self, tenant_id: str, stances: Set[PolicyStance], *, version: int
    ) -> list[Job]:
        """The tenant's active jobs that stand as one of ``stances`` says, under a change to
        its policy ``version``, by id."""
        return await self._standing(
            _governed_of(tenant_id), stances, made_before=_made_before(version)
        )

    async def _stances(
        self, jobs: ColumnElement[bool], *, made_before: ColumnElement[bool] | None
    ) -> list[PolicyStance]:
        query = select(*_stance_columns(made_before)).where(jobs).distinct()
        return [PolicyStance(*row) for row in (await self.session.execute(query)).all()]

    async def _standing(
        self,
        jobs: ColumnElement[bool],
        stances: Set[PolicyStance],
        *,
        made_before: ColumnElement[bool] | None,
    ) -> list[Job]:
        """One light read of the jobs' ids and stances, then the jobs of ``stances`` by id.
        (A query per stance would read the jobs once per stance: a tenant whose jobs narrow
        its policy each their own way has as many stances as jobs.)"""
        if not stances:
            return []
        light = select(Job.id, *_stance_columns(made_before)).where(jobs)
        ids = sorted(
            row[0]
            for row in (await self.session.execute(light)).all()
            if PolicyStance(*row[1:]) in stances
        )
        loaded: list[Job] = []
        for start in range(0, len(ids), _LOAD_BATCH):
            query = (
                select(Job)
                .where(jobs, Job.id.in_(ids[start : start + _LOAD_BATCH]))
                .order_by(Job.id)
                .execution_options(populate_existing=True)
            )
            loaded.extend((await self.session.scalars(query)).all())
        return loaded

    async def due_escalations(self, *, now: datetime, limit: int) -> Sequence[Job]:
        """Queued jobs whose escalation time has come, locked for this sweeper's transaction.

        ``FOR UPDATE SKIP LOCKED`` on PostgreSQL: a second replica sweeping at the same moment
        takes other jobs instead of waiting for these (SQLite has one writer and ignores it).
        Each move is still a conditional UPDATE, so a claim that landed first wins.
        """
        query = (
            select(Job)
            .where(Job.status == JobStatus.QUEUED.value, Job.escalate_at <= now)
            .order_by(Job.escalate_at, Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
        return (await self.session.scalars(query)).all()

    async def add_feedback_if_new(self, values: dict[str, Any]) -> int | None:
        """Insert a job's feedback unless it has one already (then ``None``), atomically."""
        statement = _insert_if_absent(self.session, JobFeedback, values, unique="job_id")
        inserted = (await self.session.execute(statement)).scalar_one_or_none()
        return None if inserted is None else int(inserted)

    async def set_feedback_quality(
        self, feedback_id: int, *, quality_before: float | None, quality_after: float | None
    ) -> JobFeedback:
        """Record what a feedback did to its team's quality; returns the stored feedback."""
        statement = (
            update(JobFeedback)
            .where(JobFeedback.id == feedback_id)
            .values(quality_before=quality_before, quality_after=quality_after)
            .returning(JobFeedback)
            .execution_options(synchronize_session=False)
        )
        result = await self.session.execute(
            statement, execution_options={"populate_existing": True}
        )
        return result.scalars().one()

    async def feedback(self, job_id: str) -> JobFeedback | None:
        query = select(JobFeedback).where(JobFeedback.job_id == job_id)
        result = await self.session.scalars(query.execution_options(populate_existing=True))
        return result.first()

    async def add_decision(
        self, *, job_id: str, team_id: str | None, record: dict[str, Any], created_at: datetime
    ) -> None:
        """Store a routing decision record (a prebuilt Core insert: no entity, no flush)."""
        await execute(
            self.session,
            _INSERT_DECISION,
            {"job_id": job_id, "team_id": team_id, "record": record, "created_at": created_at},
        )

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
        """(team id, status, count) for queued and in-progress jobs, each count above zero.

        One statement: each team's ``team_loads`` counter (queued plus in progress) and its
        in-progress jobs, counted on ``ix_jobs_team_queue``; the rest are queued. Counting
        every active job took a scrape 25-28 ms at 24,000 of them on SQLite, with the event
        loop blocked; the queues are the part that grows."""
        in_progress = (
            select(func.count())
            .where(Job.team_id == TeamLoad.team_id, Job.status == JobStatus.IN_PROGRESS.value)
            .scalar_subquery()
        )
        query = select(TeamLoad.team_id, TeamLoad.active_jobs, in_progress).where(
            TeamLoad.active_jobs != 0
        )
        depths = []
        for team_id, active, leased in (await self.session.execute(query)).all():
            for status, count in (
                (JobStatus.QUEUED.value, int(active) - int(leased)),
                (JobStatus.IN_PROGRESS.value, int(leased)),
            ):
                if count > 0:
                    depths.append((str(team_id), status, count))
        return depths


# ----------------------------------------------------------------------------- statistics

# Statuses in which a job can still miss its deadline (not yet completed or cancelled).
OPEN_STATUSES = (
    JobStatus.PENDING.value,
    JobStatus.QUEUED.value,
    JobStatus.IN_PROGRESS.value,
    JobStatus.IN_REVIEW.value,
    JobStatus.TRIAGE.value,
    JobStatus.UNROUTABLE.value,
)


@dataclass(frozen=True)
class TeamQueueRow:
    team_id: str
    queued: int
    in_progress: int
    # When the longest-waiting queued job was assigned to this team (None: nothing queued).
    oldest_queued_since: datetime | None


@dataclass(frozen=True)
class SlaCounts:
    completed_late: int
    completed_on_time: int
    open_overdue: int


@dataclass(frozen=True)
class EventCounts:
    total: int
    in_window: int


class StatsRepository:
    """Aggregate queries behind ``GET /internal/v1/stats``.

    Every figure is a grouped count, sum or min computed by the database; the only rows brought
    into Python are a bounded sample of recent claims for the wait-time percentiles. Datetime
    arithmetic differs between SQLite (text) and PostgreSQL, so the queries only compare
    datetimes (which both backends do correctly on the UTC values ``UTCDateTime`` stores) and
    leave subtraction to Python.
    """

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def team_queues(self) -> dict[str, TeamQueueRow]:
        """Queued and in-progress counts per team, with the oldest queued job's assignment time."""
        query = (
            select(Job.team_id, Job.status, func.count(), func.min(Job.assigned_at))
            .where(Job.status.in_(ACTIVE_STATUSES), Job.team_id.is_not(None))
            .group_by(Job.team_id, Job.status)
        )
        counts: dict[str, dict[str, int]] = {}
        oldest: dict[str, datetime | None] = {}
        for team_id, status, count, since in (await self.session.execute(query)).all():
            counts.setdefault(str(team_id), {})[str(status)] = int(count)
            if status == JobStatus.QUEUED.value:
                oldest[str(team_id)] = since
        return {
            team_id: TeamQueueRow(
                team_id=team_id,
                queued=by_status.get(JobStatus.QUEUED.value, 0),
                in_progress=by_status.get(JobStatus.IN_PROGRESS.value, 0),
                oldest_queued_since=oldest.get(team_id),
            )
            for team_id, by_status in counts.items()
        }

    async def queued_by_tier_and_domain(self) -> list[tuple[str, str, int]]:
        """(tier, domain, count) of the jobs waiting in a team's queue."""
        query = (
            select(Job.tier, Job.domain, func.count())
            .where(Job.status == JobStatus.QUEUED.value)
            .group_by(Job.tier, Job.domain)
        )
        return [
            (str(tier), str(domain), int(count))
            for tier, domain, count in (await self.session.execute(query)).all()
        ]

    async def claim_count(self, *, since: datetime, until: datetime) -> int:
        """Claims made in ``[since, until]`` (each one ended a wait in a queue)."""
        query = select(func.count()).where(
            JobEvent.type == "claimed", JobEvent.at >= since, JobEvent.at <= until
        )
        return int((await self.session.execute(query)).scalar_one())

    async def recent_waits(
        self, *, since: datetime, until: datetime, limit: int
    ) -> list[tuple[datetime, datetime]]:
        """(queued at, claimed at) of the latest ``limit`` claims in ``[since, until]``.

        A claim's wait starts at the job's latest earlier event that brought it into the queue
        from another status (routed, released, requeued after a lease expiry, routed from
        triage), found through the unique ``(job_id, seq)`` index: a job requeued and claimed
        again counts each wait separately. Moves from queue to queue (a reject of a queued job,
        an escalation, an operator's reassignment) do not restart the wait: the job was waiting
        all along.
        """
        claim = aliased(JobEvent)
        entered = aliased(JobEvent)
        earlier = aliased(JobEvent)
        last_queued_seq = (
            select(func.max(earlier.seq))
            .where(
                earlier.job_id == claim.job_id,
                earlier.seq < claim.seq,
                earlier.to_status == JobStatus.QUEUED.value,
                or_(
                    earlier.from_status.is_(None),
                    earlier.from_status != JobStatus.QUEUED.value,
                ),
            )
            .correlate(claim)
            .scalar_subquery()
        )
        query = (
            select(entered.at, claim.at)
            .select_from(claim)
            .join(entered, and_(entered.job_id == claim.job_id, entered.seq == last_queued_seq))
            .where(claim.type == "claimed", claim.at >= since, claim.at <= until)
            .order_by(claim.at.desc(), claim.id.desc())
            .limit(limit)
        )
        return [(queued, claimed) for queued, claimed in (await self.session.execute(query)).all()]

    async def event_counts(self, event_type: str, *, since: datetime) -> EventCounts:
        """How many events of ``event_type`` exist, and how many happened since ``since``."""
        query = select(
            func.count(), func.coalesce(func.sum(case((JobEvent.at >= since, 1), else_=0)), 0)
        ).where(JobEvent.type == event_type)
        total, in_window = (await self.session.execute(query)).one()
        return EventCounts(total=int(total), in_window=int(in_window))

    async def sla_counts(self, *, now: datetime) -> SlaCounts:
        """Jobs with a deadline: completed after it, completed by it, and open past it."""
        completed = Job.status == JobStatus.COMPLETED.value
        late = and_(completed, Job.completed_at > Job.due_at)
        on_time = and_(completed, Job.completed_at <= Job.due_at)
        overdue = and_(Job.status.in_(OPEN_STATUSES), Job.due_at < now)
        query = select(
            *(
                func.coalesce(func.sum(case((condition, 1), else_=0)), 0)
                for condition in (late, on_time, overdue)
            )
        ).where(Job.due_at.is_not(None))
        late_count, on_time_count, overdue_count = (await self.session.execute(query)).one()
        return SlaCounts(
            completed_late=int(late_count),
            completed_on_time=int(on_time_count),
            open_overdue=int(overdue_count),
        )
