"""Request and response models of the router's internal API (docs/architecture.md, "Router").

Named on a ladder: ``XCreate`` (what a caller sends), ``XRead`` (what comes back), ``XList``.
Request models forbid unknown fields: a confidential value sent here by mistake is refused
rather than silently accepted (and the validation error names the field, never its value).
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from services.router.db.models import JobEvent, JobFeedback, JobView, Team
from services.router.domain.grants import GrantAction
from services.router.domain.quality import MAX_RATING, MIN_RATING
from services.router.domain.routing import parse_hhmm
from services.router.domain.taxonomy import Domain, Priority, Tier
from services.router.domain.withdrawals import token_time
from shared.vocabulary import ISO_3166_ALPHA2

# Small, non-secret labels: 8 KiB of JSON is plenty and keeps rows and lists light.
MAX_METADATA_BYTES = 8 * 1024
# Texts the classifier reads; beyond this a "description" is a document, not a job summary.
MAX_TITLE = 500
MAX_DESCRIPTION = 20_000
# Vault refs are short opaque ids; 200 leaves room for any format the vault picks.
MAX_REF = 200
# POST /classify is a dry run for up to this many texts (the contract's limit).
MAX_CLASSIFY_ITEMS = 1000
# A feedback comment is a few sentences for the team lead, not a report.
MAX_COMMENT = 2000

_TIMEZONES = frozenset(available_timezones())
_CERTIFICATION = re.compile(r"^[A-Z0-9][A-Z0-9-]{1,31}$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Z]{2})?$")
_ACTOR = re.compile(r"^[a-z]+(:[A-Za-z0-9._-]{1,64})?$")


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise ValueError("must be a UUID") from exc


def _country(value: str) -> str:
    code = value.strip().upper()
    if code not in ISO_3166_ALPHA2:
        raise ValueError("must be an ISO 3166-1 alpha-2 country code, e.g. IN, PH, IE")
    return code


def _timezone(value: str) -> str:
    if value not in _TIMEZONES:
        raise ValueError("must be an IANA time zone, e.g. Asia/Kolkata")
    return value


def _certification(value: str) -> str:
    code = value.strip().upper()
    if not _CERTIFICATION.match(code):
        raise ValueError("must be a certification code such as HIPAA, ISO27001, PCI-DSS")
    return code


def _language(value: str) -> str:
    if not _LANGUAGE.match(value):
        raise ValueError("must be a language tag such as en, hi or en-IN")
    return value


def _actor(value: str) -> str:
    if not _ACTOR.match(value):
        raise ValueError("must look like 'operator' or 'operator:<id>'")
    return value


UUIDStr = Annotated[str, AfterValidator(_uuid)]
CountryCode = Annotated[str, AfterValidator(_country)]
TimeZone = Annotated[str, AfterValidator(_timezone)]
Certification = Annotated[str, AfterValidator(_certification)]
Language = Annotated[str, AfterValidator(_language)]
Actor = Annotated[str, AfterValidator(_actor)]
Ref = Annotated[str, StringConstraints(min_length=1, max_length=MAX_REF)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


def _sorted_unique(values: list[str]) -> list[str]:
    return sorted(set(values))


def _outbox_token(value: str) -> str:
    try:
        token_time(value)
    except ValueError:
        raise ValueError("must be the outbox row's time, in ISO 8601") from None
    return value


# Kept as sent (a withdrawal matches it exactly), checked to be a time.
OutboxToken = Annotated[
    str, StringConstraints(min_length=1, max_length=64), AfterValidator(_outbox_token)
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------------- policy


class PolicyCreate(_Request):
    """A job's effective data policy, as computed by the gateway."""

    allowed_countries: list[CountryCode] | None = Field(default=None, max_length=250)
    required_certifications: list[Certification] = Field(default_factory=list, max_length=20)
    require_e2e: bool = False
    # Four eyes before completion (services/router/reviews.py).
    require_review: bool = False
    review_team_id: UUIDStr | None = None

    @field_validator("allowed_countries")
    @classmethod
    def _countries(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _sorted_unique(value)

    @field_validator("required_certifications")
    @classmethod
    def _certs(cls, value: list[str]) -> list[str]:
        return _sorted_unique(value)


class TenantPolicyPut(_Request):
    """A tenant's data policy, as the gateway stores it, at the gateway's version."""

    version: int = Field(ge=1, le=2**31 - 1, description="The gateway's version of the tenant.")
    policy: PolicyCreate


class TenantPolicyApplied(BaseModel):
    tenant_id: str
    version: int
    applied: bool = Field(description="False: this version, or a newer one, was pushed before.")
    tightened: int = Field(description="Active jobs whose policy this change tightened.")
    moved: int = Field(description="Jobs moved off a team that no longer meets the policy.")


# ----------------------------------------------------------------------------- jobs


class JobCreate(_Request):
    """``JobSubmission``: the gateway's job, without any confidential value."""

    id: UUIDStr
    tenant_id: UUIDStr
    title: str = Field(max_length=MAX_TITLE)
    description: str = Field(max_length=MAX_DESCRIPTION)
    service: Domain | None = None
    priority: Priority = Priority.NORMAL
    due_at: AwareDatetime | None = None
    policy: PolicyCreate = Field(default_factory=PolicyCreate)
    metadata: dict[str, Any] = Field(default_factory=dict)
    confidential_ref: Ref | None = None
    callback_url: str | None = Field(default=None, max_length=2000)
    # Set by the gateway's outbox for a job it acknowledged (``pending``) while the router was
    # away: kept as the job's ``created_at`` (never later than the router's clock).
    acknowledged_at: AwareDatetime | None = None
    # Set by the gateway for a job with sealed data: its outbox row's token. A submit whose
    # token the gateway withdrew (a roll-back) is refused, 409 ``submission-withdrawn``.
    outbox_token: OutboxToken | None = None
    # The tenant's version whose policy ``policy`` was made from (tenant_policies).
    policy_version: int | None = Field(default=None, ge=1, le=2**31 - 1)

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value, separators=(",", ":"))) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is limited to {MAX_METADATA_BYTES} bytes of JSON")
        return value


