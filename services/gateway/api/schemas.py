"""Request and response models of the public API, named on a ladder (XCreate / XRead / XList).

Requests refuse unknown fields (a typo must not be silently ignored). Job responses declare
only what their audience may see, so a field the router adds never leaks by default: in
particular no model declares ``confidential_ref``, and member views do not declare
``tenant_id``. Pass-through models of router-owned resources (teams, decision records, stats)
keep fields they do not name, since the router owns their shape.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_serializer,
)

from services.gateway.domain.jobs import (
    MAX_CONFIDENTIAL_BYTES,
    MAX_RESULT_BYTES,
    check_callback_url,
    check_json_object_size,
    check_json_text,
    check_metadata,
    check_printable,
    check_text,
)
from services.gateway.domain.webhooks import check_endpoint_url
from shared.vocabulary import ISO_3166_ALPHA2, Domain, Priority, Tier

T = TypeVar("T")


def _country(value: str) -> str:
    code = value.strip().upper()
    if code not in ISO_3166_ALPHA2:
        raise ValueError("must be an ISO 3166-1 alpha-2 country code, e.g. IN, PH, IE")
    return code


CountryCode = Annotated[str, AfterValidator(_country)]
# Certification names such as HIPAA, ISO27001, SOC2, PCI-DSS, GDPR.
Certification = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(check_printable),
]
Reason = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=500),
    AfterValidator(check_text),
]
Uuid = Annotated[
    str,
    StringConstraints(
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ),
]
ConfidentialObject = Annotated[
    dict[str, Any],
    AfterValidator(lambda v: check_json_object_size(v, limit=MAX_CONFIDENTIAL_BYTES)),
]
# A result is shown to the client and in the console: its text is checked like any free text
# (the confidential result goes to the vault sealed, as sent).
ResultObject = Annotated[
    dict[str, Any],
    AfterValidator(lambda v: check_json_object_size(v, limit=MAX_RESULT_BYTES)),
    AfterValidator(check_json_text),
]


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PassThrough(BaseModel):
    """A router- or vault-owned resource: named fields documented, others kept."""

    model_config = ConfigDict(extra="allow")


class ListOf(BaseModel, Generic[T]):
    data: list[T]
    has_more: bool = False
    next_cursor: str | None = None


# Policies ---------------------------------------------------------------------------------


class DataPolicy(RequestModel):
    """A data policy: where confidential data may go and under which guarantees."""

    # An empty list would allow no country: every job of the tenant parked for good, leases
    # ended, and a later loosening cannot bring them back (it reaches new jobs only).
    allowed_countries: list[CountryCode] | None = Field(
        default=None,
        min_length=1,
        description="ISO 3166 alpha-2 codes of countries whose teams may take the work; "
        "null allows every country.",
    )
    required_certifications: list[Certification] = Field(
        default_factory=list, max_length=20, description="Every one must be held by the team."
    )
    require_e2e: StrictBool = Field(
        default=False,
        description="Confidential data may reach a member only encrypted to that member's key.",
    )
    require_review: StrictBool = Field(
        default=False,
        description="Four eyes: a member's completed work waits `in_review` until another "
        "member (of the reviewer team, if set, else of the same team) approves it or sends it "
        "back. Shown only when true.",
    )
    review_team_id: Uuid | None = Field(
        default=None,
        description="The reviewer team (it must meet each job's policy, else the working "
        "team's other members review). Shown only when set.",
    )

    @model_serializer(mode="wrap")
    def _review_fields_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Policies without review keep the shape clients already read (three fields).
        value: dict[str, Any] = handler(self)
        if not value.get("require_review"):
            value.pop("require_review", None)
        if value.get("review_team_id") is None:
            value.pop("review_team_id", None)
        return value


class StoredDataPolicy(DataPolicy):
    """A tenant's policy as stored: one written before empty country lists were refused still
    reads back."""

    allowed_countries: list[CountryCode] | None = Field(
        default=None,
        description="ISO 3166 alpha-2 codes of countries whose teams may take the work; "
        "null allows every country.",
    )


class DataPolicyNarrowing(RequestModel):
    """A job's narrowing of its tenant's policy (it can never widen it)."""

    allowed_countries: list[CountryCode] | None = Field(default=None, min_length=1)
    required_certifications: list[Certification] = Field(default_factory=list, max_length=20)
    require_e2e: StrictBool = False
    # May turn review on for this job; false never waives the tenant's requirement.
    require_review: StrictBool = False


# Tenants and keys -----------------------------------------------------------------------


class TenantCreate(RequestModel):
    name: Name
    policy: DataPolicy | None = None


class TenantRead(BaseModel):
    id: str
    name: str
    policy: StoredDataPolicy
    version: int
    created_at: datetime
    updated_at: datetime


class TenantCreated(TenantRead):
    api_key: str = Field(description="The tenant's first client API key; shown only now.")
    api_key_id: str


class TenantList(ListOf[TenantRead]):
    pass


class ApiKeyCreate(RequestModel):
    """A new key takes no options: a body, if sent, must be empty (an ``expires_at``, say,
    is refused rather than silently ignored)."""


class ApiKeyRead(BaseModel):
    id: str
    role: str
    lookup_prefix: str = Field(description="The key's public prefix, to recognise it.")
    tenant_id: str | None = None
    team_id: str | None = None
    member_id: str | None = None
    created_at: datetime
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKeyRead):
    api_key: str = Field(description="The API key itself; shown only now, stored as a digest.")


class ApiKeyList(ListOf[ApiKeyRead]):
    pass


# Teams and members -----------------------------------------------------------------------


class WorkingHours(RequestModel):
    start: str = Field(default="09:00", pattern=r"^\d{2}:\d{2}$", description="Local HH:MM.")
    end: str = Field(default="18:00", pattern=r"^\d{2}:\d{2}$", description="Local HH:MM.")
    days: list[Annotated[int, Field(ge=0, le=6)]] = Field(
        default_factory=lambda: [0, 1, 2, 3, 4],
        min_length=1,
        max_length=7,
        description="0 = Monday ... 6 = Sunday.",
    )


class TeamCreate(RequestModel):
    """An offshore team (kept by the router, which checks the finer rules)."""

    name: Name
    country: CountryCode
    timezone: str = Field(description="IANA time zone, e.g. Asia/Kolkata.")
    working_hours: WorkingHours | None = None
    tier: Tier
    skills: list[Domain] = Field(min_length=1, max_length=17)
    certifications: list[Certification] = Field(default_factory=list, max_length=30)
    languages: list[str] = Field(default_factory=list, max_length=30)
    capacity: int = Field(ge=0, le=100_000, description="Jobs in progress at once.")
    hourly_rate: float = Field(ge=0, le=100_000)
    quality: float | None = Field(default=None, ge=0, le=1)
    active: StrictBool | None = None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return _iana_zone(value)


class TeamUpdate(RequestModel):
    """Changes to a team; absent fields are left as they are."""

    name: Name | None = None
    country: CountryCode | None = None
    timezone: str | None = None
    working_hours: WorkingHours | None = None
    tier: Tier | None = None
    skills: list[Domain] | None = Field(default=None, min_length=1, max_length=17)
    certifications: list[Certification] | None = Field(default=None, max_length=30)
    languages: list[str] | None = Field(default=None, max_length=30)
    capacity: int | None = Field(default=None, ge=0, le=100_000)
    hourly_rate: float | None = Field(default=None, ge=0, le=100_000)
    quality: float | None = Field(default=None, ge=0, le=1)
    active: StrictBool | None = None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str | None:
        return None if value is None else _iana_zone(value)


def _iana_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("must be an IANA time zone such as Asia/Kolkata") from None
    return value


class TeamRead(PassThrough):
    id: str
    name: str
    country: str | None = None
    timezone: str | None = None
    working_hours: dict[str, Any] | None = None
    tier: str | None = None
    skills: list[str] = Field(default_factory=list)
    certifications: list[str] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=list)
    capacity: int | None = None
    hourly_rate: float | None = None
    quality: float | None = None
    active: bool | None = None
    version: int | None = Field(default=None, description="Also sent as the ETag header.")
    created_at: datetime | None = None
    updated_at: datetime | None = None


class TeamList(ListOf[TeamRead]):
    pass


class MemberCreate(RequestModel):
    name: Name


class MemberRead(BaseModel):
    id: str
    team_id: str
    name: str
    has_public_key: bool = False
    created_at: datetime


class MemberCreated(MemberRead):
    api_key: str = Field(description="The member's API key; shown only now.")
    api_key_id: str


class MemberList(ListOf[MemberRead]):
    pass


# Jobs ------------------------------------------------------------------------------------


def _representable_in_utc(value: datetime) -> datetime:
    """Refuse times that overflow when converted to UTC (e.g. year 1 at +14:00)."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("must be a time that can be expressed in UTC") from None
    return value


