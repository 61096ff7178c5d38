"""The router's list filters in its queries (on every backend the run has): JSON-array skills,
keyset pages that stay exact under a filter, cursors bound to their filters, and the tenant and
team conditions that no filter widens."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from services.router.db.pagination import CursorFiltersChanged, InvalidCursor
from services.router.db.repository import JobFilters, JobRepository, TeamFilters, TeamRepository
from shared.db import utcnow
from tests.router.factories import OTHER_TENANT, TENANT, make_job, make_team, new_uuid


async def _every_job(repo: JobRepository, filters: JobFilters, tenant: str = TENANT) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        page = await repo.list_for_tenant(
            tenant_id=tenant, status=None, limit=2, cursor=cursor, filters=filters
        )
        seen += [job.id for job in page.items]
        if not page.has_more:
            return seen
        cursor = page.next_cursor


async def test_job_filters_page_exactly(session: AsyncSession) -> None:
    repo = JobRepository(session)
    start = utcnow()
    wanted = []
    for minute in range(7):
        at = start + timedelta(minutes=minute)
        job = await make_job(
            session,
            created_at=at,
            priority="high" if minute % 2 else "low",
            domain="legal" if minute < 4 else "clinical",
            tier="KPO",
        )
        if minute % 2 and minute < 4:
            wanted.append(job.id)
    await make_job(session, tenant_id=OTHER_TENANT, priority="high", domain="legal")
    found = await _every_job(repo, JobFilters(priorities=("high",), domains=("legal",)))
    assert found == list(reversed(wanted))
    window = JobFilters(
        created_after=start + timedelta(minutes=2), created_before=start + timedelta(minutes=5)
    )
    assert len(await _every_job(repo, window)) == 3
    # The tenant condition stays whatever the filters say.
    assert len(await _every_job(repo, JobFilters(tenant_id=OTHER_TENANT))) == 7


async def test_a_cursor_is_bound_to_its_filters(session: AsyncSession) -> None:
    repo = JobRepository(session)
    for _ in range(3):
        await make_job(session, priority="high")
    high = JobFilters(priorities=("high",))
    page = await repo.list_for_tenant(
        tenant_id=TENANT, status=None, limit=1, cursor=None, filters=high
    )
    assert page.next_cursor
    again = await repo.list_for_tenant(
        tenant_id=TENANT, status=None, limit=1, cursor=page.next_cursor, filters=high
    )
    assert again.items
    for other in (JobFilters(), JobFilters(priorities=("low",))):
        with pytest.raises(CursorFiltersChanged):
            await repo.list_for_tenant(
                tenant_id=TENANT, status=None, limit=1, cursor=page.next_cursor, filters=other
            )
    # An unfiltered cursor has the old form and keeps working unfiltered only.
    plain = await repo.list_for_tenant(tenant_id=TENANT, status=None, limit=1, cursor=None)
    with pytest.raises(CursorFiltersChanged):
        await repo.list_for_tenant(
            tenant_id=TENANT, status=None, limit=1, cursor=plain.next_cursor, filters=high
        )
    with pytest.raises(InvalidCursor):
        await repo.list_for_tenant(tenant_id=TENANT, status=None, limit=1, cursor="bm90IGpzb24")


async def test_team_filters_on_json_arrays(session: AsyncSession) -> None:
    repo = TeamRepository(session)
    await make_team(
        session,
        name=f"a-{new_uuid()}",
        skills=["clinical", "legal"],
        country="IE",
        certifications=["ISO27001"],
    )
    await make_team(
        session, name=f"b-{new_uuid()}", skills=["legal"], country="IN", certifications=["HIPAA"]
    )
    await make_team(
        session,
        name=f"c-{new_uuid()}",
        skills=["bookkeeping"],
        tier="BPO",
        country="PH",
        certifications=[],
    )

    async def count(filters: TeamFilters) -> int:
        page = await repo.list(limit=100, cursor=None, active=None, tier=None, filters=filters)
        return len(page.items)

    assert await count(TeamFilters(skills=("legal",))) == 2
    assert await count(TeamFilters(skills=("legal", "clinical"))) == 1
    assert await count(TeamFilters(certifications=("HIPAA",))) == 1
    assert await count(TeamFilters(countries=("IE", "IN"))) == 2
    assert await count(TeamFilters(tiers=("BPO",))) == 1
    # A value that merely contains a skill's text is no match.
    assert await count(TeamFilters(skills=("leg",))) == 0
