"""POST /v1/classify through the gateway, against the real router (in process)."""

from __future__ import annotations

from typing import Any

from tests.gateway.conftest import Platform
from tests.gateway.test_api import assert_problem, bearer, create_tenant

LEDGER_TEAM = {
    "name": "Pune Ledger Ops",
    "country": "IN",
    "timezone": "Asia/Kolkata",
    "working_hours": {"start": "00:00", "end": "23:59", "days": [0, 1, 2, 3, 4, 5, 6]},
    "tier": "BPO",
    "skills": ["bookkeeping", "data_entry"],
    "certifications": ["ISO27001"],
    "languages": ["en"],
    "capacity": 5,
    "hourly_rate": 14.5,
}

BOOKKEEPING = {
    "title": "Monthly close",
    "description": "Reconcile the bank accounts in Xero and post the month-end journal entries.",
}
LEGAL = {
    "title": "Contract review",
    "description": "Review incoming NDAs and supply agreements against our legal playbook, flag "
    "indemnity and liability clauses and propose redlines.",
}
DESIGN = {"title": "Logo", "description": "Design a logo and brand kit for a vegan cafe."}
VAGUE = {"title": "Quick favour", "description": "Please have a look at the attached and help."}


async def _client(platform: Platform, **tenant: Any) -> dict[str, str]:
    created = await create_tenant(platform, **tenant)
    return bearer(created["api_key"])


async def test_a_batch_of_1000_classifies_in_order_and_stores_nothing(platform):
    team = await platform.client.post(
        "/v1/admin/teams", json=LEDGER_TEAM, headers=platform.operator
    )
    assert team.status_code == 201, team.text
    client = await _client(platform)
    pattern = [BOOKKEEPING, LEGAL, DESIGN, VAGUE]
    items = [pattern[i % 4] for i in range(1000)]
    response = await platform.client.post("/v1/classify", json={"items": items}, headers=client)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 1000
    for index, result in enumerate(results):
        assert set(result) >= {"tier", "domain", "confidence", "reasons", "team"}
        expected = ["bookkeeping", "legal", "design", None][index % 4]
        if expected is not None:
            assert result["domain"] == expected
    first = results[0]
    assert (first["tier"], first["status"]) == ("BPO", "queued")
    assert first["team"]["name"] == "Pune Ledger Ops"
    assert results[1]["team"] is None  # no legal team
    assert results[1]["status"] == "unroutable"
    assert results[3]["status"] == "triage"
    jobs = await platform.client.get("/v1/jobs", headers=client)
    assert jobs.json()["data"] == []


async def test_the_tenant_policy_limits_the_previewed_team(platform):
    team = await platform.client.post(
        "/v1/admin/teams", json=LEDGER_TEAM, headers=platform.operator
    )
    assert team.status_code == 201, team.text
    client = await _client(platform, policy={"allowed_countries": ["IE"]})
    response = await platform.client.post(
        "/v1/classify", json={"items": [BOOKKEEPING]}, headers=client
    )
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert (result["domain"], result["team"], result["status"]) == (
        "bookkeeping",
        None,
        "unroutable",
    )


async def test_a_service_hint_is_honoured(platform):
    client = await _client(platform)
    item = {**BOOKKEEPING, "service": "legal"}
    response = await platform.client.post("/v1/classify", json={"items": [item]}, headers=client)
    (result,) = response.json()["results"]
    assert (result["domain"], result["confidence"]) == ("legal", 1.0)


async def test_bad_batches_are_422_and_other_roles_403(platform):
    client = await _client(platform)
    bodies: list[dict[str, Any]] = [
        {"items": [BOOKKEEPING] * 1001},
        {"items": []},
        {"items": [{"title": "no description"}]},
        {"items": [{"description": ""}]},
        {"items": [{**BOOKKEEPING, "service": "astrology"}]},
        {"items": [BOOKKEEPING], "extra": 1},
    ]
    for body in bodies:
        response = await platform.client.post("/v1/classify", json=body, headers=client)
        assert_problem(response, 422)
    response = await platform.client.post(
        "/v1/classify", json={"items": [BOOKKEEPING]}, headers=platform.operator
    )
    assert_problem(response, 403)