class JobCreate(RequestModel):
    title: Annotated[
        str, StringConstraints(min_length=1, max_length=200), AfterValidator(check_text)
    ]
    description: Annotated[
        str, StringConstraints(min_length=1, max_length=20000), AfterValidator(check_text)
    ]
    confidential: ConfidentialObject | None = Field(
        default=None,
        description="Any JSON object (≤ 64 KiB) the router must never see; sealed at the vault.",
    )
    confidential_sealed: dict[str, Any] | None = Field(
        default=None,
        description="A sealed envelope (docs/envelope.md) made by the client with the tenant's "
        "key from GET /v1/vault/public-key; passed to the vault untouched.",
    )
    service: Domain | None = None
    priority: Priority = Priority.NORMAL
    due_at: Annotated[AwareDatetime, AfterValidator(_representable_in_utc)] | None = None
    data_policy: DataPolicyNarrowing | None = None
    metadata: Annotated[dict[str, str], AfterValidator(check_metadata)] = Field(
        default_factory=dict
    )
    callback_url: (
        Annotated[str, AfterValidator(check_callback_url), AfterValidator(check_endpoint_url)]
        | None
    ) = Field(
        default=None,
        description="Kept with the job and shown on it. Job events are signed and delivered "
        "to the tenant's webhook endpoints (`POST /v1/webhook-endpoints`); this URL is not "
        "called by itself yet.",
    )

    @field_validator("confidential_sealed")
    @classmethod
    def _one_kind_of_confidential(
        cls, value: dict[str, Any] | None, info: ValidationInfo
    ) -> dict[str, Any] | None:
        # The envelope itself is parsed strictly by the vault (shared.sealed_envelope), which
        # names the bad field; the gateway only refuses an ambiguous request.
        if value is not None and info.data.get("confidential") is not None:
            raise ValueError("send either `confidential` or `confidential_sealed`, not both")
        return value


