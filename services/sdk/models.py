"""What the gateway answers, as typed models.

Models accept fields they do not name (``extra="allow"``), so a field the API adds later does
not break an older client; the named fields are the ones the contract fixes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class Page(Model, Generic[T]):
    """One page of a list: ``data``, and the cursor of the next page while ``has_more``."""

    data: list[T]
    has_more: bool = False
    next_cursor: str | None = None


class Classification(Model):
    tier: str
    domain: str
    confidence: float
    reasons: list[Any] = Field(default_factory=list)


class Assignment(Model):
    team_id: str
    team_name: str | None = None
    assigned_at: datetime | None = None
    score: float | None = None


class Lease(Model):
    member_id: str
    claimed_at: datetime | None = None
    expires_at: datetime | None = None


class Job(Model):
    """A job as its client (or, with ``lease``, a team member) sees it."""

    id: str
    status: str
    title: str
    description: str
    service: str | None = None
    priority: str
    due_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    policy: dict[str, Any] | None = None
    has_confidential: bool = False
    classification: Classification | None = None
    assignment: Assignment | None = None
    lease: Lease | None = None
    callback_url: str | None = None
    completed_at: datetime | None = None
    created_at: datetime
    updated_at: datetime | None = None


class JobEvent(Model):
    seq: int
    at: datetime
    type: str
    from_status: str | None = None
    to_status: str | None = None
    actor: str
    reason: str | None = None


class JobResult(Model):
    result: Any = None
    confidential_result: Any = None


class Feedback(Model):
    job_id: str
    rating: int
    comment: str | None = None
    created_at: datetime


class TeamRef(Model):
    id: str
    name: str


class ClassifyResult(Model):
    tier: str
    domain: str
    confidence: float
    reasons: list[str]
    team: TeamRef | None = None
    status: str | None = None


class VaultPublicKey(Model):
    key_id: str
    public_key: str
    algorithm: str
    created_at: datetime | None = None


class VaultPublicKeys(Model):
    keys: list[VaultPublicKey]
    tenant_id: str | None = None
    statement: str | None = None  # the vault's signature over the keys


class TenantKey(Model):
    """The key a member seals a job's confidential result with, for the job's tenant."""

    tenant_id: str
    job_ref: str
    key_id: str
    public_key: str
    algorithm: str
    statement: str | None = None  # the vault's signature over the tenant's keys


class MemberKey(Model):
    key_id: str
    public_key: str
    algorithm: str


class WebhookEndpoint(Model):
    id: str
    url: str
    description: str | None = None
    created_at: datetime
    secret: str | None = Field(default=None, description="Only in the answer that created it.")


class WebhookAttempt(Model):
    at: datetime
    status_code: int | None = None
    error: str | None = None
    duration_ms: float | None = None


class WebhookDelivery(Model):
    id: str
    event_id: str
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    created_at: datetime
    attempt_log: list[WebhookAttempt] = Field(default_factory=list)


class Tenant(Model):
    id: str
    name: str
    policy: dict[str, Any] = Field(default_factory=dict)
    version: int | None = None
    created_at: datetime
    updated_at: datetime | None = None
    api_key: str | None = Field(default=None, description="Only in the creating answer.")
    api_key_id: str | None = None


class ApiKey(Model):
    id: str
    role: str
    lookup_prefix: str
    tenant_id: str | None = None
    team_id: str | None = None
    member_id: str | None = None
    created_at: datetime
    revoked_at: datetime | None = None
    api_key: str | None = Field(default=None, description="Only in the creating answer.")
