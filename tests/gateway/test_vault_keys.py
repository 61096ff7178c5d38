"""Client-side sealing through the gateway: the public key route and `confidential_sealed`."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from shared import sealed_envelope as se
from shared.sealing_statements import (
    UnverifiedSealingKey,
    load_vault_public_key,
    verified_sealing_keys,
)
from tests.gateway.test_api import (
    BOOKKEEPING_JOB,
    _setup_team_and_member,
    assert_problem,
    bearer,
    create_tenant,
    log_output,
    raw_rows,
)

__all__ = ["log_output"]  # a fixture, used by name below

SEALED_CANARY = "CANARY-E2E-9b41f7-passport-X1234567"


async def _tenant_key(platform, client_key: dict[str, str]) -> dict[str, Any]:
    response = await platform.client.get("/v1/vault/public-key", headers=client_key)
    assert response.status_code == 200, response.text
    keys: list[dict[str, Any]] = response.json()["keys"]
    assert len(keys) == 1
    return keys[0]


def _seal(key: dict[str, Any], tenant_id: str, job_ref: str) -> dict[str, Any]:
    return se.seal_json(
        {"passport": SEALED_CANARY},
        public_key=se.load_public_key(key["public_key"]),
        tenant_id=tenant_id,
        job_ref=job_ref,
        key_id=key["key_id"],
    ).to_json()


async def test_public_key_is_for_clients_only(platform):
    tenant = await create_tenant(platform)
    key = await _tenant_key(platform, bearer(tenant["api_key"]))
    assert set(key) == {"key_id", "public_key", "algorithm", "created_at"}
    assert len(se.b64url_decode(key["public_key"], field="public_key")) == 32
    assert key["algorithm"] == se.ALGORITHM
    as_operator = await platform.client.get("/v1/vault/public-key", headers=platform.operator)
    assert_problem(as_operator, 403)
    anonymous = await platform.client.get("/v1/vault/public-key")
    assert_problem(anonymous, 401)


async def test_each_tenant_has_its_own_key(platform):
    first = await create_tenant(platform, name="First")
    second = await create_tenant(platform, name="Second")
    key_a = await _tenant_key(platform, bearer(first["api_key"]))
    key_b = await _tenant_key(platform, bearer(second["api_key"]))
    assert key_a["key_id"] != key_b["key_id"]


async def test_sealed_job_is_stored_sealed_and_opens_for_the_lease_holder(platform):
    gw = platform.client
    tenant = await create_tenant(platform)
    client_key = bearer(tenant["api_key"])
    _, member = await _setup_team_and_member(platform)
    member_key = bearer(member["api_key"])
    envelope = _seal(await _tenant_key(platform, client_key), tenant["id"], "acme-0001")

    submitted = await gw.post(
        "/v1/jobs", json={**BOOKKEEPING_JOB, "confidential_sealed": envelope}, headers=client_key
    )
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert job["has_confidential"] is True

    claimed = await gw.post(f"/v1/team/jobs/{job['id']}/claim", headers=member_key)
    assert claimed.status_code == 200, claimed.text
    opened = await gw.get(f"/v1/team/jobs/{job['id']}/confidential", headers=member_key)
    assert opened.status_code == 200, opened.text
    assert opened.json() == {"confidential": {"passport": SEALED_CANARY}}

    # The same envelope cannot be attached to a second job.
    again = await gw.post(
        "/v1/jobs", json={**BOOKKEEPING_JOB, "confidential_sealed": envelope}, headers=client_key
    )
    assert_problem(again, 409)

    for service in ("gateway", "router", "vault"):
        for row in await raw_rows(service, platform.databases[service]):
            assert SEALED_CANARY not in row, service


async def test_envelope_for_another_tenant_or_tampered_is_4xx(platform):
    gw = platform.client
    tenant = await create_tenant(platform, name="Mine")
    other = await create_tenant(platform, name="Theirs")
    client_key = bearer(tenant["api_key"])
    mine = await _tenant_key(platform, client_key)
    theirs = await _tenant_key(platform, bearer(other["api_key"]))

    moved = _seal(theirs, other["id"], "ref-1")
    refused = await gw.post(
        "/v1/jobs", json={**BOOKKEEPING_JOB, "confidential_sealed": moved}, headers=client_key
    )
    assert_problem(refused, 422)

    envelope = _seal(mine, tenant["id"], "ref-2")
    envelope["tag"] = ("B" if envelope["tag"][0] == "A" else "A") + envelope["tag"][1:]
    tampered = await gw.post(
        "/v1/jobs", json={**BOOKKEEPING_JOB, "confidential_sealed": envelope}, headers=client_key
    )
    body = assert_problem(tampered, 422)
    assert SEALED_CANARY not in tampered.text
    assert "envelope" in body["detail"]

    stranger = X25519PrivateKey.generate().public_key()
    unknown = se.seal_json(
        {"x": 1}, public_key=stranger, tenant_id=tenant["id"], job_ref="ref-3"
    ).to_json()
    refused_key = await gw.post(
        "/v1/jobs", json={**BOOKKEEPING_JOB, "confidential_sealed": unknown}, headers=client_key
    )
    assert_problem(refused_key, 422)
    listed = await gw.get("/v1/jobs", headers=client_key)
    assert listed.json()["data"] == []


# -- sealed delivery to a member's registered key --------------------------------------------


def _member_keypair() -> tuple[X25519PrivateKey, str]:
    private = X25519PrivateKey.generate()
    return private, se.b64url_encode(se.public_raw(private.public_key()))


async def _register(platform, member_key: dict[str, str], public_key: str) -> dict[str, Any]:
    response = await platform.client.put(
        "/v1/team/keys", json={"public_key": public_key}, headers=member_key
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _submit_and_claim(platform, client_key, member_key, job: dict[str, Any]) -> str:
    submitted = await platform.client.post(
        "/v1/jobs", json={**BOOKKEEPING_JOB, **job}, headers=client_key
    )
    assert submitted.status_code == 202, submitted.text
    job_id: str = submitted.json()["id"]
    claimed = await platform.client.post(f"/v1/team/jobs/{job_id}/claim", headers=member_key)
    assert claimed.status_code == 200, claimed.text
    return job_id


# A Curve25519 point of order 8, one of the encodings libsodium refuses as a public key.
LOW_ORDER_POINT = "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"


async def test_member_key_must_be_an_x25519_key(platform):
    _, member = await _setup_team_and_member(platform)
    # Low-order points (all zeros, one, a point of order 8) decode as keys, but nothing can
    # ever be wrapped to them: registered, they would stop every delivery to the member.
    low_order = (bytes(32), b"\x01" + bytes(31), bytes.fromhex(LOW_ORDER_POINT))
    for bad in (
        "",
        "AAAA",
        "x" * 43,
        se.b64url_encode(b"\x01" * 33),
        *(se.b64url_encode(point) for point in low_order),
    ):
        response = await platform.client.put(
            "/v1/team/keys", json={"public_key": bad}, headers=bearer(member["api_key"])
        )
        assert_problem(response, 422)
    # None of them was registered: the member can still register a key of their own.
    registered = await platform.client.put(
        "/v1/team/keys",
        json={"public_key": _member_keypair()[1]},
        headers=bearer(member["api_key"]),
    )
    assert registered.status_code == 200, registered.text
    tenant = await create_tenant(platform)
    as_client = await platform.client.put(
        "/v1/team/keys",
        json={"public_key": _member_keypair()[1]},
        headers=bearer(tenant["api_key"]),
    )
    assert_problem(as_client, 403)


async def test_registered_member_gets_client_sealed_data_rewrapped_to_their_key(
    platform, log_output
):
    tenant = await create_tenant(platform, policy={"require_e2e": True})
    client_key = bearer(tenant["api_key"])
    _, member = await _setup_team_and_member(platform)
    member_key = bearer(member["api_key"])
    private, public = _member_keypair()
    registered = await _register(platform, member_key, public)
    assert registered["key_id"] == se.key_id_for(private.public_key())
    tenant_key = await _tenant_key(platform, client_key)
    original = _seal(tenant_key, tenant["id"], "acme-e2e-1")
    job_id = await _submit_and_claim(
        platform, client_key, member_key, {"confidential_sealed": original}
    )

    response = await platform.client.get(f"/v1/team/jobs/{job_id}/confidential", headers=member_key)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"confidential_sealed"}
    assert SEALED_CANARY not in response.text
    delivered = response.json()["confidential_sealed"]
    assert (delivered["ciphertext"], delivered["tag"]) == (original["ciphertext"], original["tag"])
    opened = se.open_json(se.parse(delivered), private, tenant_id=tenant["id"])
    assert opened == {"passport": SEALED_CANARY}
    logs = log_output.getvalue()
    assert '"path": "/internal/v1/records/deliver"' in logs  # the capture is not vacuous
    assert SEALED_CANARY not in logs
    for service in ("gateway", "router", "vault"):
        for row in await raw_rows(service, platform.databases[service]):
            assert SEALED_CANARY not in row, service


async def test_require_e2e_refuses_plaintext_and_delivers_vault_sealed_data_sealed(platform):
    tenant = await create_tenant(platform, policy={"require_e2e": True})
    client_key = bearer(tenant["api_key"])
    _, member = await _setup_team_and_member(platform)
    member_key = bearer(member["api_key"])
    job_id = await _submit_and_claim(
        platform, client_key, member_key, {"confidential": {"passport": SEALED_CANARY}}
    )
    path = f"/v1/team/jobs/{job_id}/confidential"

    refused = await platform.client.get(path, headers=member_key)
    assert_problem(refused, 409)
    assert SEALED_CANARY not in refused.text

    private, public = _member_keypair()
    await _register(platform, member_key, public)
    response = await platform.client.get(path, headers=member_key)
    assert response.status_code == 200, response.text
    assert SEALED_CANARY not in response.text
    envelope = se.parse(response.json()["confidential_sealed"])
    assert se.open_json(envelope, private, job_ref=job_id) == {"passport": SEALED_CANARY}
    # A key the gateway might substitute opens nothing: the vault sealed to the router's key.
    impostor, _ = _member_keypair()
    try:
        se.open_envelope(envelope, impostor)
    except se.EnvelopeError:
        pass
    else:
        raise AssertionError("an envelope opened under another key")


async def test_other_member_of_the_team_gets_nothing(platform):
    tenant = await create_tenant(platform)
    client_key = bearer(tenant["api_key"])
    team, member = await _setup_team_and_member(platform)
    member_key = bearer(member["api_key"])
    other = await platform.client.post(
        f"/v1/admin/teams/{team['id']}/members", json={"name": "Ravi"}, headers=platform.operator
    )
    other_key = bearer(other.json()["api_key"])
    await _register(platform, other_key, _member_keypair()[1])
    job_id = await _submit_and_claim(
        platform, client_key, member_key, {"confidential": {"passport": SEALED_CANARY}}
    )
    response = await platform.client.get(f"/v1/team/jobs/{job_id}/confidential", headers=other_key)
    assert response.status_code in (403, 409), response.text
    assert SEALED_CANARY not in response.text


# -- operators: rotation, rewrap, crypto-shredding --------------------------------------------


async def test_operator_rotates_and_rewraps_and_data_still_opens(platform):
    gw = platform.client
    tenant = await create_tenant(platform)
    client_key = bearer(tenant["api_key"])
    _, member = await _setup_team_and_member(platform)
    member_key = bearer(member["api_key"])
    before = await _tenant_key(platform, client_key)
    job_id = await _submit_and_claim(
        platform, client_key, member_key, {"confidential": {"passport": SEALED_CANARY}}
    )
    base = f"/v1/admin/tenants/{tenant['id']}/vault-key"

    assert_problem(await gw.post(f"{base}/rotate", headers=client_key), 403)
    rotated = await gw.post(f"{base}/rotate", headers=platform.operator)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["key_version"] == 2
    keys = (await gw.get("/v1/vault/public-key", headers=client_key)).json()["keys"]
    assert [k["key_id"] for k in keys] == [rotated.json()["sealing_key_id"], before["key_id"]]

    rewrap = await gw.post(f"{base}/rewrap", json={"batch_size": 10}, headers=platform.operator)
    assert rewrap.status_code == 200, rewrap.text
    assert rewrap.json() == {
        "tenant_id": tenant["id"],
        "rewrapped": 1,
        "remaining": 0,
        "done": True,
        "key_version": 2,
    }
    opened = await gw.get(f"/v1/team/jobs/{job_id}/confidential", headers=member_key)
    assert opened.json() == {"confidential": {"passport": SEALED_CANARY}}

    retired = await gw.post(f"{base}/retire", headers=platform.operator)
    assert retired.status_code == 200, retired.text
    assert retired.json()["min_key_version"] == 2
    keys = (await gw.get("/v1/vault/public-key", headers=client_key)).json()["keys"]
    assert [k["key_id"] for k in keys] == [rotated.json()["sealing_key_id"]]
    opened = await gw.get(f"/v1/team/jobs/{job_id}/confidential", headers=member_key)
    assert opened.json() == {"confidential": {"passport": SEALED_CANARY}}

    bad = await gw.post(f"{base}/rewrap", json={"batch_size": 0}, headers=platform.operator)
    assert_problem(bad, 422)
    unknown = await gw.post(
        "/v1/admin/tenants/00000000-0000-4000-8000-000000000000/vault-key/rotate",
        headers=platform.operator,
    )
    assert_problem(unknown, 404)


async def test_shredded_tenant_answers_410_through_member_and_result_routes(platform):
    gw = platform.client
    tenant = await create_tenant(platform)
    client_key = bearer(tenant["api_key"])
    _, member = await _setup_team_and_member(platform)
    member_key = bearer(member["api_key"])
    done_job = await _submit_and_claim(
        platform, client_key, member_key, {"confidential": {"passport": SEALED_CANARY}}
    )
    completed = await gw.post(
        f"/v1/team/jobs/{done_job}/complete",
        json={"result": {"ok": True}, "confidential_result": {"note": SEALED_CANARY}},
        headers=member_key,
    )
    assert completed.status_code == 200, completed.text
    live_job = await _submit_and_claim(
        platform, client_key, member_key, {"confidential": {"passport": SEALED_CANARY}}
    )

    shredded = await gw.delete(
        f"/v1/admin/tenants/{tenant['id']}/vault-key", headers=platform.operator
    )
    assert shredded.status_code == 200, shredded.text
    assert shredded.json() == {"tenant_id": tenant["id"], "shredded": True}

    for response in (
        await gw.get(f"/v1/team/jobs/{live_job}/confidential", headers=member_key),
        await gw.get(f"/v1/jobs/{done_job}/result", headers=client_key),
        await gw.get("/v1/vault/public-key", headers=client_key),
        await gw.post(
            "/v1/jobs",
            json={**BOOKKEEPING_JOB, "confidential": {"passport": SEALED_CANARY}},
            headers=client_key,
        ),
    ):
        assert_problem(response, 410)
        assert SEALED_CANARY not in response.text
    # A member with a registered key gets 410 for sealed delivery too.
    await _register(platform, member_key, _member_keypair()[1])
    sealed = await gw.get(f"/v1/team/jobs/{live_job}/confidential", headers=member_key)
    assert_problem(sealed, 410)
    audit = await gw.get("/v1/admin/audit/verify", headers=platform.operator)
    assert audit.json()["valid"] is True


# -- results sealed by the member for the tenant ------------------------------------------------

RESULT_SEALED_CANARY = "CANARY-RESULT-SEALED-0c7d2e"


async def test_member_seals_the_result_for_the_tenant_and_the_client_reads_it(platform, keys_dir):
    gw = platform.client
    tenant = await create_tenant(platform)
    client_key = bearer(tenant["api_key"])
    _, member = await _setup_team_and_member(platform)
    member_key = bearer(member["api_key"])
    job_id = await _submit_and_claim(platform, client_key, member_key, {})
    other_job = await _submit_and_claim(platform, client_key, member_key, {})

    key = await gw.get(f"/v1/team/jobs/{job_id}/tenant-key", headers=member_key)
    assert key.status_code == 200, key.text
    target = key.json()
    assert target["job_ref"] == job_id
    assert target["tenant_id"] == tenant["id"]
    # The vault vouches for the tenant of this job (from the router's seal grant), not for
    # whichever tenant the gateway names: the member checks it against the job's id.
    vault_key = load_vault_public_key((keys_dir / "vault.pub").read_bytes())
    vouched = verified_sealing_keys(
        target["statement"], vault_key, tenant_id=tenant["id"], job_id=job_id
    )
    assert vouched == {target["key_id"]: target["public_key"]}
    with pytest.raises(UnverifiedSealingKey):
        verified_sealing_keys(
            target["statement"], vault_key, tenant_id=tenant["id"], job_id=other_job
        )

    def seal_for(job_ref: str) -> dict[str, Any]:
        return se.seal_json(
            {"finding": RESULT_SEALED_CANARY},
            public_key=se.load_public_key(target["public_key"]),
            tenant_id=target["tenant_id"],
            job_ref=job_ref,
            key_id=target["key_id"],
        ).to_json()

    # An envelope bound to another job is refused and completes nothing.
    moved = await gw.post(
        f"/v1/team/jobs/{other_job}/complete",
        json={"result": {"ok": True}, "confidential_result_sealed": seal_for(job_id)},
        headers=member_key,
    )
    assert_problem(moved, 422)
    both = await gw.post(
        f"/v1/team/jobs/{job_id}/complete",
        json={
            "result": {"ok": True},
            "confidential_result": {"a": 1},
            "confidential_result_sealed": seal_for(job_id),
        },
        headers=member_key,
    )
    assert_problem(both, 422)

    completed = await gw.post(
        f"/v1/team/jobs/{job_id}/complete",
        json={"result": {"ok": True}, "confidential_result_sealed": seal_for(job_id)},
        headers=member_key,
    )
    assert completed.status_code == 200, completed.text
    assert RESULT_SEALED_CANARY not in completed.text
    result = await gw.get(f"/v1/jobs/{job_id}/result", headers=client_key)
    assert result.status_code == 200, result.text
    assert result.json() == {
        "result": {"ok": True},
        "confidential_result": {"finding": RESULT_SEALED_CANARY},
    }
    for service in ("gateway", "router", "vault"):
        for row in await raw_rows(service, platform.databases[service]):
            assert RESULT_SEALED_CANARY not in row, service


async def test_tenant_key_is_for_the_lease_holder_only(platform):
    tenant = await create_tenant(platform)
    client_key = bearer(tenant["api_key"])
    team, member = await _setup_team_and_member(platform)
    job_id = await _submit_and_claim(platform, client_key, bearer(member["api_key"]), {})
    other = await platform.client.post(
        f"/v1/admin/teams/{team['id']}/members", json={"name": "Ravi"}, headers=platform.operator
    )
    response = await platform.client.get(
        f"/v1/team/jobs/{job_id}/tenant-key", headers=bearer(other.json()["api_key"])
    )
    assert response.status_code in (403, 409), response.text
    as_client = await platform.client.get(f"/v1/team/jobs/{job_id}/tenant-key", headers=client_key)
    assert_problem(as_client, 403)


async def test_a_registered_member_key_cannot_be_replaced_through_the_gateway(platform):
    _, member = await _setup_team_and_member(platform)
    member_key = bearer(member["api_key"])
    first = _member_keypair()[1]
    await _register(platform, member_key, first)
    await _register(platform, member_key, first)  # the same key again changes nothing
    swapped = await platform.client.put(
        "/v1/team/keys", json={"public_key": _member_keypair()[1]}, headers=member_key
    )
    assert_problem(swapped, 409)