class Classification(PassThrough):
    tier: str
    domain: str
    confidence: float
    reasons: list[Any] = Field(default_factory=list)


class Assignment(PassThrough):
    team_id: str
    team_name: str | None = None
    assigned_at: datetime | None = None
    score: float | None = None


class Lease(PassThrough):
    member_id: str
    claimed_at: datetime | None = None
    expires_at: datetime | None = None


class _JobBase(BaseModel):
    # "ignore": a job shows exactly the declared fields to each audience (see module doc).
    model_config = ConfigDict(extra="ignore")

    id: str
    status: str
    title: str
    description: str
    service: str | None = None
    priority: str
    due_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    policy: dict[str, Any] | None = Field(default=None, description="The effective data policy.")
    has_confidential: bool = False
    classification: Classification | None = None
    assignment: Assignment | None = None
    completed_at: datetime | None = None
    created_at: datetime
    updated_at: datetime | None = None


class JobRead(_JobBase):
    """A job as its client sees it."""

    callback_url: str | None = None


class JobList(ListOf[JobRead]):
    pass


class TeamJobRead(_JobBase):
    """A job as a team member sees it (no tenant, no internal references)."""

    lease: Lease | None = None


class TeamJobList(ListOf[TeamJobRead]):
    pass


class AdminJobRead(_JobBase):
    """A job as an operator sees it."""

    tenant_id: str
    callback_url: str | None = None
    lease: Lease | None = None


