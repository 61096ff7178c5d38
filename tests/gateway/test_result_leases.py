"""A job's confidential result across leases: a completion lost after its seal, or stalled.

The vault keeps one result record per job. A seal grant names its lease (the job's event
sequence when issued), so the job's next holder may seal the result again in place, and the
router refuses a completion whose result was sealed in an earlier lease: the result stored
at the router and the sealed one always come from one lease.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from services.gateway.clients.router import RouterClient
from services.gateway.clients.vault import VaultClient
from shared import sealed_envelope as se
from shared.failpoints import FAILPOINTS_FILE_VARIABLE
from shared.http import UpstreamError
from tests.gateway.conftest import Platform
from tests.gateway.test_api import (
    BOOKKEEPING_JOB,
    BOOKKEEPING_TEAM,
    CANARY,
    assert_problem,
    bearer,
    create_tenant,
)

AFTER_SEAL = "gateway.complete.after_seal"


@pytest.fixture
def failpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    armed = tmp_path / "failpoints"
    armed.write_text("")
    monkeypatch.setenv(FAILPOINTS_FILE_VARIABLE, str(armed))
    return armed


async def _member(platform: Platform, team_id: str, name: str) -> dict[str, str]:
    answer = await platform.client.post(
        f"/v1/admin/teams/{team_id}/members", json={"name": name}, headers=platform.operator
    )
    assert answer.status_code == 201, answer.text
    return bearer(answer.json()["api_key"])


async def _job(platform: Platform) -> tuple[dict[str, str], str, str]:
    """A tenant's job with confidential data, routed to a fresh team: (client, job, team)."""
    tenant = await create_tenant(platform)
    client = bearer(tenant["api_key"])
    team = await platform.client.post(
        "/v1/admin/teams", json=BOOKKEEPING_TEAM, headers=platform.operator
    )
    assert team.status_code == 201, team.text
    submitted = await platform.client.post(
        "/v1/jobs", json={**BOOKKEEPING_JOB, "confidential": {"ssn": CANARY}}, headers=client
    )
    assert submitted.status_code == 202, submitted.text
    return client, submitted.json()["id"], team.json()["id"]


