"""End-to-end delivery only to keys the member key authority endorsed, so a compromised gateway
cannot have data delivered to a member of its own making (shared/member_endorsements.py).

The gateway is the platform's only source of members and their keys. Holding only its own
service key, it can make up a member, claim a job for it, register a key of its own and ask the
router for an open grant: the router signs it (the made-up member holds the lease). A vault
given the authority's public key still refuses to deliver, because no operator endorsed that
key; a real member whose key an operator endorsed reads as before.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared import member_endorsements
from shared import sealed_envelope as se
from shared.service_auth import ServiceIdentity
from tests.gateway.conftest import Platform, platform_in_process
from tests.gateway.test_api import (
    BOOKKEEPING_JOB,
    _setup_team_and_member,
    assert_problem,
    bearer,
    create_tenant,
)
from tests.gateway.test_vault_keys import SEALED_CANARY, _member_keypair, _seal, _tenant_key


@pytest.fixture
def authority(tmp_path: Path) -> Ed25519PrivateKey:
    member_endorsements.create_authority(tmp_path / "authority")
    return member_endorsements.load_authority_private_key(
        tmp_path / "authority" / member_endorsements.PRIVATE_KEY_FILE
    )


@pytest.fixture
async def endorsed_platform(databases, keys_dir, tmp_path, authority) -> AsyncIterator[Platform]:
    """The platform in-process, its vault configured with the member key authority."""
    public_key = tmp_path / "authority" / member_endorsements.PUBLIC_KEY_FILE
    async with platform_in_process(
        databases, keys_dir, tmp_path, member_key_authority_file=public_key
    ) as platform:
        yield platform


async def _sealed_job(platform: Platform) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """A team with one member, a tenant requiring end-to-end delivery, and one client-sealed
    job of it, queued at the team: the tenant, the job's id and the member."""
    _, member = await _setup_team_and_member(platform)
    tenant = await create_tenant(platform, policy={"require_e2e": True})
    client_key = bearer(tenant["api_key"])
    envelope = _seal(await _tenant_key(platform, client_key), tenant["id"], "acme-e2e-77")
    submitted = await platform.client.post(
        "/v1/jobs", json={**BOOKKEEPING_JOB, "confidential_sealed": envelope}, headers=client_key
    )
    assert submitted.status_code == 202, submitted.text
    return tenant, submitted.json()["id"], member


async def test_a_member_the_gateway_makes_up_gets_nothing_delivered(
    endorsed_platform, keys_dir, authority
):
    platform = endorsed_platform
    _, job_id, _ = await _sealed_job(platform)
    # What a compromised gateway can do with its own service key alone.
    gateway = ServiceIdentity.load(name="gateway", keys_dir=keys_dir, peers=())
    router: httpx.AsyncClient = platform.app.state.router_http
    vault: httpx.AsyncClient = platform.app.state.vault_http
    as_gateway = {"Authorization": f"Bearer {gateway.credential_for('router')}"}
    job = (await router.get(f"/internal/v1/jobs/{job_id}", headers=as_gateway)).json()
    team_id = job["assignment"]["team_id"]
    made_up = str(uuid.uuid4())
    claimed = await router.post(
        f"/internal/v1/teams/{team_id}/jobs/{job_id}/claim",
        json={"member_id": made_up},
        headers=as_gateway,
    )
    assert claimed.status_code == 200, claimed.text  # the router cannot tell: members are ours
    _, own_key = _member_keypair()
    # A key with an endorsement the gateway signed itself, with an authority of its own.
    forged = member_endorsements.endorse(
        Ed25519PrivateKey.generate(), team_id=team_id, member_id=made_up, public_key=own_key
    )
    registered = await router.put(
        f"/internal/v1/teams/{team_id}/members/{made_up}/key",
        json={"public_key": own_key, "endorsement": forged},
        headers=as_gateway,
    )
    assert registered.status_code == 200, registered.text
    grant = await router.post(
        f"/internal/v1/teams/{team_id}/jobs/{job_id}/grant",
        json={"member_id": made_up, "action": "open"},
        headers=as_gateway,
    )
    assert grant.status_code == 200, grant.text
    delivered = await vault.post(
        "/internal/v1/records/deliver",
        json={"grant": grant.json()["grant"]},
        headers={"Authorization": f"Bearer {gateway.credential_for('vault')}"},
    )
    problem = assert_problem(delivered, 403)
    assert "not endorsed by the member key authority" in problem["detail"]
    assert "envelope" not in delivered.json()
    # Refused and audited as such.
    audit = await platform.client.get(
        "/v1/admin/audit", params={"action": "deliver"}, headers=platform.operator
    )
    assert [(r["outcome"], r["reason"]) for r in audit.json()["data"]] == [
        ("refused", "key_not_endorsed")
    ]


async def test_an_endorsed_member_reads_what_an_unendorsed_key_could_not(
    endorsed_platform, authority
):
    platform = endorsed_platform
    tenant, job_id, member = await _sealed_job(platform)
    team_id = member["team_id"]
    member_key = bearer(member["api_key"])
    private, public = _member_keypair()
    registered = await platform.client.put(
        "/v1/team/keys", json={"public_key": public}, headers=member_key
    )
    assert registered.status_code == 200, registered.text
    claimed = await platform.client.post(f"/v1/team/jobs/{job_id}/claim", headers=member_key)
    assert claimed.status_code == 200, claimed.text
    path = f"/v1/team/jobs/{job_id}/confidential"

    # Registered without an endorsement: nothing is delivered, and the member is told why.
    unendorsed = await platform.client.get(path, headers=member_key)
    assert "taskroute members endorse" in assert_problem(unendorsed, 403)["detail"]
    # An endorsement of this key for another member, or for this member in another team.
    for other in (
        {"team_id": team_id, "member_id": str(uuid.uuid4())},
        {"team_id": str(uuid.uuid4()), "member_id": member["id"]},
    ):
        misplaced = member_endorsements.endorse(authority, public_key=public, **other)
        again = await platform.client.put(
            "/v1/team/keys", json={"public_key": public, "endorsement": misplaced},
            headers=member_key,
        )  # fmt: skip
        assert again.status_code == 200, again.text
        assert_problem(await platform.client.get(path, headers=member_key), 403)

    # The operator checked the key with the member and endorsed it; the member sends it along.
    endorsement = member_endorsements.endorse(
        authority, team_id=team_id, member_id=member["id"], public_key=public
    )
    renewed = await platform.client.put(
        "/v1/team/keys", json={"public_key": public, "endorsement": endorsement},
        headers=member_key,
    )  # fmt: skip
    assert renewed.status_code == 200, renewed.text
    delivered = await platform.client.get(path, headers=member_key)
    assert delivered.status_code == 200, delivered.text
    assert SEALED_CANARY not in delivered.text
    envelope = se.parse(delivered.json()["confidential_sealed"])
    assert se.open_json(envelope, private, tenant_id=tenant["id"]) == {"passport": SEALED_CANARY}


async def test_an_endorsement_must_look_like_one(endorsed_platform):
    _, member = await _setup_team_and_member(endorsed_platform)
    _, public = _member_keypair()
    for bad in ("", "not a token", "a.b", "x" * 5000, 7):
        refused = await endorsed_platform.client.put(
            "/v1/team/keys",
            json={"public_key": public, "endorsement": bad},
            headers=bearer(member["api_key"]),
        )
        assert_problem(refused, 422)