class WithdrawalCreate(_Request):
    """The gateway rolls a submission back: no job may be stored from ``outbox_token``."""

    tenant_id: UUIDStr
    outbox_token: OutboxToken


class WithdrawalRead(BaseModel):
    # False: the router already holds the job (the submission got through); keep its data.
    withdrawn: bool


class ClassificationRead(BaseModel):
    tier: Tier
    domain: Domain
    confidence: float
    reasons: list[str]


class AssignmentRead(BaseModel):
    team_id: str
    team_name: str
    assigned_at: datetime
    score: float | None


class LeaseRead(BaseModel):
    member_id: str
    claimed_at: datetime
    expires_at: datetime


class JobRead(BaseModel):
    """``RouterJob``."""

    id: str
    tenant_id: str
    status: str
    title: str
    description: str
    service: str | None
    priority: str
    due_at: datetime | None
    metadata: dict[str, Any]
    policy: dict[str, Any]
    callback_url: str | None
    has_confidential: bool
    confidential_ref: str | None
    classification: ClassificationRead | None
    assignment: AssignmentRead | None
    lease: LeaseRead | None
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    # The seq of the job's latest event: a caller tells "changed since that event" by it.
    event_seq: int


class JobList(BaseModel):
    data: list[JobRead]
    has_more: bool
    next_cursor: str | None


class JobEventRead(BaseModel):
    seq: int
    at: datetime
    type: str
    from_status: str | None
    to_status: str | None
    actor: str
    reason: str | None


class JobEventList(BaseModel):
    data: list[JobEventRead]
    has_more: bool = False
    next_cursor: str | None = None


# The id the gateway reserved with the request's Idempotency-Key: stored on the event the
# request makes, so a retry under that key can ask whether its earlier attempt was applied.
RequestId = UUIDStr


class CancelCreate(_Request):
    tenant_id: UUIDStr
    reason: Reason | None = None
    request_id: RequestId | None = None


class ResultRead(BaseModel):
    result: Any
    confidential_result_ref: str | None


class ResultGrantCreate(_Request):
    tenant_id: UUIDStr


class FeedbackCreate(_Request):
    """A client's rating of its completed job (domain/quality.py says what it does)."""

    tenant_id: UUIDStr
    rating: int = Field(strict=True, ge=MIN_RATING, le=MAX_RATING)
    comment: Annotated[
        str | None, StringConstraints(strip_whitespace=True, max_length=MAX_COMMENT)
    ] = None


class FeedbackRead(BaseModel):
    job_id: str
    team_id: str | None
    rating: int
    comment: str | None
    # What the rating did to the team's quality (operators' view; the gateway drops them).
    quality_before: float | None
    quality_after: float | None
    created_at: datetime


class GrantRead(BaseModel):
    grant: str
    tenant_id: str
    require_e2e: bool


# ----------------------------------------------------------------------------- team queue


class ClaimCreate(_Request):
    member_id: UUIDStr
    request_id: RequestId | None = None


class HeartbeatCreate(_Request):
    member_id: UUIDStr


class ReleaseCreate(_Request):
    member_id: UUIDStr
    reason: Reason | None = None
    request_id: RequestId | None = None


class RejectCreate(_Request):
    member_id: UUIDStr | None = None
    reason: Reason
    request_id: RequestId | None = None


class GrantCreate(_Request):
    member_id: UUIDStr
    action: GrantAction