async def _result_records(platform: Platform, job_id: str) -> int:
    engine = create_async_engine(platform.databases["vault"], poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            counted = await connection.execute(
                text(
                    "SELECT (SELECT count(*) FROM records WHERE job_id = :job "
                    "AND purpose = 'result') + (SELECT count(*) FROM sealed_records "
                    "WHERE job_id = :job AND purpose = 'result')"
                ),
                {"job": job_id},
            )
            return int(counted.scalar_one())
    finally:
        await engine.dispose()


async def _confidential(
    platform: Platform, member: dict[str, str], job_id: str, kind: str, value: str
) -> dict[str, Any]:
    """The completion's confidential part: sealed by the vault, or by the member for the
    tenant with the tenant's public key."""
    if kind == "vault":
        return {"confidential_result": {"finding": value}}
    target = await platform.client.get(f"/v1/team/jobs/{job_id}/tenant-key", headers=member)
    assert target.status_code == 200, target.text
    key = target.json()
    envelope = se.seal_json(
        {"finding": value},
        public_key=se.load_public_key(key["public_key"]),
        tenant_id=key["tenant_id"],
        job_ref=job_id,
        key_id=key["key_id"],
    )
    return {"confidential_result_sealed": envelope.to_json()}


@pytest.mark.parametrize("kind", ["vault", "member"])
async def test_the_next_holder_replaces_a_result_whose_completion_was_lost(
    platform: Platform, failpoints: Path, kind: str
):
    """Asha's completion fails after her result is sealed (the gateway lost it); she
    releases the job and Li completes it with another result. Before, the vault refused Li's
    result for good (409: one result per job), so the job could never be completed with one."""
    client, job_id, team_id = await _job(platform)
    asha = await _member(platform, team_id, "Asha")
    li = await _member(platform, team_id, "Li")
    assert (await platform.client.post(f"/v1/team/jobs/{job_id}/claim", headers=asha)).is_success
    failpoints.write_text(f"{AFTER_SEAL}=error\n")
    body = {"result": {"v": 1}, **await _confidential(platform, asha, job_id, kind, "lost")}
    lost = await platform.client.post(f"/v1/team/jobs/{job_id}/complete", json=body, headers=asha)
    assert lost.status_code == 500
    failpoints.write_text("")
    assert await _result_records(platform, job_id) == 1  # sealed, never completed
    released = await platform.client.post(
        f"/v1/team/jobs/{job_id}/release", json={"reason": "shift over"}, headers=asha
    )
    assert released.status_code == 200, released.text

    assert (await platform.client.post(f"/v1/team/jobs/{job_id}/claim", headers=li)).is_success
    body = {"result": {"v": 2}, **await _confidential(platform, li, job_id, kind, "final")}
    done = await platform.client.post(f"/v1/team/jobs/{job_id}/complete", json=body, headers=li)
    assert done.status_code == 200, done.text
    result = await platform.client.get(f"/v1/jobs/{job_id}/result", headers=client)
    assert result.json() == {"result": {"v": 2}, "confidential_result": {"finding": "final"}}
    assert await _result_records(platform, job_id) == 1  # replaced, not a second copy
    verdict = await platform.client.get("/v1/admin/audit/verify", headers=platform.operator)
    assert verdict.json()["valid"] is True


async def test_a_completion_stalled_across_a_new_lease_is_refused(
    platform: Platform, failpoints: Path
):
    """Asha's first completion stalls after its seal. Meanwhile she releases the job, claims
    it again and completes it anew, and her new result is sealed over the stalled one. The
    stalled completion then reaches the router while she holds the new lease: it must be
    refused, or the job would keep its result beside the other completion's sealed data."""
    client, job_id, team_id = await _job(platform)
    asha = await _member(platform, team_id, "Asha")
    path = f"/v1/team/jobs/{job_id}/complete"
    assert (await platform.client.post(f"/v1/team/jobs/{job_id}/claim", headers=asha)).is_success
    failpoints.write_text(f"{AFTER_SEAL}=sleep:2\n")
    stalled = asyncio.create_task(
        platform.client.post(
            path,
            json={"result": {"v": "stalled"}, "confidential_result": {"finding": "stalled"}},
            headers=asha,
        )
    )
    while await _result_records(platform, job_id) == 0:
        await asyncio.sleep(0.02)  # sealed: the first completion is in its stall now
    failpoints.write_text(f"{AFTER_SEAL}=sleep:4\n")  # the second one stalls longer
    released = await platform.client.post(
        f"/v1/team/jobs/{job_id}/release", json={"reason": "restart"}, headers=asha
    )
    assert released.status_code == 200, released.text
    assert (await platform.client.post(f"/v1/team/jobs/{job_id}/claim", headers=asha)).is_success
    again = asyncio.create_task(
        platform.client.post(
            path,
            json={"result": {"v": "again"}, "confidential_result": {"finding": "again"}},
            headers=asha,
        )
    )
    first = await stalled
    assert_problem(first, 409)
    assert first.json()["type"].endswith("/lease-conflict")
    second = await again
    assert second.status_code == 200, second.text
    result = await platform.client.get(f"/v1/jobs/{job_id}/result", headers=client)
    assert result.json() == {"result": {"v": "again"}, "confidential_result": {"finding": "again"}}


@pytest.mark.parametrize("kind", ["vault", "member"])
async def test_a_result_sent_again_in_a_later_lease_is_then_held_for_good(
    platform: Platform, failpoints: Path, kind: str
):
    """Asha's completion is lost after its seal; Li, in the next lease, completes with the
    very same result (the vault replays its reference). A seal grant of Li's lease issued
    before that completion (kept by a compromised gateway, or used by Li's own stalled
    double submit) must not then reseal the result the job now holds."""
    client, job_id, team_id = await _job(platform)
    asha = await _member(platform, team_id, "Asha")
    li_answer = await platform.client.post(
        f"/v1/admin/teams/{team_id}/members", json={"name": "Li"}, headers=platform.operator
    )
    li, li_id = bearer(li_answer.json()["api_key"]), li_answer.json()["id"]
    assert (await platform.client.post(f"/v1/team/jobs/{job_id}/claim", headers=asha)).is_success
    body = {"result": {"v": 1}, **await _confidential(platform, asha, job_id, kind, "X")}
    failpoints.write_text(f"{AFTER_SEAL}=error\n")
    path = f"/v1/team/jobs/{job_id}/complete"
    assert (await platform.client.post(path, json=body, headers=asha)).status_code == 500
    failpoints.write_text("")
    released = await platform.client.post(
        f"/v1/team/jobs/{job_id}/release", json={"reason": "shift over"}, headers=asha
    )
    assert released.status_code == 200, released.text

    assert (await platform.client.post(f"/v1/team/jobs/{job_id}/claim", headers=li)).is_success
    router = RouterClient(platform.app.state.router_http)
    spare = await router.member_grant(team_id, job_id, member_id=li_id, action="seal")
    other = await _confidential(platform, li, job_id, kind, "Z")
    done = await platform.client.post(path, json=body, headers=li)  # the same result
    assert done.status_code == 200, done.text
    vault = VaultClient(platform.app.state.vault_http)

    async def reseal() -> None:
        if kind == "vault":
            await vault.seal_by_grant(grant=spare.grant, data=other["confidential_result"])
        else:
            sealed = other["confidential_result_sealed"]
            await vault.store_sealed_result(grant=spare.grant, envelope=sealed)

    with pytest.raises(UpstreamError) as refused:
        await reseal()
    assert refused.value.status == 409
    result = await platform.client.get(f"/v1/jobs/{job_id}/result", headers=client)
    assert result.json() == {"result": {"v": 1}, "confidential_result": {"finding": "X"}}
