"""Client-side sealing at the vault: tenant key pairs, storing and opening client envelopes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from shared import sealed_envelope as se
from tests.vault.factories import make_grant, new_uuid, receipt_claims, result_seal_grant

SEALED = "/internal/v1/records/sealed"
OPEN = "/internal/v1/records/open"
CANARY = {"canary": "CANARY-sealed-5d1e0a77"}


def keys_path(tenant_id: str) -> str:
    return f"/internal/v1/tenants/{tenant_id}/sealing-keys"


async def _sql(url: str, statement: str, **params: Any) -> list[Any]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            result = await connection.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


async def tenant_public_key(
    vault: httpx.AsyncClient, auth: dict[str, str], tenant_id: str
) -> tuple[str, X25519PublicKey]:
    response = await vault.get(keys_path(tenant_id), headers=auth)
    assert response.status_code == 200, response.text
    newest = response.json()["keys"][0]
    return newest["key_id"], se.load_public_key(newest["public_key"])


async def seal_and_store(
    vault: httpx.AsyncClient,
    auth: dict[str, str],
    *,
    tenant_id: str | None = None,
    job_ref: str = "ref-1",
    data: Any = CANARY,
) -> tuple[str, str, str, dict[str, Any]]:
    tenant_id = tenant_id or new_uuid()
    job_id = new_uuid()
    key_id, public = await tenant_public_key(vault, auth, tenant_id)
    envelope = se.seal_json(
        data, public_key=public, tenant_id=tenant_id, job_ref=job_ref, key_id=key_id
    ).to_json()
    response = await vault.post(
        SEALED, json={"tenant_id": tenant_id, "job_id": job_id, "envelope": envelope}, headers=auth
    )
    assert response.status_code == 201, response.text
    return tenant_id, job_id, response.json()["ref"], envelope


async def test_public_keys_are_stable_and_per_tenant(vault, gateway_auth):
    tenant = new_uuid()
    first = (await vault.get(keys_path(tenant), headers=gateway_auth)).json()["keys"]
    again = (await vault.get(keys_path(tenant), headers=gateway_auth)).json()["keys"]
    other = (await vault.get(keys_path(new_uuid()), headers=gateway_auth)).json()["keys"]
    assert first == again
    assert len(first) == 1
    assert first[0]["algorithm"] == se.ALGORITHM
    assert first[0]["key_id"] == se.key_id_for(se.load_public_key(first[0]["public_key"]))
    assert other[0]["key_id"] != first[0]["key_id"]


async def test_sealing_keys_need_the_gateway_credential(vault):
    response = await vault.get(keys_path(new_uuid()))
    assert response.status_code == 401


async def test_client_sealed_envelope_is_stored_as_sent_and_opens_with_a_grant(
    vault, gateway_auth, router_identity, databases
):
    tenant_id, job_id, ref, envelope = await seal_and_store(vault, gateway_auth)
    stored = await _sql(databases["vault"], "SELECT envelope FROM sealed_records")
    assert [se.parse(row[0]).to_json() for row in stored] == [envelope]
    assert "CANARY" not in stored[0][0]
    grant = make_grant(router_identity, tenant_id=tenant_id, job_id=job_id, ref=ref)
    response = await vault.post(OPEN, json={"grant": grant}, headers=gateway_auth)
    assert response.status_code == 200, response.text
    assert response.json() == {"data": CANARY}


async def test_e2e_member_grant_gets_no_plaintext_of_a_sealed_record(
    vault, gateway_auth, router_identity
):
    tenant_id, job_id, ref, _ = await seal_and_store(vault, gateway_auth)
    grant = make_grant(
        router_identity, tenant_id=tenant_id, job_id=job_id, ref=ref, require_e2e=True
    )
    response = await vault.post(OPEN, json={"grant": grant}, headers=gateway_auth)
    assert response.status_code == 403
    assert "CANARY" not in response.text


async def test_envelope_for_another_tenant_is_refused(vault, gateway_auth, databases):
    tenant_a, tenant_b = new_uuid(), new_uuid()
    key_id, public = await tenant_public_key(vault, gateway_auth, tenant_a)
    await tenant_public_key(vault, gateway_auth, tenant_b)
    envelope = se.seal_json(
        CANARY, public_key=public, tenant_id=tenant_a, job_ref="r", key_id=key_id
    ).to_json()
    response = await vault.post(
        SEALED,
        json={"tenant_id": tenant_b, "job_id": new_uuid(), "envelope": envelope},
        headers=gateway_auth,
    )
    assert response.status_code == 422
    assert response.json()["field"] == "tenant_id"
    assert await _sql(databases["vault"], "SELECT id FROM sealed_records") == []


async def test_envelope_sealed_to_an_unknown_key_is_refused(vault, gateway_auth):
    tenant_id = new_uuid()
    await tenant_public_key(vault, gateway_auth, tenant_id)
    stranger = X25519PrivateKey.generate().public_key()
    envelope = se.seal_json(CANARY, public_key=stranger, tenant_id=tenant_id, job_ref="r")
    response = await vault.post(
        SEALED,
        json={"tenant_id": tenant_id, "job_id": new_uuid(), "envelope": envelope.to_json()},
        headers=gateway_auth,
    )
    assert response.status_code == 422
    assert response.json()["type"].endswith("unknown-sealing-key")


async def test_reusing_an_envelope_for_another_job_is_409(vault, gateway_auth):
    tenant_id, _, _, envelope = await seal_and_store(vault, gateway_auth)
    response = await vault.post(
        SEALED,
        json={"tenant_id": tenant_id, "job_id": new_uuid(), "envelope": envelope},
        headers=gateway_auth,
    )
    assert response.status_code == 409


@pytest.mark.parametrize("field", ["v", "key_id", "wrapped_key", "nonce", "ciphertext", "tag"])
async def test_flipped_envelope_field_is_422_never_plaintext(vault, gateway_auth, databases, field):
    tenant_id = new_uuid()
    key_id, public = await tenant_public_key(vault, gateway_auth, tenant_id)
    envelope = se.seal_json(
        CANARY, public_key=public, tenant_id=tenant_id, job_ref="r", key_id=key_id
    ).to_json()
    value = envelope[field]
    if field == "v":
        envelope[field] = 2
    else:
        envelope[field] = ("B" if value[0] == "A" else "A") + value[1:]
    response = await vault.post(
        SEALED,
        json={"tenant_id": tenant_id, "job_id": new_uuid(), "envelope": envelope},
        headers=gateway_auth,
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "CANARY" not in response.text
    assert await _sql(databases["vault"], "SELECT id FROM sealed_records") == []
    audit = await vault.get("/internal/v1/audit", headers=gateway_auth)
    assert audit.json()["data"][0]["outcome"] == "refused"


async def test_truncated_and_extended_envelopes_are_422(vault, gateway_auth):
    tenant_id = new_uuid()
    key_id, public = await tenant_public_key(vault, gateway_auth, tenant_id)
    envelope = se.seal_json(
        CANARY, public_key=public, tenant_id=tenant_id, job_ref="r", key_id=key_id
    ).to_json()
    for bad in (
        {**envelope, "ciphertext": envelope["ciphertext"][:-4]},
        {**envelope, "tag": envelope["tag"] + "AA"},
        {key: value for key, value in envelope.items() if key != "nonce"},
        {**envelope, "extra": "1"},
    ):
        response = await vault.post(
            SEALED,
            json={"tenant_id": tenant_id, "job_id": new_uuid(), "envelope": bad},
            headers=gateway_auth,
        )
        assert response.status_code == 422, response.text


# -- sealed delivery to a member's registered key ---------------------------------------------

DELIVER = "/internal/v1/records/deliver"


def _member_key() -> tuple[X25519PrivateKey, str]:
    private = X25519PrivateKey.generate()
    return private, se.b64url_encode(se.public_raw(private.public_key()))


async def test_client_sealed_record_is_delivered_rewrapped_payload_untouched(
    vault, gateway_auth, router_identity
):
    tenant_id, job_id, ref, original = await seal_and_store(vault, gateway_auth)
    member, member_public = _member_key()
    grant = make_grant(
        router_identity,
        tenant_id=tenant_id,
        job_id=job_id,
        ref=ref,
        require_e2e=True,
        recipient_public_key=member_public,
    )
    response = await vault.post(DELIVER, json={"grant": grant}, headers=gateway_auth)
    assert response.status_code == 200, response.text
    delivered = response.json()["envelope"]
    assert "CANARY" not in response.text
    for field in ("nonce", "ciphertext", "tag", "key_id", "job_ref", "tenant_id"):
        assert delivered[field] == original[field]
    assert delivered["wrapped_key"] != original["wrapped_key"]
    envelope = se.parse(delivered)
    assert se.open_json(envelope, member, tenant_id=tenant_id) == CANARY
    audit = await vault.get("/internal/v1/audit", headers=gateway_auth)
    assert audit.json()["data"][0]["action"] == "deliver"
    assert audit.json()["data"][0]["outcome"] == "ok"


async def test_vault_sealed_record_is_delivered_sealed_to_the_member(
    vault, gateway_auth, router_identity
):
    tenant_id, job_id = new_uuid(), new_uuid()
    created = await vault.post(
        "/internal/v1/records",
        json={"tenant_id": tenant_id, "job_id": job_id, "purpose": "job", "data": CANARY},
        headers=gateway_auth,
    )
    ref = created.json()["ref"]
    member, member_public = _member_key()
    grant = make_grant(
        router_identity,
        tenant_id=tenant_id,
        job_id=job_id,
        ref=ref,
        recipient_public_key=member_public,
    )
    response = await vault.post(DELIVER, json={"grant": grant}, headers=gateway_auth)
    assert response.status_code == 200, response.text
    assert "CANARY" not in response.text
    envelope = se.parse(response.json()["envelope"])
    assert se.open_json(envelope, member, tenant_id=tenant_id, job_ref=job_id) == CANARY
    # Another key (say, one the gateway made up) opens nothing.
    with pytest.raises(se.EnvelopeError):
        se.open_envelope(envelope, X25519PrivateKey.generate())


@pytest.mark.parametrize(
    "change",
    [
        {"recipient_public_key": None},  # no registered key in the grant
        {"recipient_public_key": "not-a-key"},
        {"subject": "tenant:3f1c2a9e-7b1d-4c55-9a0e-2b6f1d8c4e71"},
        {"action": "seal", "ref": None, "purpose": "result"},
        {"ttl_seconds": -120},  # expired
        {"job_id": "00000000-0000-4000-8000-000000000000"},  # another job
    ],
)
async def test_delivery_refuses_grants_that_do_not_name_a_member_key(
    vault, gateway_auth, router_identity, change
):
    tenant_id, job_id, ref, _ = await seal_and_store(vault, gateway_auth)
    _, member_public = _member_key()
    claims: dict[str, Any] = {
        "tenant_id": tenant_id,
        "job_id": job_id,
        "ref": ref,
        "recipient_public_key": member_public,
        **change,
    }
    grant = make_grant(router_identity, **claims)
    response = await vault.post(DELIVER, json={"grant": grant}, headers=gateway_auth)
    assert response.status_code == 403, response.text
    assert "CANARY" not in response.text


async def test_delivery_grant_signed_by_the_gateway_is_refused(
    vault, gateway_auth, gateway_identity
):
    tenant_id, job_id, ref, _ = await seal_and_store(vault, gateway_auth)
    _, member_public = _member_key()
    forged = make_grant(
        gateway_identity,
        tenant_id=tenant_id,
        job_id=job_id,
        ref=ref,
        recipient_public_key=member_public,
    )
    response = await vault.post(DELIVER, json={"grant": forged}, headers=gateway_auth)
    assert response.status_code == 403


# -- results sealed by the member for the tenant, under a seal grant ---------------------------

BY_GRANT = "/internal/v1/records/sealed/by-grant"


async def test_sealed_result_is_stored_under_a_seal_grant_and_opens_for_the_tenant(
    vault, gateway_auth, router_identity
):
    tenant_id, job_id = new_uuid(), new_uuid()
    key_id, public = await tenant_public_key(vault, gateway_auth, tenant_id)
    envelope = se.seal_json(
        CANARY, public_key=public, tenant_id=tenant_id, job_ref=job_id, key_id=key_id
    ).to_json()
    seal = make_grant(
        router_identity, action="seal", tenant_id=tenant_id, job_id=job_id, purpose="result"
    )
    stored = await vault.post(
        BY_GRANT, json={"grant": seal, "envelope": envelope}, headers=gateway_auth
    )
    assert stored.status_code == 201, stored.text
    grant = make_grant(
        router_identity,
        tenant_id=tenant_id,
        job_id=job_id,
        purpose="result",
        ref=stored.json()["ref"],
        subject=f"tenant:{tenant_id}",
    )
    opened = await vault.post(OPEN, json={"grant": grant}, headers=gateway_auth)
    assert opened.json() == {"data": CANARY}


async def test_sealed_results_are_stored_once_per_lease(
    vault, gateway_auth, router_identity, keys_dir
):
    """The member-sealed twin of the vault-sealed rule: a new lease may store a new envelope
    for the job, one lease stores one, and each answer carries the vault's receipt."""
    tenant_id, job_id = new_uuid(), new_uuid()
    key_id, public = await tenant_public_key(vault, gateway_auth, tenant_id)

    def envelope(data: Any) -> dict[str, Any]:
        return se.seal_json(
            data, public_key=public, tenant_id=tenant_id, job_ref=job_id, key_id=key_id
        ).to_json()

    async def store(lease: str, sealed: dict[str, Any]) -> httpx.Response:
        grant = result_seal_grant(router_identity, tenant_id=tenant_id, job_id=job_id, lease=lease)
        body = {"grant": grant, "envelope": sealed}
        response: httpx.Response = await vault.post(BY_GRANT, json=body, headers=gateway_auth)
        return response

    first_lease, second_lease = "2026-11-29T09:00:00.000000Z#2", "2026-11-29T09:05:00.000000Z#2"
    first_envelope = envelope({"v": 1})
    first = await store(first_lease, first_envelope)
    assert first.status_code == 201, first.text
    assert receipt_claims(keys_dir, first.json()) == {
        "tenant_id": tenant_id,
        "job_id": job_id,
        "lease": first_lease,
        "ref": first.json()["ref"],
    }
    replayed = await store(first_lease, first_envelope)
    assert (replayed.status_code, replayed.json()["ref"]) == (201, first.json()["ref"])
    assert (await store(first_lease, envelope({"v": 2}))).status_code == 409
    second = await store(second_lease, envelope({"v": 2}))
    assert second.status_code == 201, second.text
    assert second.json()["ref"] != first.json()["ref"]
    assert receipt_claims(keys_dir, second.json())["lease"] == second_lease


