"""The router's tables: teams, jobs, job events, routing decisions, labelled examples.

No column holds confidential data: a job has only the vault's opaque ``confidential_ref`` (and
``confidential_result_ref``). Relationships are ``lazy="raise"`` so a hidden query fails in tests.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import UTCDateTime, new_base

if TYPE_CHECKING:
    # new_base() builds the class at run time; mypy needs a static class to check the models.
    class Base(DeclarativeBase):
        pass
else:
    Base = new_base()

# UUIDs as text: portable across SQLite and PostgreSQL and compared as the gateway sends them.
_ID = 36


def _created_at(context: Any) -> Any:
    """Default of ``queue_order_at``: the row's own ``created_at`` (no head start)."""
    return context.get_current_parameters()["created_at"]


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    country: Mapped[str] = mapped_column(String(2))
    timezone: Mapped[str] = mapped_column(String(64))
    working_hours: Mapped[dict[str, Any]] = mapped_column(JSON)
    tier: Mapped[str] = mapped_column(String(3))
    skills: Mapped[list[str]] = mapped_column(JSON)
    certifications: Mapped[list[str]] = mapped_column(JSON)
    languages: Mapped[list[str]] = mapped_column(JSON)
    capacity: Mapped[int] = mapped_column(Integer)
    hourly_rate: Mapped[float] = mapped_column(Float)
    quality: Mapped[float] = mapped_column(Float)
    # Client ratings folded into ``quality`` since it was last set (domain/quality.py).
    quality_rating_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    active: Mapped[bool] = mapped_column(Boolean)
    # Bumped by every change of the team (TeamRepository.update_versioned): If-Match, and
    # the routing's cached team profiles (workflow.TeamProfileCache) rely on it.
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_teams_created_at_id", "created_at", "id"),)


class TeamLoad(Base):
    """A team's queued plus in-progress jobs, kept by the database itself.

    Triggers on ``jobs`` (migration 0005) add or subtract one in the same statement as every
    insert, delete or change of a job's ``status`` or ``team_id`` that moves it into or out of
    a team's queued/in-progress set, and a trigger on ``teams`` makes each team's row. Every
    writer (the workflow, the sweeper, a bulk load, an operator's SQL) keeps it right, and the
    increment is an atomic ``active_jobs = active_jobs + 1`` under the row's lock. Routing
    reads it instead of counting jobs (:meth:`JobRepository.team_loads`).
    """

    __tablename__ = "team_loads"

    team_id: Mapped[str] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    active_jobs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(_ID))
    status: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    service: Mapped[str | None] = mapped_column(String(32))
    priority: Mapped[str] = mapped_column(String(8))
    # 0 = high, 1 = normal, 2 = low (kept for filters and statistics).
    priority_rank: Mapped[int] = mapped_column(Integer)
    # The team queue's order: created_at minus the priority's head start (domain/queueing.py).
    # Rows written without it (fixtures, old code) queue by age alone.
    queue_order_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_created_at)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # "metadata" is reserved on declarative classes, hence the attribute name.
    job_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The tenant's policy version ``policy`` was last made under (the gateway's at submission,
    # or a pushed change's: see TenantPolicy); None from a gateway older than versions.
    policy_version: Mapped[int | None] = mapped_column(Integer)
    callback_url: Mapped[str | None] = mapped_column(Text)
    confidential_ref: Mapped[str | None] = mapped_column(String(200))

    tier: Mapped[str | None] = mapped_column(String(3))
    domain: Mapped[str | None] = mapped_column(String(32))
    confidence: Mapped[float | None] = mapped_column(Float)
    reasons: Mapped[list[str] | None] = mapped_column(JSON)

    team_id: Mapped[str | None] = mapped_column(ForeignKey("teams.id"))
    team_name: Mapped[str | None] = mapped_column(String(200))
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    assignment_score: Mapped[float | None] = mapped_column(Float)
    # Teams that rejected this job; routing never offers it to them again.
    rejected_team_ids: Mapped[list[str]] = mapped_column(JSON)
    # Teams this job was escalated away from (unclaimed in time); never offered it again.
    passed_team_ids: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    # While queued: when it passes to the next team if nobody claims it (domain/queueing.py).
    escalate_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    lease_member_id: Mapped[str | None] = mapped_column(String(_ID))
    lease_claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    result: Mapped[Any | None] = mapped_column(JSON)
    confidential_result_ref: Mapped[str | None] = mapped_column(String(200))
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Four-eyes review (issue 4 item 5; services/router/reviews.py): while ``in_review``, the
    # team whose members review it, and the member whose completion awaits their decision.
    review_team_id: Mapped[str | None] = mapped_column(String(_ID))
    review_submitted_by: Mapped[str | None] = mapped_column(String(_ID))
    review_submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the sweeper next tries to route an unroutable job.
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The seq of the job's last event; bumped in the same conditional UPDATE as the change.
    event_seq: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        # A team's queue: its queued / in_progress jobs by priority with aging.
        Index("ix_jobs_team_queue", "team_id", "status", "queue_order_at", "id"),
        # A tenant's jobs, newest first, optionally by status.
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_jobs_tenant_status_created", "tenant_id", "status", "created_at", "id"),
        # The triage queue and the statistics by status.
        Index("ix_jobs_status_created", "status", "created_at", "id"),
        # The sweeper's two scans.
        Index("ix_jobs_status_lease_expires", "status", "lease_expires_at"),
        Index("ix_jobs_status_retry", "status", "retry_at"),
        Index("ix_jobs_status_escalate", "status", "escalate_at"),
        # A reviewer team's queue: its jobs in review, oldest submission first.
        Index("ix_jobs_review_queue", "review_team_id", "status", "review_submitted_at", "id"),
    )


