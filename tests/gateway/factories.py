"""Plain factory functions for gateway test data."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.gateway.db.models import Member, Tenant
from services.gateway.db.repository import (
    ApiKeyRepository,
    MemberRepository,
    TenantRepository,
    WebhookRepository,
)
from services.gateway.domain import api_keys
from services.gateway.domain import webhooks as webhook_rules
from services.gateway.domain.api_keys import NewApiKey, Role
from services.gateway.domain.policy import DataPolicy

PEPPER = b"test-pepper-" + b"x" * 20


async def make_tenant(session: AsyncSession, **overrides: Any) -> Tenant:
    fields: dict[str, Any] = {"name": "Acme Health", "policy": DataPolicy().to_json()}
    fields.update(overrides)
    return await TenantRepository(session).create(**fields)


async def make_member(session: AsyncSession, *, team_id: str, name: str = "Priya") -> Member:
    return await MemberRepository(session).create(team_id=team_id, name=name)


async def make_client_key(session: AsyncSession, tenant_id: str) -> NewApiKey:
    key = api_keys.generate_key(Role.CLIENT, pepper=PEPPER)
    await ApiKeyRepository(session).add(key, role=Role.CLIENT, tenant_id=tenant_id)
    return key


async def make_webhook_endpoint(
    session: AsyncSession, *, tenant_id: str, url: str, endpoint_id: str
) -> None:
    """A webhook endpoint of the tenant at ``url``, its secret ``whsec_x`` sealed as the API
    seals it."""
    await WebhookRepository(session).add_endpoint(
        endpoint_id=endpoint_id,
        tenant_id=tenant_id,
        url=url,
        description=None,
        sealed=webhook_rules.seal_secret(
            "whsec_x", endpoint_id=endpoint_id, tenant_id=tenant_id, pepper=PEPPER
        ),
    )