class AdminJobList(ListOf[AdminJobRead]):
    pass


class JobEventRead(PassThrough):
    seq: int
    at: datetime
    type: str
    from_status: str | None = None
    to_status: str | None = None
    actor: str
    reason: str | None = None


class JobEventList(ListOf[JobEventRead]):
    pass


class RoutingRead(PassThrough):
    """The decision record: eligible teams, excluded teams and why, the scores."""


class JobCancel(RequestModel):
    reason: Reason | None = None


class JobResultRead(BaseModel):
    result: Any = None
    confidential_result: Any = Field(
        default=None, description="Present when the member returned confidential data."
    )


class JobRoute(RequestModel):
    team_id: Uuid
    domain: Domain | None = Field(
        default=None, description="The domain this choice teaches the classifier (optional)."
    )


# A member's work -------------------------------------------------------------------------


class JobRelease(RequestModel):
    reason: Reason | None = None


class JobReject(RequestModel):
    reason: Reason


class JobComplete(RequestModel):
    result: ResultObject
    confidential_result: ConfidentialObject | None = None
    confidential_result_sealed: dict[str, Any] | None = Field(
        default=None,
        description="The confidential result sealed for the tenant (docs/envelope.md), with the "
        "key from GET /v1/team/jobs/{id}/tenant-key and the job's id as job_ref.",
    )

    @field_validator("confidential_result_sealed")
    @classmethod
    def _one_kind_of_result(
        cls, value: dict[str, Any] | None, info: ValidationInfo
    ) -> dict[str, Any] | None:
        if value is not None and info.data.get("confidential_result") is not None:
            raise ValueError(
                "send either `confidential_result` or `confidential_result_sealed`, not both"
            )
        return value


class ConfidentialRead(BaseModel):
    confidential: Any = Field(default=None, description="Plaintext (no registered member key).")
    confidential_sealed: dict[str, Any] | None = Field(
        default=None,
        description="Sealed to the member's registered key (docs/envelope.md); open it with "
        "shared/sealed_envelope.py and the member's private key.",
    )


# Operations ------------------------------------------------------------------------------


class QueueDepthRead(PassThrough):
    """A team's queue: ``queued`` and ``in_progress`` jobs against its ``capacity``."""

    team_id: str
    team_name: str
    queued: int
    in_progress: int
    capacity: int


class QueueAgeRead(PassThrough):
    """A team's longest-waiting queued job: assigned to the team at ``oldest_queued_since``."""

    team_id: str
    team_name: str
    queued: int
    oldest_queued_since: datetime
    oldest_queued_age_seconds: float


class WaitStatsRead(PassThrough):
    """Queued-to-claimed wait over the window: exact ``count``, percentiles over the latest
    ``sampled`` claims (nearest rank)."""

    window_seconds: int
    count: int
    sampled: int
    p50_seconds: float | None
    p95_seconds: float | None
    max_seconds: float | None


class EventCountRead(PassThrough):
    total: int
    in_window: int


class SlaStatsRead(PassThrough):
    """Jobs with a ``due_at``: completed after it, completed by it, and still open past it."""

    completed_late: int
    completed_on_time: int
    open_overdue: int


