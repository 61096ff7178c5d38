"""Every query of the gateway. Tenant scoping happens here, not in routes.

Repositories flush but never commit: the request's session dependency owns the transaction.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import and_, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.gateway.db.models import ApiKey, Member, Tenant
from services.gateway.domain.api_keys import NewApiKey, Role
from services.gateway.domain.errors import InvalidCursor
from shared.db import new_id, utcnow

BOOTSTRAP_SOURCE = "bootstrap"
GENERATED_SOURCE = "generated"


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, row_id = json.loads(raw)
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None or not isinstance(row_id, str):
            raise ValueError
        return moment, row_id
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InvalidCursor() from None


async def ping(session: AsyncSession) -> None:
    """A round trip to the database (readiness)."""
    await session.execute(text("SELECT 1"))


class TenantRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, *, name: str, policy: dict[str, Any]) -> Tenant:
        now = utcnow()
        tenant = Tenant(
            id=new_id(), name=name, policy=policy, version=1, created_at=now, updated_at=now
        )
        self.session.add(tenant)
        await self.session.flush()
        return tenant

    async def get(self, tenant_id: str) -> Tenant | None:
        return await self.session.get(Tenant, tenant_id)

    async def list(self, *, limit: int, cursor: str | None) -> Page[Tenant]:
        """Newest first, keyset-paginated on (created_at, id)."""
        query = select(Tenant).order_by(Tenant.created_at.desc(), Tenant.id.desc())
        if cursor:
            at, row_id = decode_cursor(cursor)
            query = query.where(
                or_(Tenant.created_at < at, and_(Tenant.created_at == at, Tenant.id < row_id))
            )
        rows = list((await self.session.scalars(query.limit(limit + 1))).all())
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if more else None
        return Page(rows, encode_cursor(last.created_at, last.id) if last else None)

    async def set_policy(
        self, tenant_id: str, *, policy: dict[str, Any], expected_version: int | None
    ) -> Tenant | None:
        """Replace the policy; None when the tenant is unknown or ``expected_version`` is stale.

        A conditional UPDATE (``WHERE version = ...``) so two operators editing at once cannot
        silently overwrite each other, on any number of replicas.
        """
        conditions = [Tenant.id == tenant_id]
        if expected_version is not None:
            conditions.append(Tenant.version == expected_version)
        result = await self.session.execute(
            update(Tenant)
            .where(*conditions)
            .values(policy=policy, version=Tenant.version + 1, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            return None
        tenant = await self.session.get(Tenant, tenant_id, populate_existing=True)
        return tenant


class MemberRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, *, team_id: str, name: str) -> Member:
        member = Member(id=new_id(), team_id=team_id, name=name, created_at=utcnow())
        self.session.add(member)
        await self.session.flush()
        return member

    async def get(self, member_id: str, *, team_id: str) -> Member | None:
        """A member of ``team_id`` (another team's member is None)."""
        return await self.session.scalar(
            select(Member).where(Member.id == member_id, Member.team_id == team_id)
        )

    async def list_for_team(self, team_id: str, *, limit: int, cursor: str | None) -> Page[Member]:
        query = (
            select(Member)
            .where(Member.team_id == team_id)
            .order_by(Member.created_at.desc(), Member.id.desc())
        )
        if cursor:
            at, row_id = decode_cursor(cursor)
            query = query.where(
                or_(Member.created_at < at, and_(Member.created_at == at, Member.id < row_id))
            )
        rows = list((await self.session.scalars(query.limit(limit + 1))).all())
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if more else None
        return Page(rows, encode_cursor(last.created_at, last.id) if last else None)


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self,
        new_key: NewApiKey,
        *,
        role: Role,
        tenant_id: str | None = None,
        team_id: str | None = None,
        member_id: str | None = None,
        source: str = GENERATED_SOURCE,
    ) -> ApiKey:
        row = ApiKey(
            id=new_id(),
            lookup_prefix=new_key.lookup_prefix,
            digest=new_key.digest,
            role=role.value,
            source=source,
            tenant_id=tenant_id,
            team_id=team_id,
            member_id=member_id,
            created_at=utcnow(),
        )
        self.session.add(row)
        await self.session.flush()
        return row

    async def by_prefix(self, lookup_prefix: str) -> ApiKey | None:
        """The key stored under a lookup prefix, revoked or not (the caller decides)."""
        return await self.session.scalar(
            select(ApiKey).where(ApiKey.lookup_prefix == lookup_prefix)
        )

    async def list_for_tenant(self, tenant_id: str) -> list[ApiKey]:
        rows = await self.session.scalars(
            select(ApiKey)
            .where(ApiKey.tenant_id == tenant_id)
            .order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
        )
        return list(rows.all())

    async def get_for_tenant(self, key_id: str, *, tenant_id: str) -> ApiKey | None:
        return await self.session.scalar(
            select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id)
        )

    async def revoke(self, key_id: str, *, tenant_id: str) -> ApiKey | None:
        """Revoke a tenant's key (idempotent: an already revoked key keeps its first date)."""
        await self.session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return await self.session.scalar(
            select(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id)
            .execution_options(populate_existing=True)
        )

    async def ensure_bootstrap_operator(self, new_key: NewApiKey) -> bool:
        """Store the deployer's operator key unless it is already there; True if it changed.

        The environment is the source of truth: a bootstrap key that no longer matches it is
        revoked (or, under the same lookup prefix, replaced), so changing the variable and
        restarting rotates the key. When several replicas start at once, the unique lookup
        prefix lets one insert win; the others' flush raises ``IntegrityError`` and the caller
        retries in a new transaction, which then finds the row.
        """
        existing = await self.by_prefix(new_key.lookup_prefix)
        if existing is None:
            row = await self.add(new_key, role=Role.OPERATOR, source=BOOTSTRAP_SOURCE)
            await self._revoke_other_bootstraps(keep=row.id)
            return True
        if existing.source != BOOTSTRAP_SOURCE or existing.role != Role.OPERATOR.value:
            raise RuntimeError(
                "TASKROUTE_BOOTSTRAP_OPERATOR_KEY shares its lookup prefix with an issued API "
                "key; choose another bootstrap key"
            )
        unchanged = existing.revoked_at is None and hmac.compare_digest(
            existing.digest, new_key.digest
        )
        if not unchanged:
            existing.digest = new_key.digest
            existing.revoked_at = None
        await self._revoke_other_bootstraps(keep=existing.id)
        await self.session.flush()
        return not unchanged

    async def _revoke_other_bootstraps(self, *, keep: str) -> None:
        await self.session.execute(
            update(ApiKey)
            .where(
                ApiKey.source == BOOTSTRAP_SOURCE,
                ApiKey.id != keep,
                ApiKey.revoked_at.is_(None),
            )
            .values(revoked_at=utcnow())
            .execution_options(synchronize_session=False)
        )