class CompleteCreate(_Request):
    member_id: UUIDStr
    result: Any
    # The vault's receipt for the sealed result (shared.result_receipts): the ref comes from it.
    confidential_result_receipt: Annotated[str, StringConstraints(max_length=4096)] | None = None
    request_id: RequestId | None = None


# ----------------------------------------------------------------------------- teams


class WorkingHoursModel(_Request):
    start: str = "09:00"
    end: str = "18:00"
    # 0 = Monday ... 6 = Sunday.
    days: list[Annotated[int, Field(ge=0, le=6)]] = Field(
        default_factory=lambda: [0, 1, 2, 3, 4], min_length=1, max_length=7
    )

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        parse_hhmm(value)
        return value

    @field_validator("days")
    @classmethod
    def _days(cls, value: list[int]) -> list[int]:
        return sorted(set(value))

    @model_validator(mode="after")
    def _not_empty(self) -> WorkingHoursModel:
        if self.start == self.end:
            raise ValueError(
                "start and end must differ (end before start means an overnight shift)"
            )
        return self


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class TeamCreate(_Request):
    name: Name
    country: CountryCode
    timezone: TimeZone
    # Office hours, Monday to Friday, unless the team says otherwise.
    working_hours: WorkingHoursModel = Field(default_factory=WorkingHoursModel)
    tier: Tier
    skills: list[Domain] = Field(min_length=1, max_length=17)
    certifications: list[Certification] = Field(default_factory=list, max_length=30)
    languages: list[Language] = Field(default_factory=list, max_length=30)
    capacity: int = Field(ge=0, le=100_000)
    hourly_rate: float = Field(ge=0, le=100_000)
    # Absent: the settings' quality_prior_mean, until client feedback moves it.
    quality: float | None = Field(default=None, ge=0, le=1)
    active: bool = True

    @field_validator("certifications", "languages")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return _sorted_unique(value)


class TeamUpdate(_Request):
    """Any subset of a team's fields; ``null`` is refused (every field has a value)."""

    name: Name | None = None
    country: CountryCode | None = None
    timezone: TimeZone | None = None
    working_hours: WorkingHoursModel | None = None
    tier: Tier | None = None
    skills: list[Domain] | None = Field(default=None, min_length=1, max_length=17)
    certifications: list[Certification] | None = Field(default=None, max_length=30)
    languages: list[Language] | None = Field(default=None, max_length=30)
    capacity: int | None = Field(default=None, ge=0, le=100_000)
    hourly_rate: float | None = Field(default=None, ge=0, le=100_000)
    quality: float | None = Field(default=None, ge=0, le=1)
    active: bool | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> TeamUpdate:
        nulls = sorted(name for name in self.model_fields_set if getattr(self, name) is None)
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null")
        return self


class TeamRead(BaseModel):
    id: str
    name: str
    country: str
    timezone: str
    working_hours: dict[str, Any]
    tier: Tier
    skills: list[str]
    certifications: list[str]
    languages: list[str]
    capacity: int
    hourly_rate: float
    quality: float
    active: bool
    version: int
    created_at: datetime
    updated_at: datetime


class TeamList(BaseModel):
    data: list[TeamRead]
    has_more: bool
    next_cursor: str | None


# ----------------------------------------------------------------------------- operators


class RouteCreate(_Request):
    team_id: UUIDStr
    actor: Actor = "operator"
    # The domain the operator's choice teaches the classifier, when the team has several skills.
    domain: Domain | None = None


class ClassifyItem(_Request):
    title: str = Field(default="", max_length=MAX_TITLE)
    description: str = Field(max_length=MAX_DESCRIPTION)
    service: Domain | None = None


class ClassifyCreate(_Request):
    items: list[ClassifyItem] = Field(min_length=1, max_length=MAX_CLASSIFY_ITEMS)
    policy: PolicyCreate | None = None


class TeamRef(BaseModel):
    id: str
    name: str


class ClassifyResult(BaseModel):
    tier: Tier
    domain: Domain
    confidence: float
    reasons: list[str]
    team: TeamRef | None
    # Where the job would land: queued (with ``team``), triage or unroutable.
    status: Literal["queued", "triage", "unroutable"]


class ClassifyRead(BaseModel):
    results: list[ClassifyResult]


class QueueDepth(BaseModel):
    team_id: str
    team_name: str
    queued: int
    in_progress: int
    capacity: int


class QueueAge(BaseModel):
    """How long a team's longest-waiting queued job has been in its queue."""

    team_id: str
    team_name: str
    queued: int
    # When that job was assigned to this team (a release or lease expiry does not reset it).
    oldest_queued_since: datetime
    oldest_queued_age_seconds: float


class WaitStats(BaseModel):
    """Time from ``queued`` to ``claimed`` for the claims made in the window."""

    window_seconds: int
    # Exact number of claims in the window.
    count: int
    # Claims the percentiles were computed over: the most recent ones, at most 10,000.
    sampled: int
    p50_seconds: float | None
    p95_seconds: float | None
    max_seconds: float | None


