"""Filters on the lists: validated (422 naming the field), applied in the owning service's query
(so pages stay exact under a filter), bound to their cursors, and never wider than the caller's
tenant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.gateway.conftest import Platform
from tests.gateway.test_api import (
    BOOKKEEPING_JOB,
    BOOKKEEPING_TEAM,
    assert_problem,
    bearer,
    create_tenant,
)

CLINICAL_TEAM = {
    **BOOKKEEPING_TEAM,
    "name": "Dublin Clinical Coding",
    "country": "IE",
    "timezone": "Europe/Dublin",
    "tier": "KPO",
    "skills": ["clinical", "pharmaceutical"],
    "certifications": ["HIPAA", "ISO27001"],
}


async def _all_pages(
    gateway: Platform, path: str, headers: dict[str, str], **params: Any
) -> list[dict[str, Any]]:
    """Every item of a list read two at a time, following ``next_cursor`` with the same filters."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": 2, **({"cursor": cursor} if cursor else {})}
        response = await gateway.client.get(path, params=query, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["data"])
        if not page["has_more"]:
            assert page["next_cursor"] is None
            return items
        cursor = page["next_cursor"]


async def _submit(gateway: Platform, key: str, **changes: Any) -> dict[str, Any]:
    response = await gateway.client.post(
        "/v1/jobs", json={**BOOKKEEPING_JOB, **changes}, headers=bearer(key)
    )
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


async def test_job_filters_page_exactly_and_stay_in_the_tenant(platform: Platform) -> None:
    response = await platform.client.post(
        "/v1/admin/teams", json=BOOKKEEPING_TEAM, headers=platform.operator
    )
    assert response.status_code == 201, response.text
    acme = await create_tenant(platform, "Acme Filters")
    other = await create_tenant(platform, "Other Filters")
    high = [await _submit(platform, acme["api_key"], priority="high") for _ in range(3)]
    low = [await _submit(platform, acme["api_key"], priority="low") for _ in range(2)]
    # The other tenant's jobs match every filter below: none may appear.
    await _submit(platform, other["api_key"], priority="high")
    await platform.client.post(f"/v1/jobs/{high[0]['id']}/cancel", headers=bearer(acme["api_key"]))

    headers = bearer(acme["api_key"])
    found = await _all_pages(platform, "/v1/jobs", headers, priority="high")
    assert sorted(j["id"] for j in found) == sorted(j["id"] for j in high)
    found = await _all_pages(platform, "/v1/jobs", headers, priority=["high", "low"])
    assert len(found) == 5
    found = await _all_pages(platform, "/v1/jobs", headers, status="cancelled")
    assert [j["id"] for j in found] == [high[0]["id"]]
    found = await _all_pages(
        platform, "/v1/jobs", headers, status=["queued", "cancelled"], priority="low"
    )
    assert sorted(j["id"] for j in found) == sorted(j["id"] for j in low)
    found = await _all_pages(platform, "/v1/jobs", headers, domain="bookkeeping", tier="BPO")
    assert len(found) == 5
    assert await _all_pages(platform, "/v1/jobs", headers, domain="legal") == []

    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert await _all_pages(platform, "/v1/jobs", headers, created_after=future) == []
    assert len(await _all_pages(platform, "/v1/jobs", headers, created_after=past)) == 5
    assert len(await _all_pages(platform, "/v1/jobs", headers, created_before=future)) == 5


