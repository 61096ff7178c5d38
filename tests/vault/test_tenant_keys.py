"""Rotation, rewrap and crypto-shredding of a tenant's keys, on a real database."""

from __future__ import annotations

import asyncio
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from shared import sealed_envelope as se
from tests.vault.factories import make_grant, new_uuid, seal_job_data
from tests.vault.test_sealing import CANARY, _sql, keys_path, seal_and_store

OPEN = "/internal/v1/records/open"
DELIVER = "/internal/v1/records/deliver"


def _keys(tenant_id: str, action: str = "") -> str:
    return f"/internal/v1/tenants/{tenant_id}/keys{action}"


async def _open(vault, auth, router_identity, tenant_id, job_id, ref) -> Any:
    grant = make_grant(router_identity, tenant_id=tenant_id, job_id=job_id, ref=ref)
    return await vault.post(OPEN, json={"grant": grant}, headers=auth)


async def test_rotation_new_seals_use_the_new_version_old_still_open(
    vault, gateway_auth, router_identity
):
    tenant_id, job_1, ref_1 = await seal_job_data(vault, gateway_auth, data={"n": 1})
    _, _, sealed_ref, _ = await seal_and_store(vault, gateway_auth, tenant_id=tenant_id)
    old_keys = (await vault.get(keys_path(tenant_id), headers=gateway_auth)).json()["keys"]

    rotated = await vault.post(_keys(tenant_id, "/rotate"), headers=gateway_auth)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["key_version"] == 2
    assert rotated.json()["sealing_version"] == 2

    _, job_2, ref_2 = await seal_job_data(vault, gateway_auth, data={"n": 2}, tenant_id=tenant_id)
    created = await vault.post(
        "/internal/v1/records",
        json={"tenant_id": tenant_id, "job_id": new_uuid(), "purpose": "job", "data": 3},
        headers=gateway_auth,
    )
    assert created.json()["key_version"] == 2
    keys = (await vault.get(keys_path(tenant_id), headers=gateway_auth)).json()["keys"]
    assert [k["key_id"] for k in keys][1:] == [old_keys[0]["key_id"]]
    assert keys[0]["key_id"] == rotated.json()["sealing_key_id"]

    first = await _open(vault, gateway_auth, router_identity, tenant_id, job_1, ref_1)
    assert first.json() == {"data": {"n": 1}}
    second = await _open(vault, gateway_auth, router_identity, tenant_id, job_2, ref_2)
    assert second.json() == {"data": {"n": 2}}
    # A client still sealing to the previous key is accepted (old versions stay usable).
    _, job_3, ref_3, _ = await seal_and_store(
        vault, gateway_auth, tenant_id=tenant_id, job_ref="ref-old-key"
    )
    assert (await _open(vault, gateway_auth, router_identity, tenant_id, job_3, ref_3)).json() == {
        "data": CANARY
    }
    del sealed_ref


async def test_rewrap_moves_every_data_key_in_batches_without_touching_payloads(
    vault, gateway_auth, router_identity, databases
):
    tenant_id = new_uuid()
    plain = [
        await seal_job_data(vault, gateway_auth, data={"i": i}, tenant_id=tenant_id)
        for i in range(3)
    ]
    sealed = [
        await seal_and_store(vault, gateway_auth, tenant_id=tenant_id, job_ref=f"ref-{i}")
        for i in range(2)
    ]
    url = databases["vault"]
    ciphertexts = await _sql(url, "SELECT id, ciphertext FROM records ORDER BY id")
    payloads = {
        row[0]: se.parse(row[1]).ciphertext
        for row in await _sql(url, "SELECT id, envelope FROM sealed_records")
    }
    assert (await vault.post(_keys(tenant_id, "/rotate"), headers=gateway_auth)).status_code == 200

    progress = []
    for _ in range(10):
        step = await vault.post(
            _keys(tenant_id, "/rewrap"), json={"batch_size": 2}, headers=gateway_auth
        )
        assert step.status_code == 200, step.text
        progress.append(step.json())
        if step.json()["done"]:
            break
    assert [p["rewrapped"] for p in progress] == [2, 2, 1]
    assert [p["remaining"] for p in progress] == [3, 1, 0]
    # Resumable and idempotent: once done, another call moves nothing.
    again = await vault.post(_keys(tenant_id, "/rewrap"), headers=gateway_auth)
    assert again.json() == {**progress[-1], "rewrapped": 0}

    assert await _sql(url, "SELECT DISTINCT key_version FROM records") == [(2,)]
    assert await _sql(url, "SELECT id, ciphertext FROM records ORDER BY id") == ciphertexts
    newest = (await vault.get(keys_path(tenant_id), headers=gateway_auth)).json()["keys"][0]
    for row in await _sql(url, "SELECT id, envelope, key_id FROM sealed_records"):
        assert row[2] == newest["key_id"]
        envelope = se.parse(row[1])
        assert envelope.recipient_key_id == newest["key_id"]
        assert envelope.ciphertext == payloads[row[0]]

    for _, job_id, ref in plain:
        assert (
            await _open(vault, gateway_auth, router_identity, tenant_id, job_id, ref)
        ).status_code == 200
    for _, job_id, ref, _ in sealed:
        opened = await _open(vault, gateway_auth, router_identity, tenant_id, job_id, ref)
        assert opened.json() == {"data": CANARY}
    audit = (await vault.get("/internal/v1/audit", headers=gateway_auth)).json()["data"]
    assert any(record["action"] == "rewrap" for record in audit)
    assert any(record["action"] == "rotate" for record in audit)