class EventCountRead(BaseModel):
    total: int
    in_window: int


class SlaStats(BaseModel):
    """Jobs with a ``due_at``: finished late, finished in time, and still open past it."""

    completed_late: int
    completed_on_time: int
    open_overdue: int


class StatsRead(BaseModel):
    by_status: dict[str, int]
    by_tier: dict[str, int]
    by_domain: dict[str, int]
    queues: list[QueueDepth]
    # Appended for issue 4 (statistics); the fields above keep their meaning.
    generated_at: datetime
    window_seconds: int
    # Jobs waiting in a team's queue (status queued), by tier and by domain.
    queued_by_tier: dict[str, int]
    queued_by_domain: dict[str, int]
    # Teams with at least one queued job, longest wait first.
    queue_ages: list[QueueAge]
    waits: WaitStats
    lease_expiries: EventCountRead
    sla: SlaStats
    triage: int
    unroutable: int


# ----------------------------------------------------------------------------- from rows


def job_read(job: JobView) -> JobRead:
    classification = None
    if job.tier is not None and job.domain is not None and job.confidence is not None:
        classification = ClassificationRead(
            tier=Tier(job.tier),
            domain=Domain(job.domain),
            confidence=job.confidence,
            reasons=list(job.reasons or []),
        )
    assignment = None
    if job.team_id is not None and job.team_name is not None and job.assigned_at is not None:
        assignment = AssignmentRead(
            team_id=job.team_id,
            team_name=job.team_name,
            assigned_at=job.assigned_at,
            score=job.assignment_score,
        )
    lease = None
    if (
        job.lease_member_id is not None
        and job.lease_claimed_at is not None
        and job.lease_expires_at is not None
    ):
        lease = LeaseRead(
            member_id=job.lease_member_id,
            claimed_at=job.lease_claimed_at,
            expires_at=job.lease_expires_at,
        )
    return JobRead(
        id=job.id,
        tenant_id=job.tenant_id,
        status=job.status,
        title=job.title,
        description=job.description,
        service=job.service,
        priority=job.priority,
        due_at=job.due_at,
        metadata=job.job_metadata,
        policy=job.policy,
        callback_url=job.callback_url,
        has_confidential=job.confidential_ref is not None,
        confidential_ref=job.confidential_ref,
        classification=classification,
        assignment=assignment,
        lease=lease,
        completed_at=job.completed_at,
        created_at=job.created_at,
        updated_at=job.updated_at,
        event_seq=job.event_seq,
    )


def team_read(team: Team) -> TeamRead:
    return TeamRead(
        id=team.id,
        name=team.name,
        country=team.country,
        timezone=team.timezone,
        working_hours=team.working_hours,
        tier=Tier(team.tier),
        skills=list(team.skills),
        certifications=list(team.certifications),
        languages=list(team.languages),
        capacity=team.capacity,
        hourly_rate=team.hourly_rate,
        quality=team.quality,
        active=team.active,
        version=team.version,
        created_at=team.created_at,
        updated_at=team.updated_at,
    )


def feedback_read(feedback: JobFeedback) -> FeedbackRead:
    return FeedbackRead(
        job_id=feedback.job_id,
        team_id=feedback.team_id,
        rating=feedback.rating,
        comment=feedback.comment,
        quality_before=feedback.quality_before,
        quality_after=feedback.quality_after,
        created_at=feedback.created_at,
    )


# ----------------------------------------------------------------------------- event feed

# Events per page of the gateway's feed, and per mark: one page is marked in one call.
FEED_PAGE_MAX = 500


class FeedEventRead(BaseModel):
    """An event the job's client hears of: the gateway makes it a ``job.<to_status>``
    webhook. ``job`` is the job as it is now, unless the gateway asked only for some
    tenants' jobs (those with webhook endpoints, few of them)."""

    # The outbox row's: what the gateway names to mark the event published.
    id: int
    seq: int
    at: datetime
    type: str
    to_status: str
    job_id: str
    tenant_id: str
    job: JobRead | None = None


class FeedEventList(BaseModel):
    data: list[FeedEventRead]


class PublishedCreate(_Request):
    """The feed's events the gateway now holds in its webhook outbox."""

    ids: list[Annotated[int, Field(ge=1)]] = Field(min_length=1, max_length=FEED_PAGE_MAX)


class PublishedRead(BaseModel):
    # How many were still waiting: the rest were marked before (another replica, a retry).
    published: int


def event_read(event: JobEvent) -> JobEventRead:
    return JobEventRead(
        seq=event.seq,
        at=event.at,
        type=event.type,
        from_status=event.from_status,
        to_status=event.to_status,
        actor=event.actor,
        reason=event.reason,
    )