class StatsRead(PassThrough):
    """Counts by status, tier and domain; queue depth per team (the router's statistics)."""

    by_status: dict[str, int]
    by_tier: dict[str, int]
    by_domain: dict[str, int]
    queues: list[QueueDepthRead]
    # Appended for issue 4: queued jobs by tier and domain, queue ages, wait times over the
    # window, lease expiries, SLA breaches, and the triage and unroutable counts.
    generated_at: datetime
    window_seconds: int
    queued_by_tier: dict[str, int]
    queued_by_domain: dict[str, int]
    queue_ages: list[QueueAgeRead]
    waits: WaitStatsRead
    lease_expiries: EventCountRead
    sla: SlaStatsRead
    triage: int
    unroutable: int


class AuditRecordRead(PassThrough):
    """One record of the vault's hash-chained audit log."""


class AuditList(ListOf[AuditRecordRead]):
    pass


class AuditVerification(PassThrough):
    valid: bool
    records: int
    anchoring: bool | None = Field(
        default=None,
        description="Whether the vault anchors its chain's head outside the database; "
        "without, records cut from the end of the chain together with its head would verify "
        "(null: a vault older than this field).",
    )


class Readiness(BaseModel):
    status: Literal["ready", "degraded"]
    checks: dict[str, bool]
    # Each upstream's circuit breaker as this replica sees it: closed, open or half_open.
    circuits: dict[str, str]


# Webhooks --------------------------------------------------------------------------------


class WebhookEndpointCreate(RequestModel):
    url: Annotated[str, AfterValidator(check_callback_url), AfterValidator(check_endpoint_url)] = (
        Field(
            description="https, or plain http to a loopback host for local development "
            "(loopback hosts are refused in production)."
        )
    )
    description: Name | None = None


class WebhookEndpointRead(BaseModel):
    id: str
    url: str
    description: str | None = None
    created_at: datetime


class WebhookEndpointCreated(WebhookEndpointRead):
    secret: str = Field(
        description="The signing secret (`whsec_...`); shown only now. Verify "
        "`Taskroute-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, '<t>.<body>')>`."
    )


class WebhookEndpointList(ListOf[WebhookEndpointRead]):
    pass


class WebhookAttemptRead(BaseModel):
    at: datetime
    status_code: int | None = None
    error: str | None = None
    duration_ms: float | None = None


class WebhookDeliveryRead(BaseModel):
    id: str
    event_id: str
    event_type: str
    status: str = Field(description="pending, succeeded or failed (retries spent).")
    attempts: int
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    created_at: datetime
    attempt_log: list[WebhookAttemptRead] = Field(default_factory=list)


class WebhookDeliveryList(ListOf[WebhookDeliveryRead]):
    pass


# Feedback ---------------------------------------------------------------------------------

# A comment is a few sentences for the team lead, not a report (the router's bound).
MAX_FEEDBACK_COMMENT = 2000


class JobFeedbackCreate(RequestModel):
    """A rating of a completed job; each job is rated once."""

    # Strict: "5", 4.0 or true are refused rather than guessed at.
    rating: int = Field(strict=True, ge=1, le=5, description="1 (poor) to 5 (excellent) stars.")
    comment: (
        Annotated[
            str, StringConstraints(max_length=MAX_FEEDBACK_COMMENT), AfterValidator(check_text)
        ]
        | None
    ) = Field(
        default=None,
        description="What went well or wrong; it reaches the team, never other tenants.",
    )


class JobFeedbackRead(BaseModel):
    job_id: str
    rating: int
    comment: str | None = None
    created_at: datetime


class WebhookSecretRotate(RequestModel):
    overlap_seconds: int = Field(
        default=86_400,
        ge=0,
        le=7 * 86_400,
        description="How long deliveries stay signed with the old secret too (both `v1=` "
        "signatures sent), so receivers can switch without losing an event; 0 drops it now.",
    )


class WebhookSecretRotated(WebhookEndpointRead):
    secret: str = Field(description="The new signing secret (`whsec_...`); shown only now.")
    previous_secret_expires_at: datetime | None = Field(
        default=None,
        description="Until when deliveries are also signed with the replaced secret.",
    )
