"""The gateway's tables: tenants, API keys (digests only) and members."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import UTCDateTime, new_base, new_id, utcnow

if TYPE_CHECKING:
    # mypy cannot use a variable as a base class; at run time Base is new_base()'s class.
    class Base(DeclarativeBase):
        pass
else:
    Base = new_base()

# Key lookup prefixes are at most "tr_operator_" + 16 characters; 64 leaves room for new roles.
PREFIX_LENGTH = 64


class Tenant(Base):
    """A client company: its name and its default data policy."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    # {"allowed_countries": [..] | null, "required_certifications": [..], "require_e2e": bool}
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Bumped on every change; served as the ETag so concurrent edits cannot overwrite each other.
    version: Mapped[int] = mapped_column(Integer, default=1)
    # The version whose policy the router has confirmed (services/gateway/tenant_policies.py):
    # behind ``version``, the policy is pushed again until the router takes it.
    policy_pushed_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (Index("ix_tenants_created_at_id", "created_at", "id"),)


class Member(Base):
    """A person in an offshore team (teams themselves live in the router)."""

    __tablename__ = "members"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    team_id: Mapped[str] = mapped_column(String(36), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # The member's X25519 public key for end-to-end delivery (a later issue fills it).
    public_key: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiKey(Base):
    """One API key, stored as an HMAC digest; the key itself is never stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    lookup_prefix: Mapped[str] = mapped_column(String(PREFIX_LENGTH), unique=True)
    # Hex HMAC-SHA256(pepper, key).
    digest: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    # "generated" by the API or "bootstrap" from TASKROUTE_BOOTSTRAP_OPERATOR_KEY.
    source: Mapped[str] = mapped_column(String(16), default="generated")
    tenant_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("tenants.id", ondelete="CASCADE"), index=True, default=None
    )
    member_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("members.id", ondelete="CASCADE"), index=True, default=None
    )
    team_id: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class IdempotencyRecord(Base):
    """One claimed Idempotency-Key (see :mod:`services.gateway.domain.idempotency`)."""

    __tablename__ = "idempotency_records"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # "tenant:<id>", "member:<id>" or "operator:<key id>": whose key space this is.
    scope: Mapped[str] = mapped_column(String(80))
    # HMAC of the client's key; the key itself is never stored.
    key_digest: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(2000))
    fingerprint: Mapped[str] = mapped_column(String(64))
    # Made once at claim time (a job's id), reused by every retry of this request.
    resource_id: Mapped[str] = mapped_column(String(36))
    state: Mapped[str] = mapped_column(String(16))
    # When the current holder claimed it; None once released after a 5xx.
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    response_status: Mapped[int | None] = mapped_column(Integer, default=None)
    # AES-GCM sealed answer (headers and body) under a key derived from the idempotency key.
    response: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)

    __table_args__ = (UniqueConstraint("scope", "key_digest"),)


class WebhookEndpoint(Base):
    """A tenant's webhook receiver; its signing secret is stored sealed (domain/webhooks.py)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str | None] = mapped_column(String(200), default=None)
    sealed_secret: Mapped[bytes] = mapped_column(LargeBinary)
    # After a rotation: the secret it replaced, sealed the same way, and until when deliveries
    # are signed with it too (both signatures sent); cleared by the next rotation.
    previous_sealed_secret: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class WebhookDelivery(Base):
    """One event for one endpoint: the durable outbox row and its attempts."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    endpoint_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    tenant_id: Mapped[str] = mapped_column(String(36), index=True)
    # Shared by the deliveries of one event to several endpoints (receivers dedupe on it).
    event_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(64))
    # The exact bytes sent (and signed): the event with the job as its client sees it.
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # A worker's claim: until then no other replica takes the row.
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # [{"at", "status_code", "error", "duration_ms"}] for every attempt, oldest first.
    attempt_log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        # One delivery of an event per endpoint, however many times it is queued: by the
        # request that made the change and by the router's event feed, by several replicas,
        # or again after a crash (migration 0008).
        Index("uq_webhook_deliveries_endpoint_event", "endpoint_id", "event_id", unique=True),
    )


class ConsoleSession(Base):
    """A signed-in console user (services/gateway/console): only a digest of the cookie's token.

    The API key used to sign in is never stored; the session points at its row, so revoking the
    key ends every console session it opened on the next request.
    """

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # Hex SHA-256 of the random session token carried by the cookie.
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    api_key_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("api_keys.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The earlier of (last use + idle timeout) and (creation + the longest session life).
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class JobSubmission(Base):
    """A submission between the gateway and the router: the transactional outbox of submits.

    ``sealing``: written (and committed) before the vault seals the job's data, deleted once the
    router holds the job; one left behind marks a submission that died in between, which the
    sweeper rolls back (services/gateway/submissions.py). ``pending``: the router could not take
    the job; the client got 202 with status ``pending`` and the sweeper forwards it until the
    router does. Holds no confidential value: only the vault's opaque reference.
    """

    __tablename__ = "job_submissions"

    # The job's id: the router's submit is idempotent on it, so forwarding twice is harmless.
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36), index=True)
    state: Mapped[str] = mapped_column(String(16))
    # The router's submission body (title, description, policy, ..., confidential_ref).
    submission: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When the sweeper may next take the row; also its claim (moved forward when taken).
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    # Why the last forward failed (a class name and status, never a body).
    last_error: Mapped[str | None] = mapped_column(String(200), default=None)