class JobView(Protocol):
    """A job row, read only: a ``Job`` entity, or the row ``JobRepository.add_if_new`` returns
    (its columns labelled with these attribute names), which costs no entity to build."""

    @property
    def id(self) -> str: ...

    @property
    def tenant_id(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def service(self) -> str | None: ...

    @property
    def priority(self) -> str: ...

    @property
    def priority_rank(self) -> int: ...

    @property
    def queue_order_at(self) -> datetime: ...

    @property
    def due_at(self) -> datetime | None: ...

    @property
    def job_metadata(self) -> dict[str, Any]: ...

    @property
    def policy(self) -> dict[str, Any]: ...

    @property
    def policy_version(self) -> int | None: ...

    @property
    def callback_url(self) -> str | None: ...

    @property
    def confidential_ref(self) -> str | None: ...

    @property
    def tier(self) -> str | None: ...

    @property
    def domain(self) -> str | None: ...

    @property
    def confidence(self) -> float | None: ...

    @property
    def reasons(self) -> list[str] | None: ...

    @property
    def team_id(self) -> str | None: ...

    @property
    def team_name(self) -> str | None: ...

    @property
    def assigned_at(self) -> datetime | None: ...

    @property
    def assignment_score(self) -> float | None: ...

    @property
    def rejected_team_ids(self) -> list[str]: ...

    @property
    def passed_team_ids(self) -> list[str]: ...

    @property
    def escalate_at(self) -> datetime | None: ...

    @property
    def lease_member_id(self) -> str | None: ...

    @property
    def lease_claimed_at(self) -> datetime | None: ...

    @property
    def lease_expires_at(self) -> datetime | None: ...

    @property
    def result(self) -> Any | None: ...

    @property
    def confidential_result_ref(self) -> str | None: ...

    @property
    def completed_at(self) -> datetime | None: ...

    @property
    def review_team_id(self) -> str | None: ...

    @property
    def review_submitted_by(self) -> str | None: ...

    @property
    def review_submitted_at(self) -> datetime | None: ...

    @property
    def retry_at(self) -> datetime | None: ...

    @property
    def event_seq(self) -> int: ...

    @property
    def created_at(self) -> datetime: ...

    @property
    def updated_at(self) -> datetime: ...


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    type: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(80))
    reason: Mapped[str | None] = mapped_column(Text)
    # The gateway's id for the keyed request that made this event (migration 0006), if any.
    request_id: Mapped[str | None] = mapped_column(String(36))

    __table_args__ = (UniqueConstraint("job_id", "seq", name="uq_job_events_job_id_seq"),)