async def test_opens_during_a_rotation_and_rewrap_never_fail(vault, gateway_auth, router_identity):
    tenant_id = new_uuid()
    records = [
        await seal_job_data(vault, gateway_auth, data={"i": i}, tenant_id=tenant_id)
        for i in range(4)
    ]

    async def reader() -> list[int]:
        statuses = []
        for _ in range(3):
            for _, job_id, ref in records:
                response = await _open(vault, gateway_auth, router_identity, tenant_id, job_id, ref)
                statuses.append(response.status_code)
        return statuses

    async def operator() -> None:
        await vault.post(_keys(tenant_id, "/rotate"), headers=gateway_auth)
        for _ in range(4):
            await vault.post(
                _keys(tenant_id, "/rewrap"), json={"batch_size": 1}, headers=gateway_auth
            )

    statuses, _ = await asyncio.gather(reader(), operator())
    assert set(statuses) == {200}


async def test_shredded_tenant_data_never_opens_and_answers_410(
    vault, gateway_auth, router_identity, databases
):
    tenant_id, job_id, ref = await seal_job_data(vault, gateway_auth, data=CANARY)
    _, sealed_job, sealed_ref, _ = await seal_and_store(vault, gateway_auth, tenant_id=tenant_id)
    other_tenant, other_job, other_ref = await seal_job_data(vault, gateway_auth, data={"ok": 1})

    shredded = await vault.delete(_keys(tenant_id), headers=gateway_auth)
    assert shredded.status_code == 200, shredded.text
    assert shredded.json() == {"tenant_id": tenant_id, "shredded": True}

    for job, record in ((job_id, ref), (sealed_job, sealed_ref)):
        response = await _open(vault, gateway_auth, router_identity, tenant_id, job, record)
        assert response.status_code == 410, response.text
        assert "CANARY" not in response.text
        member = X25519PrivateKey.generate()
        grant = make_grant(
            router_identity,
            tenant_id=tenant_id,
            job_id=job,
            ref=record,
            recipient_public_key=se.b64url_encode(se.public_raw(member.public_key())),
        )
        delivered = await vault.post(DELIVER, json={"grant": grant}, headers=gateway_auth)
        assert delivered.status_code == 410, delivered.text
    # No more seals, no new key ring, no rotation either.
    again = await vault.post(
        "/internal/v1/records",
        json={"tenant_id": tenant_id, "job_id": new_uuid(), "purpose": "job", "data": 1},
        headers=gateway_auth,
    )
    assert again.status_code == 410
    assert (await vault.get(keys_path(tenant_id), headers=gateway_auth)).status_code == 410
    assert (await vault.post(_keys(tenant_id, "/rotate"), headers=gateway_auth)).status_code == 410
    # The key material is gone from the database itself (a dump from now on holds nothing).
    for (wrapped,) in await _sql(
        databases["vault"], "SELECT wrapped_key FROM tenant_keys WHERE tenant_id = :t", t=tenant_id
    ):
        assert bytes(wrapped) == b""
    for (wrapped,) in await _sql(
        databases["vault"],
        "SELECT wrapped_private_key FROM tenant_sealing_keys WHERE tenant_id = :t",
        t=tenant_id,
    ):
        assert bytes(wrapped) == b""
    # Another tenant is untouched.
    other = await _open(vault, gateway_auth, router_identity, other_tenant, other_job, other_ref)
    assert other.json() == {"data": {"ok": 1}}
    verified = await vault.get("/internal/v1/audit/verify", headers=gateway_auth)
    assert verified.json()["valid"] is True


async def test_shredding_a_tenant_without_keys_blocks_it_too(vault, gateway_auth):
    tenant_id = new_uuid()
    assert (await vault.delete(_keys(tenant_id), headers=gateway_auth)).status_code == 200
    assert (await vault.delete(_keys(tenant_id), headers=gateway_auth)).status_code == 200
    response = await vault.post(
        "/internal/v1/records",
        json={"tenant_id": tenant_id, "job_id": new_uuid(), "purpose": "job", "data": 1},
        headers=gateway_auth,
    )
    assert response.status_code == 410