async def test_bad_filter_values_are_422_naming_the_field(platform: Platform) -> None:
    acme = await create_tenant(platform, "Acme Bad Filters")
    headers = bearer(acme["api_key"])
    cases = [
        ("/v1/jobs", {"status": "finished"}, "status"),
        ("/v1/jobs", {"priority": "urgent"}, "priority"),
        ("/v1/jobs", {"domain": "astrology"}, "domain"),
        ("/v1/jobs", {"created_after": "yesterday"}, "created_after"),
        ("/v1/jobs", {"created_after": "0001-01-01T00:00:00+14:00"}, "created_after"),
        (
            "/v1/jobs",
            {"created_after": "2026-02-01T00:00:00Z", "created_before": "2026-01-01T00:00:00Z"},
            "created_before",
        ),
    ]
    # A word outside a filter's vocabulary is a mistake, not an empty page.
    job = await platform.client.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=headers)
    cases.append((f"/v1/jobs/{job.json()['id']}/events", {"type": "bogus"}, "type"))
    for path, params, field in cases:
        problem = assert_problem(
            await platform.client.get(path, params=params, headers=headers), 422
        )
        assert field in problem["detail"], (params, problem)
    timeline = await platform.client.get(
        f"/v1/jobs/{job.json()['id']}/events", params={"type": "routed"}, headers=headers
    )
    assert [e["type"] for e in timeline.json()["data"]] == []  # no team: it is unroutable
    timeline = await platform.client.get(
        f"/v1/jobs/{job.json()['id']}/events", params={"type": "created"}, headers=headers
    )
    assert [e["type"] for e in timeline.json()["data"]] == ["created"]
    operator_cases = [
        ("/v1/admin/teams", {"skill": "juggling"}, "skill"),
        ("/v1/admin/teams", {"country": "XX"}, "country"),
        ("/v1/admin/teams", {"active": "maybe"}, "active"),
        ("/v1/admin/tenants", {"created_before": "soon"}, "created_before"),
        ("/v1/admin/audit", {"action": "DROP TABLE"}, "action"),
        ("/v1/admin/audit", {"action": "bogus"}, "action"),
        ("/v1/admin/audit", {"outcome": "denied"}, "outcome"),
        ("/v1/admin/audit", {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01"}, "until"),
        ("/v1/admin/triage", {"tier": "XPO"}, "tier"),
    ]
    for path, params, field in operator_cases:
        response = await platform.client.get(path, params=params, headers=platform.operator)
        problem = assert_problem(response, 422)
        assert field in problem["detail"], (params, problem)
    # Every word of the vocabulary is taken, the root key rotation's hyphen included.
    for params in ({"action": "rotate-root"}, {"action": "seal", "outcome": "refused"}):
        response = await platform.client.get(
            "/v1/admin/audit", params=params, headers=platform.operator
        )
        assert response.status_code == 200, response.text


async def test_a_cursor_only_continues_under_its_own_filters(platform: Platform) -> None:
    await platform.client.post("/v1/admin/teams", json=BOOKKEEPING_TEAM, headers=platform.operator)
    acme = await create_tenant(platform, "Acme Cursor Filters")
    headers = bearer(acme["api_key"])
    for _ in range(3):
        await _submit(platform, acme["api_key"], priority="high")
    first = await platform.client.get(
        "/v1/jobs", params={"priority": "high", "limit": 1}, headers=headers
    )
    cursor = first.json()["next_cursor"]
    assert cursor
    # The same filters in another order continue the list.
    again = await platform.client.get(
        "/v1/jobs", params={"priority": "high", "limit": 1, "cursor": cursor}, headers=headers
    )
    assert again.status_code == 200, again.text
    for params in ({"priority": "low"}, {}, {"priority": "high", "status": "queued"}):
        response = await platform.client.get(
            "/v1/jobs", params={**params, "limit": 1, "cursor": cursor}, headers=headers
        )
        problem = assert_problem(response, 400)
        assert "other filters" in problem["detail"]
    # Gateway-kept lists bind their cursors the same way.
    for name in ("Filter A", "Filter B", "Filter C"):
        await create_tenant(platform, name)
    page = await platform.client.get(
        "/v1/admin/tenants", params={"name": "filter", "limit": 1}, headers=platform.operator
    )
    cursor = page.json()["next_cursor"]
    response = await platform.client.get(
        "/v1/admin/tenants", params={"limit": 1, "cursor": cursor}, headers=platform.operator
    )
    assert "other filters" in assert_problem(response, 400)["detail"]


async def test_a_cursor_only_continues_its_own_list(platform: Platform) -> None:
    """A cursor of one list is refused by every other (400), never read as a place in it:
    jobs and teams, one job's timeline and another's, tenants and their keys, one tenant's
    keys and another's."""
    acme = await create_tenant(platform, "Acme Cursor Lists")
    headers = bearer(acme["api_key"])
    await platform.client.post("/v1/admin/teams", json=BOOKKEEPING_TEAM, headers=platform.operator)
    second_team = {**BOOKKEEPING_TEAM, "name": "Second Ledger Ops"}
    await platform.client.post("/v1/admin/teams", json=second_team, headers=platform.operator)
    jobs = [await _submit(platform, acme["api_key"]) for _ in range(2)]

    async def cursor_of(path: str, auth: dict[str, str]) -> str:
        page = await platform.client.get(path, params={"limit": 1}, headers=auth)
        assert page.status_code == 200, page.text
        cursor: str = page.json()["next_cursor"]
        assert cursor
        return cursor

    jobs_cursor = await cursor_of("/v1/jobs", headers)
    teams_cursor = await cursor_of("/v1/admin/teams", platform.operator)
    events_cursor = await cursor_of(f"/v1/jobs/{jobs[0]['id']}/events", headers)
    other = await create_tenant(platform, "Another Cursor Tenant")
    await platform.client.post(f"/v1/admin/tenants/{other['id']}/keys", headers=platform.operator)
    tenants_cursor = await cursor_of("/v1/admin/tenants", platform.operator)
    await platform.client.post(f"/v1/admin/tenants/{acme['id']}/keys", headers=platform.operator)
    keys_cursor = await cursor_of(f"/v1/admin/tenants/{acme['id']}/keys", platform.operator)
    for path, auth, foreign in (
        ("/v1/admin/teams", platform.operator, jobs_cursor),
        ("/v1/jobs", headers, teams_cursor),
        (f"/v1/jobs/{jobs[1]['id']}/events", headers, events_cursor),
        (f"/v1/admin/tenants/{acme['id']}/keys", platform.operator, tenants_cursor),
        ("/v1/admin/tenants", platform.operator, keys_cursor),
        # The same list of another parent: another tenant's keys, another tenant's jobs.
        (f"/v1/admin/tenants/{other['id']}/keys", platform.operator, keys_cursor),
        ("/v1/jobs", bearer(other["api_key"]), jobs_cursor),
    ):
        response = await platform.client.get(
            path, params={"limit": 1, "cursor": foreign}, headers=auth
        )
        assert "another list" in assert_problem(response, 400)["detail"], path
    # Each still continues its own list.
    for path, auth, own in (
        ("/v1/jobs", headers, jobs_cursor),
        (f"/v1/jobs/{jobs[0]['id']}/events", headers, events_cursor),
        ("/v1/admin/tenants", platform.operator, tenants_cursor),
    ):
        response = await platform.client.get(path, params={"limit": 1, "cursor": own}, headers=auth)
        assert response.status_code == 200, response.text


async def test_team_filters(platform: Platform) -> None:
    for team in (
        BOOKKEEPING_TEAM,
        CLINICAL_TEAM,
        {**CLINICAL_TEAM, "name": "Off", "active": False},
    ):
        response = await platform.client.post(
            "/v1/admin/teams", json=team, headers=platform.operator
        )
        assert response.status_code == 201, response.text
    op = platform.operator

    def names(items: list[dict[str, Any]]) -> list[str]:
        return sorted(item["name"] for item in items)

    assert names(await _all_pages(platform, "/v1/admin/teams", op, country="ie")) == [
        "Dublin Clinical Coding",
        "Off",
    ]
    assert names(
        await _all_pages(platform, "/v1/admin/teams", op, skill="clinical", active=True)
    ) == ["Dublin Clinical Coding"]
    both = await _all_pages(platform, "/v1/admin/teams", op, skill=["clinical", "bookkeeping"])
    assert both == []  # repeated skills: every one of them
    assert names(await _all_pages(platform, "/v1/admin/teams", op, certification="HIPAA")) == [
        "Dublin Clinical Coding",
        "Off",
    ]
    assert names(await _all_pages(platform, "/v1/admin/teams", op, tier="BPO")) == [
        "Pune Ledger Ops"
    ]
    assert len(await _all_pages(platform, "/v1/admin/teams", op, country=["IN", "IE"])) == 3


async def test_tenant_key_member_and_audit_filters(platform: Platform) -> None:
    op = platform.operator
    acme = await create_tenant(platform, "Acme Keys Filter")
    created = await platform.client.post(f"/v1/admin/tenants/{acme['id']}/keys", headers=op)
    assert created.status_code == 201
    revoke = await platform.client.delete(
        f"/v1/admin/tenants/{acme['id']}/keys/{created.json()['id']}", headers=op
    )
    assert revoke.status_code == 200, revoke.text
    path = f"/v1/admin/tenants/{acme['id']}/keys"
    assert len(await _all_pages(platform, path, op)) == 2
    revoked = await _all_pages(platform, path, op, revoked=True)
    assert [k["id"] for k in revoked] == [created.json()["id"]]
    assert len(await _all_pages(platform, path, op, revoked=False)) == 1

    names = [t["name"] for t in await _all_pages(platform, "/v1/admin/tenants", op, name="KEYS")]
    assert names == ["Acme Keys Filter"]
    # LIKE's wildcards are plain characters in a filter.
    assert await _all_pages(platform, "/v1/admin/tenants", op, name="%") == []

    team = await platform.client.post("/v1/admin/teams", json=BOOKKEEPING_TEAM, headers=op)
    team_id = team.json()["id"]
    for name in ("Asha", "Ravi", "Asha Two"):
        response = await platform.client.post(
            f"/v1/admin/teams/{team_id}/members", json={"name": name}, headers=op
        )
        assert response.status_code == 201
    members = await _all_pages(platform, f"/v1/admin/teams/{team_id}/members", op, name="asha")
    assert sorted(m["name"] for m in members) == ["Asha", "Asha Two"]

    # The vault's audit log: two seals for acme's jobs, filtered in the vault's query.
    await _submit(platform, acme["api_key"], confidential={"x": 1})
    await _submit(platform, acme["api_key"], confidential={"x": 2})
    records = await _all_pages(platform, "/v1/admin/audit", op, tenant_id=acme["id"], action="seal")
    assert len(records) == 2
    assert all(r["action"] == "seal" and r["tenant_id"] == acme["id"] for r in records)
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await _all_pages(platform, "/v1/admin/audit", op, since=future) == []
    assert (
        await _all_pages(platform, "/v1/admin/audit", op, action="open", tenant_id=acme["id"]) == []
    )


async def test_triage_filters(platform: Platform) -> None:
    acme = await create_tenant(platform, "Acme Triage Filter")
    other = await create_tenant(platform, "Other Triage Filter")
    vague = {
        "title": "Help",
        "description": "Please look at the attached thing and do it.",
        "service": None,
    }
    for tenant in (acme, other):
        job = await _submit(platform, tenant["api_key"], **vague)
        assert job["status"] == "triage", job
    op = platform.operator
    found = await _all_pages(platform, "/v1/admin/triage", op, tenant_id=acme["id"])
    assert len(found) == 1
    assert found[0]["tenant_id"] == acme["id"]
    assert len(await _all_pages(platform, "/v1/admin/triage", op)) == 2
    assert await _all_pages(platform, "/v1/admin/triage", op, priority="low") == []


@pytest.mark.parametrize("status", ["pending", "succeeded", "failed"])
async def test_delivery_filters_validate(platform: Platform, status: str) -> None:
    acme = await create_tenant(platform, f"Acme Deliveries {status}")
    headers = bearer(acme["api_key"])
    created = await platform.client.post(
        "/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/hook"}, headers=headers
    )
    assert created.status_code == 201, created.text
    path = f"/v1/webhook-endpoints/{created.json()['id']}/deliveries"
    response = await platform.client.get(path, params={"status": status}, headers=headers)
    assert response.status_code == 200, response.text
    bad = await platform.client.get(path, params={"status": "lost"}, headers=headers)
    assert "status" in assert_problem(bad, 422)["detail"]
    for unknown in ("order.paid", "job.bogus"):
        bad = await platform.client.get(path, params={"event_type": unknown}, headers=headers)
        assert "event_type" in assert_problem(bad, 422)["detail"]
    known = await platform.client.get(path, params={"event_type": "job.queued"}, headers=headers)
    assert known.status_code == 200, known.text
    listed = await _all_pages(platform, "/v1/webhook-endpoints", headers, url="127.0.0.1")
    assert len(listed) == 1
