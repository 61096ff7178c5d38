"""A tenant's policy change reaches the jobs it already has: pushed to the router at once, or
by the background worker once the router is back (services/gateway/tenant_policies.py)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from services.gateway import tenant_policies
from services.gateway.submissions import create_sweeper
from tests.gateway.test_api import BOOKKEEPING_JOB, BOOKKEEPING_TEAM, bearer
from tests.gateway.test_submissions import client_key, outage, scalar

__all__ = ["outage"]  # a fixture, used by name below

DUBLIN_TEAM = {
    **BOOKKEEPING_TEAM,
    "name": "Dublin Ledger Ops",
    "country": "IE",
    "timezone": "Europe/Dublin",
    "hourly_rate": 40.0,  # dearer: routing prefers Pune until the policy forbids it
}


async def _assignment(platform: Any, key: str, job_id: str) -> tuple[str, str | None]:
    job = (await platform.client.get(f"/v1/jobs/{job_id}", headers=bearer(key))).json()
    team = job["assignment"]["team_name"] if job["assignment"] else None
    return job["status"], team


async def _pushed(platform: Any, tenant_id: str) -> tuple[int, int]:
    row = await scalar(
        platform.databases["gateway"],
        "SELECT version * 1000 + policy_pushed_version FROM tenants WHERE id = :id",
        id=tenant_id,
    )
    return divmod(int(row), 1000)


async def test_a_policy_change_moves_the_tenant_s_jobs_now_or_when_the_router_is_back(outage):
    platform, link = outage
    gw, operator = platform.client, platform.operator
    tenant_id, key = await client_key(platform)
    dublin = await gw.post("/v1/admin/teams", json=DUBLIN_TEAM, headers=operator)
    assert dublin.status_code == 201, dublin.text
    job = await gw.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=bearer(key))
    job_id = job.json()["id"]
    assert await _assignment(platform, key, job_id) == ("queued", "Pune Ledger Ops")
    assert await _pushed(platform, tenant_id) == (1, 1)  # a new tenant has nothing to push

    changed = await gw.put(
        f"/v1/admin/tenants/{tenant_id}/policy",
        json={"allowed_countries": ["IE"]},
        headers=operator,
    )
    assert changed.status_code == 200, changed.text
    assert await _assignment(platform, key, job_id) == ("queued", "Dublin Ledger Ops")
    assert await _pushed(platform, tenant_id) == (2, 2)
    events = (await gw.get(f"/v1/jobs/{job_id}/events", headers=bearer(key))).json()["data"]
    assert events[-1]["type"] == "rerouted"
    # A job submitted now carries the version its policy was made from, so the router holds
    # it to later changes only.
    later = await gw.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=bearer(key))
    stored_version = await scalar(
        platform.databases["router"],
        "SELECT policy_version FROM jobs WHERE id = :id",
        id=later.json()["id"],
    )
    assert stored_version == 2

    # The router away: the change is stored (200) and pushed once it is back.
    link.up = False
    changed = await gw.put(
        f"/v1/admin/tenants/{tenant_id}/policy",
        json={"allowed_countries": ["IE"], "required_certifications": ["SOC2"]},
        headers=operator,
    )
    assert changed.status_code == 200, changed.text
    assert await _pushed(platform, tenant_id) == (3, 2)
    link.up = True
    sweeper = create_sweeper(platform.app)
    assert sweeper.policies is not None
    assert await sweeper.policies.push_due() == 1
    assert await _pushed(platform, tenant_id) == (3, 3)
    # Neither team holds SOC2: the job waits, visibly, for a team that may take it.
    assert await _assignment(platform, key, job_id) == ("unroutable", None)
    assert await sweeper.policies.push_due() == 0


async def test_tenants_the_router_refuses_do_not_keep_the_others_waiting(outage, monkeypatch):
    """A pass pushes the next batch of due tenants, not always the first: a batch's worth of
    policies the router refuses (a bug; each refusal is logged) cannot stop the rest."""
    platform, link = outage
    gw, operator = platform.client, platform.operator
    monkeypatch.setattr(tenant_policies, "BATCH", 2)
    refused = []
    for name in ("Refused One", "Refused Two"):
        created = await gw.post("/v1/admin/tenants", json={"name": name}, headers=operator)
        refused.append(created.json()["id"])
    healthy = await gw.post("/v1/admin/tenants", json={"name": "Healthy"}, headers=operator)
    healthy_id = healthy.json()["id"]
    # Stored policies the router's schema refuses, due for a push, older than the next change.
    url = platform.databases["gateway"]
    cast = "CAST(:policy AS JSON)" if url.startswith("postgresql") else ":policy"
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            for tenant_id in refused:
                await connection.execute(
                    text(
                        f"UPDATE tenants SET policy = {cast}, version = version + 1 WHERE id = :id"
                    ),
                    {"policy": json.dumps({"allowed_countries": 5}), "id": tenant_id},
                )
    finally:
        await engine.dispose()
    link.up = False  # so the healthy tenant's change waits for the worker too
    changed = await gw.put(
        f"/v1/admin/tenants/{healthy_id}/policy",
        json={"allowed_countries": ["IE"]},
        headers=operator,
    )
    assert changed.status_code == 200, changed.text
    link.up = True

    sweeper = create_sweeper(platform.app)
    assert sweeper.policies is not None
    assert [await sweeper.policies.push_due() for _ in range(2)] == [0, 1]
    assert await _pushed(platform, healthy_id) == (2, 2)
    for tenant_id in refused:
        assert await _pushed(platform, tenant_id) == (2, 1)  # still due, tried again next round