async def test_sealed_result_needs_a_router_seal_grant(vault, gateway_auth, gateway_identity):
    tenant_id, job_id = new_uuid(), new_uuid()
    key_id, public = await tenant_public_key(vault, gateway_auth, tenant_id)
    envelope = se.seal_json(
        CANARY, public_key=public, tenant_id=tenant_id, job_ref=job_id, key_id=key_id
    ).to_json()
    forged = make_grant(
        gateway_identity, action="seal", tenant_id=tenant_id, job_id=job_id, purpose="result"
    )
    response = await vault.post(
        BY_GRANT, json={"grant": forged, "envelope": envelope}, headers=gateway_auth
    )
    assert response.status_code == 403


async def test_envelope_whose_payload_is_not_json_is_refused(vault, gateway_auth, databases):
    tenant_id = new_uuid()
    key_id, public = await tenant_public_key(vault, gateway_auth, tenant_id)
    envelope = se.seal(
        b"\xff not json", public_key=public, tenant_id=tenant_id, job_ref="r", key_id=key_id
    ).to_json()
    response = await vault.post(
        SEALED,
        json={"tenant_id": tenant_id, "job_id": new_uuid(), "envelope": envelope},
        headers=gateway_auth,
    )
    assert response.status_code == 422, response.text
    assert await _sql(databases["vault"], "SELECT id FROM sealed_records") == []
