"""The gateway's repositories against real databases (SQLite and, when configured, PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from services.gateway.app import store_bootstrap_operator_key
from services.gateway.db.models import ApiKey, ConsoleSession
from services.gateway.db.repository import (
    ApiKeyRepository,
    ConsoleSessionRepository,
    MemberRepository,
    TenantRepository,
)
from services.gateway.domain import api_keys
from services.gateway.domain.errors import InvalidCursor
from tests.gateway.factories import PEPPER, make_client_key, make_member, make_tenant


async def test_tenants_page_newest_first(session):
    made = [await make_tenant(session, name=f"Tenant {i}") for i in range(5)]
    repo = TenantRepository(session)
    first = await repo.list(limit=2, cursor=None)
    assert first.has_more
    second = await repo.list(limit=2, cursor=first.next_cursor)
    third = await repo.list(limit=2, cursor=second.next_cursor)
    seen = [t.id for t in first.items + second.items + third.items]
    assert sorted(seen) == sorted(t.id for t in made)
    assert len(set(seen)) == 5
    assert not third.has_more
    assert third.next_cursor is None


async def test_bad_cursor_is_refused(session):
    with pytest.raises(InvalidCursor):
        await TenantRepository(session).list(limit=2, cursor="not-a-cursor")


async def test_policy_update_is_conditional_on_version(session):
    tenant = await make_tenant(session)
    repo = TenantRepository(session)
    policy = {"allowed_countries": ["IN"], "required_certifications": [], "require_e2e": False}
    updated = await repo.set_policy(tenant.id, policy=policy, expected_version=1)
    assert updated is not None
    assert updated.version == 2
    assert updated.policy == policy
    assert await repo.set_policy(tenant.id, policy=policy, expected_version=1) is None
    assert await repo.set_policy("no-such-tenant", policy=policy, expected_version=None) is None


async def test_keys_are_scoped_to_their_tenant(session):
    acme = await make_tenant(session, name="Acme")
    globex = await make_tenant(session, name="Globex")
    acme_key = await make_client_key(session, acme.id)
    await make_client_key(session, globex.id)
    repo = ApiKeyRepository(session)
    acme_rows = await repo.list_for_tenant(acme.id)
    assert [r.lookup_prefix for r in acme_rows] == [acme_key.lookup_prefix]
    row = acme_rows[0]
    # Another tenant can neither read nor revoke it.
    assert await repo.get_for_tenant(row.id, tenant_id=globex.id) is None
    assert await repo.revoke(row.id, tenant_id=globex.id) is None
    stored = await repo.by_prefix(acme_key.lookup_prefix)
    assert stored is not None
    assert stored.revoked_at is None
    revoked = await repo.revoke(row.id, tenant_id=acme.id)
    assert revoked is not None
    assert revoked.revoked_at is not None
    again = await repo.revoke(row.id, tenant_id=acme.id)
    assert again is not None
    assert again.revoked_at == revoked.revoked_at


async def test_only_digests_are_stored(session):
    tenant = await make_tenant(session)
    key = await make_client_key(session, tenant.id)
    rows = (await session.scalars(select(ApiKey))).all()
    for row in rows:
        for value in (row.digest, row.lookup_prefix, row.id):
            assert key.plaintext not in value
            assert key.plaintext.rsplit("_", 1)[1] not in value
    assert rows[0].digest == api_keys.digest_key(key.plaintext, pepper=PEPPER)


async def test_members_are_scoped_to_their_team(session):
    member = await make_member(session, team_id="team-a")
    await make_member(session, team_id="team-b", name="Juan")
    repo = MemberRepository(session)
    assert (await repo.get(member.id, team_id="team-a")) is not None
    assert (await repo.get(member.id, team_id="team-b")) is None
    page = await repo.list_for_team("team-a", limit=10, cursor=None)
    assert [m.id for m in page.items] == [member.id]


async def test_bootstrap_key_is_idempotent_and_rotates(maker):
    first = "bootstrap-" + "a" * 40
    assert await store_bootstrap_operator_key(maker, first, pepper=PEPPER) is True
    assert await store_bootstrap_operator_key(maker, first, pepper=PEPPER) is False
    async with maker() as session:
        rows = (await session.scalars(select(ApiKey))).all()
        assert len(rows) == 1
        assert rows[0].role == "operator"
        assert rows[0].revoked_at is None
    # A console session opened with the first key ...
    async with maker() as session, session.begin():
        now = datetime.now(UTC)
        await ConsoleSessionRepository(session).create(
            token_digest="d" * 64,
            api_key_id=rows[0].id,
            now=now,
            expires_at=now + timedelta(hours=1),
        )
    # ... ends when a new key (same 16-character prefix) replaces the old digest in place.
    second = first[:16] + "b" * 40
    assert await store_bootstrap_operator_key(maker, second, pepper=PEPPER) is True
    async with maker() as session:
        assert (await session.scalars(select(ConsoleSession))).all() == []
    # A key under another prefix revokes the earlier bootstrap key.
    third = "another-bootstrap-" + "c" * 40
    assert await store_bootstrap_operator_key(maker, third, pepper=PEPPER) is True
    async with maker() as session:
        rows = {r.lookup_prefix: r for r in (await session.scalars(select(ApiKey))).all()}
        assert len(rows) == 2
        assert rows[first[:16]].revoked_at is not None
        assert rows[first[:16]].digest == api_keys.digest_key(second, pepper=PEPPER)
        assert rows[third[:16]].revoked_at is None


async def test_concurrent_bootstrap_stores_one_row(maker):
    key = "concurrent-bootstrap-" + "z" * 40
    results = await asyncio.gather(
        *(store_bootstrap_operator_key(maker, key, pepper=PEPPER) for _ in range(4))
    )
    assert True in results
    async with maker() as session:
        rows = (await session.scalars(select(ApiKey))).all()
        assert len(rows) == 1
        assert rows[0].revoked_at is None