async def test_rewrap_batch_size_is_bounded(vault, gateway_auth):
    for bad in (0, 1001, "x"):
        response = await vault.post(
            _keys(new_uuid(), "/rewrap"), json={"batch_size": bad}, headers=gateway_auth
        )
        assert response.status_code == 422


async def test_retiring_old_versions_waits_for_rewrap_then_refuses_old_keys(
    vault, gateway_auth, router_identity
):
    tenant_id, job_id, ref = await seal_job_data(vault, gateway_auth, data={"n": 1})
    _, sealed_job, sealed_ref, _ = await seal_and_store(vault, gateway_auth, tenant_id=tenant_id)
    old_key_id, old_public = await _newest_key(vault, gateway_auth, tenant_id)
    await vault.post(_keys(tenant_id, "/rotate"), headers=gateway_auth)

    early = await vault.post(_keys(tenant_id, "/retire"), headers=gateway_auth)
    assert early.status_code == 409, early.text
    assert "2 records" in early.json()["detail"]

    while not (await vault.post(_keys(tenant_id, "/rewrap"), headers=gateway_auth)).json()["done"]:
        pass
    retired = await vault.post(_keys(tenant_id, "/retire"), headers=gateway_auth)
    assert retired.status_code == 200, retired.text
    assert retired.json() == {
        "tenant_id": tenant_id,
        "min_key_version": 2,
        "min_sealing_version": 2,
        "retired": 2,
    }
    keys = (await vault.get(keys_path(tenant_id), headers=gateway_auth)).json()["keys"]
    assert old_key_id not in [k["key_id"] for k in keys]
    # A client still sealing to the retired key is refused.
    stale = se.seal_json(
        CANARY, public_key=old_public, tenant_id=tenant_id, job_ref="late", key_id=old_key_id
    ).to_json()
    response = await vault.post(
        "/internal/v1/records/sealed",
        json={"tenant_id": tenant_id, "job_id": new_uuid(), "envelope": stale},
        headers=gateway_auth,
    )
    assert response.status_code == 422
    assert response.json()["type"].endswith("unknown-sealing-key")
    # Everything stored was rewrapped first, so it all still opens.
    for job, record, expected in ((job_id, ref, {"n": 1}), (sealed_job, sealed_ref, CANARY)):
        opened = await _open(vault, gateway_auth, router_identity, tenant_id, job, record)
        assert opened.json() == {"data": expected}


async def test_a_record_left_under_a_retired_version_is_refused(
    vault, gateway_auth, router_identity, databases
):
    tenant_id, job_id, ref = await seal_job_data(vault, gateway_auth, data={"n": 1})
    await vault.post(_keys(tenant_id, "/rotate"), headers=gateway_auth)
    await vault.post(_keys(tenant_id, "/rewrap"), headers=gateway_auth)
    await vault.post(_keys(tenant_id, "/retire"), headers=gateway_auth)
    # Simulate a record put back under the retired version (a restored backup row, say).
    await _sql(
        databases["vault"],
        "UPDATE tenant_keys SET state = 'retired' WHERE tenant_id = :t",
        t=tenant_id,
    )
    response = await _open(vault, gateway_auth, router_identity, tenant_id, job_id, ref)
    assert response.status_code == 409, response.text
    assert response.json()["type"].endswith("key-retired")


async def test_a_record_sealed_across_a_retire_opens_again_after_one_more_rewrap(
    vault, gateway_auth, router_identity, databases
):
    """A record under a retired version (a restored backup row, say; a seal racing the
    retire no longer leaves one, tests/vault/test_key_races.py) is refused on open. The
    retired key is kept, so the next rewrap moves it like any other."""
    tenant_id, job_id, ref = await seal_job_data(vault, gateway_auth, data={"n": 1})
    await vault.post(_keys(tenant_id, "/rotate"), headers=gateway_auth)
    # Version 1 retired with this record still under it.
    await _sql(
        databases["vault"],
        "UPDATE tenant_keys SET state = 'retired' WHERE tenant_id = :t AND version = 1",
        t=tenant_id,
    )
    refused = await _open(vault, gateway_auth, router_identity, tenant_id, job_id, ref)
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"].endswith("key-retired")
    while not (await vault.post(_keys(tenant_id, "/rewrap"), headers=gateway_auth)).json()["done"]:
        pass
    opened = await _open(vault, gateway_auth, router_identity, tenant_id, job_id, ref)
    assert opened.status_code == 200, opened.text
    assert opened.json() == {"data": {"n": 1}}


async def _newest_key(vault, auth, tenant_id: str) -> tuple[str, X25519PublicKey]:
    newest = (await vault.get(keys_path(tenant_id), headers=auth)).json()["keys"][0]
    return newest["key_id"], se.load_public_key(newest["public_key"])
