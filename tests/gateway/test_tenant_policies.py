"""A tenant's policy change reaches the jobs it already has: pushed to the router at once, or
by the background worker once the router is back (services/gateway/tenant_policies.py)."""

from __future__ import annotations

from typing import Any

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