class JobEventOutbox(Base):
    """An event the job's client hears of, until the gateway holds it in its webhook outbox.

    The router's transactional outbox (migration 0010): a row is written in the transaction
    that makes the change it reports and deleted once the gateway has the event
    (services/router/api/events.py), so the table stays small and ``job_events`` stays an
    append-only timeline. Ordered by ``id``: the feed is oldest first.
    """

    __tablename__ = "job_event_outbox"
    # Ids never reused on SQLite either (a plain rowid would be, once the last row is
    # deleted): a late mark of an id must not delete a newer event no gateway has read.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    # The event's seq in the job's timeline (job_events: job_id, seq).
    seq: Mapped[int] = mapped_column(Integer)


class JobWithdrawal(Base):
    """A submission the gateway rolled back: the job must never be stored from it.

    The gateway's sweeper rolls back a submission that stayed in its outbox past the grace
    period (its request died, or stalled, between sealing and routing) and has the vault
    discard the sealed data. A stalled request may still reach the router afterwards, with a
    reference to the discarded data; this row makes the router refuse it (409
    ``submission-withdrawn``). Keyed by the outbox row's token, not the job id alone: a client
    retrying with the same Idempotency-Key seals again under the same job id, from a new outbox
    row, and must be let through. Never holds confidential data.
    """

    __tablename__ = "job_withdrawals"

    job_id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    outbox_token: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(_ID))
    withdrawn_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TenantPolicy(Base):
    """A tenant's data policy as the gateway last pushed it, with the gateway's version of it.

    Jobs carry their own effective policy (the tenant's narrowed by the job's own ask, made by
    the gateway at submission). When the tenant's policy changes the router tightens every
    active job of the tenant by it (``DataPolicy.tightened_by``), and a submission that left
    the gateway before the change is tightened by this row when it arrives."""

    __tablename__ = "tenant_policies"

    tenant_id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class JobFeedback(Base):
    """A client's rating of a completed job (one per job), and what it did to the team."""

    __tablename__ = "job_feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Unique: the second feedback for a job is refused (409), also under concurrent posts.
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    tenant_id: Mapped[str] = mapped_column(String(_ID))
    team_id: Mapped[str | None] = mapped_column(String(_ID), index=True)
    rating: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    # The team's quality before and after this rating: the rule can be checked row by row.
    quality_before: Mapped[float | None] = mapped_column(Float)
    quality_after: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RoutingDecision(Base):
    __tablename__ = "routing_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    team_id: Mapped[str | None] = mapped_column(String(_ID))
    record: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LabelledExample(Base):
    __tablename__ = "labelled_examples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str | None] = mapped_column(String(_ID), index=True)
    text: Mapped[str] = mapped_column(Text)
    tier: Mapped[str] = mapped_column(String(3))
    domain: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class MemberKey(Base):
    """A member's registered X25519 public key (end-to-end delivery, issue 3).

    The router puts it into the member's open grants as ``recipient_public_key``, so the vault
    re-wraps data only to the key registered here, not to a key the gateway names later.
    """

    __tablename__ = "member_keys"

    member_id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    team_id: Mapped[str] = mapped_column(String(_ID))
    # base64url of the raw 32-byte key, as the public API exchanges it.
    public_key: Mapped[str] = mapped_column(String(64))
    # The member key authority's endorsement of this key (shared/member_endorsements.py),
    # passed on in open grants; the vault checks it when it has the authority's key.
    endorsement: Mapped[str | None] = mapped_column(Text, default=None)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ForgottenMemberKey(Base):
    """A key an operator forgot for a member (``taskroute router forget-member-key``): never
    registered for that member again. Its endorsement, a public token, stays valid until it
    expires, so without this a compromised gateway could put a lost or stolen key back."""

    __tablename__ = "forgotten_member_keys"

    member_id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    public_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    forgotten_at: Mapped[datetime] = mapped_column(UTCDateTime())
