"""The gateway's tables: tenants, API keys (digests only) and members."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
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
