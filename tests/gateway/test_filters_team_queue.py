"""A member's team queue narrowed by priority, domain and time, in the router's query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.gateway.conftest import Platform
from tests.gateway.test_api import BOOKKEEPING_TEAM, assert_problem, bearer, create_tenant
from tests.gateway.test_filters_lists import _all_pages, _submit


async def _team_with_member(platform: Platform, name: str) -> dict[str, str]:
    team = await platform.client.post(
        "/v1/admin/teams", json={**BOOKKEEPING_TEAM, "name": name}, headers=platform.operator
    )
    assert team.status_code == 201, team.text
    member = await platform.client.post(
        f"/v1/admin/teams/{team.json()['id']}/members",
        json={"name": "Queue"},
        headers=platform.operator,
    )
    assert member.status_code == 201, member.text
    return bearer(member.json()["api_key"])


async def test_team_queue_filters_page_exactly(platform: Platform) -> None:
    member = await _team_with_member(platform, "Queue Filters Bookkeeping")
    tenant = await create_tenant(platform, "Queue Filters Ltd")
    high = [await _submit(platform, tenant["api_key"], priority="high") for _ in range(3)]
    low = [await _submit(platform, tenant["api_key"], priority="low") for _ in range(2)]
    assert {job["assignment"]["team_name"] for job in high + low} == {"Queue Filters Bookkeeping"}

    found = await _all_pages(platform, "/v1/team/jobs", member, priority="high")
    assert sorted(j["id"] for j in found) == sorted(j["id"] for j in high)
    found = await _all_pages(platform, "/v1/team/jobs", member, priority=["high", "low"])
    assert len(found) == 5
    assert len(await _all_pages(platform, "/v1/team/jobs", member, domain="bookkeeping")) == 5
    assert await _all_pages(platform, "/v1/team/jobs", member, domain="legal") == []
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await _all_pages(platform, "/v1/team/jobs", member, created_after=future) == []
    assert len(await _all_pages(platform, "/v1/team/jobs", member, created_before=future)) == 5


async def test_team_queue_filters_refuse_bad_values_and_foreign_cursors(platform: Platform) -> None:
    member = await _team_with_member(platform, "Queue Filters Refusals")
    tenant = await create_tenant(platform, "Queue Refusals Ltd")
    for _ in range(3):
        await _submit(platform, tenant["api_key"], priority="high")
    bad = await platform.client.get("/v1/team/jobs", params={"priority": "urgent"}, headers=member)
    assert_problem(bad, 422)
    assert "priority" in bad.text
    first = await platform.client.get(
        "/v1/team/jobs", params={"priority": "high", "limit": 1}, headers=member
    )
    assert first.status_code == 200, first.text
    assert first.json()["has_more"]
    foreign = await platform.client.get(
        "/v1/team/jobs",
        params={"priority": "low", "limit": 1, "cursor": first.json()["next_cursor"]},
        headers=member,
    )
    assert_problem(foreign, 400)


async def test_a_job_timeline_pages_and_filters_by_event_type(platform: Platform) -> None:
    member = await _team_with_member(platform, "Timeline Bookkeeping")
    tenant = await create_tenant(platform, "Timeline Ltd")
    client = bearer(tenant["api_key"])
    job = await _submit(platform, tenant["api_key"])
    for action in ("claim", "release", "claim", "release"):
        moved = await platform.client.post(f"/v1/team/jobs/{job['id']}/{action}", headers=member)
        assert moved.status_code == 200, moved.text
    path = f"/v1/jobs/{job['id']}/events"
    everything = (await platform.client.get(path, headers=client)).json()
    assert everything["has_more"] is False
    paged = await _all_pages(platform, path, client)
    assert [e["seq"] for e in paged] == [e["seq"] for e in everything["data"]]
    assert len(paged) >= 6
    claims = await _all_pages(platform, path, client, type="claimed")
    assert [e["type"] for e in claims] == ["claimed", "claimed"]
    first = await platform.client.get(path, params={"limit": 1}, headers=client)
    other = await platform.client.get(
        path,
        params={"limit": 1, "type": "claimed", "cursor": first.json()["next_cursor"]},
        headers=client,
    )
    assert_problem(other, 400)
    assert_problem(
        await platform.client.get(path, params={"type": "Bad Type"}, headers=client), 422
    )
