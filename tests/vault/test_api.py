"""The vault's internal API on a real database, with real keys and real crypto."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from services.vault.app import create_app
from services.vault.db.models import Base
from services.vault.service import REPLAY_WINDOW
from services.vault.settings import VaultSettings
from shared.logging import JsonFormatter
from shared.service_auth import ServiceIdentity
from tests.conftest import running
from tests.vault.factories import (
    make_grant,
    new_uuid,
    post_job_data,
    receipt_claims,
    result_seal_grant,
    seal_job_data,
    tenant_result_grant,
)

PROBLEM = "application/problem+json"
RECORDS = "/internal/v1/records"
OPEN = "/internal/v1/records/open"
BY_GRANT = "/internal/v1/records/sealed-by-grant"
AUDIT = "/internal/v1/audit"
VERIFY = "/internal/v1/audit/verify"


async def _sql(url: str, statement: str, **params: Any) -> list[Any]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            result = await connection.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


# --- service credentials --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", RECORDS), ("POST", BY_GRANT), ("POST", OPEN), ("GET", AUDIT), ("GET", VERIFY)],
)
async def test_no_credentials_is_401(vault, method, path):
    response = await vault.request(method, path, json={})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["request_id"]


async def test_router_signed_service_credential_is_401(vault, router_identity):
    # The router is a known peer (it signs grants), but only the gateway may call these routes.
    token = router_identity.credential_for("vault")
    response = await vault.post(
        RECORDS,
        json={"tenant_id": new_uuid(), "job_id": new_uuid(), "purpose": "job", "data": {}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer tr_live_3b1f0c9e8d7a6b5c4d3e2f1a0b9c8d7e",  # an API key of a client
        "Bearer ",
        "Basic Z2F0ZXdheTpzZWNyZXQ=",
        "Bearer a.b.c",
    ],
)
async def test_api_keys_and_garbage_are_401(vault, authorization):
    response = await vault.get(AUDIT, headers={"Authorization": authorization})
    assert response.status_code == 401


async def test_gateway_credential_for_another_audience_is_401(vault, gateway_identity):
    token = gateway_identity.credential_for("router")
    response = await vault.get(AUDIT, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


async def test_grant_used_as_service_credential_is_401(vault, router_identity):
    grant = make_grant(router_identity, tenant_id=new_uuid(), job_id=new_uuid(), ref=new_uuid())
    response = await vault.get(AUDIT, headers={"Authorization": f"Bearer {grant}"})
    assert response.status_code == 401


# --- seal and open --------------------------------------------------------------------------


async def test_seal_then_open_with_a_router_grant(vault, gateway_auth, router_identity):
    data = {"patient": "Jane Roe", "dob": "1970-01-01", "notes": ["ü", 1, None]}
    tenant_id, job_id, ref = await seal_job_data(vault, gateway_auth, data=data)
    grant = make_grant(router_identity, tenant_id=tenant_id, job_id=job_id, ref=ref)
    response = await vault.post(OPEN, json={"grant": grant}, headers=gateway_auth)
    assert response.status_code == 200, response.text
    assert response.json() == {"data": data}


async def test_seal_answers_ref_and_key_version(vault, gateway_auth):
    tenant_id = new_uuid()
    response = await vault.post(
        RECORDS,
        json={"tenant_id": tenant_id, "job_id": new_uuid(), "purpose": "job", "data": 1},
        headers=gateway_auth,
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"ref", "key_version"}
    assert body["key_version"] == 1
    # The tenant's second record uses the same tenant key.
    _, _, second = await seal_job_data(vault, gateway_auth, data=2, tenant_id=tenant_id)
    assert second != body["ref"]


@pytest.mark.parametrize(
    "other",
    [{"b": 2}, {"a": True}, {"a": 1.0}],  # Python's == takes the last two for {"a": 1}
)
async def test_sealing_the_same_job_twice_is_409(vault, gateway_auth, databases, other):
    tenant_id, job_id, _ = await seal_job_data(vault, gateway_auth, data={"a": 1})
    response = await post_job_data(
        vault, gateway_auth, tenant_id=tenant_id, job_id=job_id, data=other
    )
    assert response.status_code == 409
    assert response.headers["content-type"].startswith(PROBLEM)
    assert await _sql(databases["vault"], "SELECT count(*) FROM records") == [(1,)]
    # A wrong guess at the stored data leaves a trace, as a right one does ("replayed").
    audited = "SELECT action, outcome, reason FROM audit_records ORDER BY seq"
    assert await _sql(databases["vault"], audited) == [
        ("seal", "ok", None),
        ("seal", "refused", "exists"),
    ]


async def test_the_same_data_is_a_retry_only_while_the_record_is_recent(
    vault, gateway_auth, databases
):
    """Comparing a second seal's data with a record answers whether a guess equals it:
    past the replay window the vault does not compare, and the same data is 409 too."""
    tenant_id, job_id, _ = await seal_job_data(vault, gateway_auth, data={"diagnosis": "C50"})
    old = datetime.now(UTC) - REPLAY_WINDOW - timedelta(minutes=1)
    await _sql(databases["vault"], "UPDATE records SET created_at = :old", old=old)
    again = await post_job_data(
        vault, gateway_auth, tenant_id=tenant_id, job_id=job_id, data={"diagnosis": "C50"}
    )
    assert again.status_code == 409, again.text
    reasons = await _sql(databases["vault"], "SELECT reason FROM audit_records ORDER BY seq")
    assert reasons == [(None,), ("exists",)]


async def test_sealing_the_same_data_again_answers_the_first_record(vault, gateway_auth, databases):
    # A gateway that crashed after sealing, or lost the answer, retries with the same job id.
    tenant_id, job_id, ref = await seal_job_data(vault, gateway_auth, data={"a": [1, 2], "b": 3})
    again = await post_job_data(
        vault,
        gateway_auth,
        tenant_id=tenant_id,
        job_id=job_id,
        data={"b": 3, "a": [1, 2]},  # the same object, its keys in another order
    )
    assert again.status_code == 201, again.text
    assert again.json()["ref"] == ref
    assert await _sql(databases["vault"], "SELECT count(*) FROM records") == [(1,)]
    replayed = await _sql(databases["vault"], "SELECT ref, reason FROM audit_records ORDER BY seq")
    assert replayed == [(ref, None), (ref, "replayed")]


@pytest.mark.parametrize(
    "body",
    [
        {"tenant_id": "nope", "job_id": new_uuid(), "purpose": "job", "data": {}},
        {"tenant_id": new_uuid(), "job_id": new_uuid(), "purpose": "result", "data": {}},
        {"tenant_id": new_uuid(), "job_id": new_uuid(), "purpose": "job"},
        {"tenant_id": new_uuid(), "job_id": new_uuid(), "purpose": "job", "data": {}, "x": 1},
    ],
)
async def test_bad_seal_input_is_422_and_stores_nothing(vault, gateway_auth, databases, body):
    response = await vault.post(RECORDS, json=body, headers=gateway_auth)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith(PROBLEM)
    assert await _sql(databases["vault"], "SELECT count(*) FROM records") == [(0,)]
    assert await _sql(databases["vault"], "SELECT count(*) FROM audit_records") == [(0,)]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
async def test_non_json_numbers_are_422_not_500(vault, gateway_auth, databases, literal):
    body = (
        f'{{"tenant_id": "{new_uuid()}", "job_id": "{new_uuid()}", "purpose": "job", '
        f'"data": {{"x": [1, {literal}]}}}}'
    )
    headers = {**gateway_auth, "Content-Type": "application/json"}
    response = await vault.post(RECORDS, content=body, headers=headers)
    assert response.status_code == 422
    assert "NaN" in response.json()["detail"]
    assert await _sql(databases["vault"], "SELECT count(*) FROM tenant_keys") == [(0,)]


async def test_unknown_ref_is_404(vault, gateway_auth, router_identity):
    grant = make_grant(router_identity, tenant_id=new_uuid(), job_id=new_uuid(), ref=new_uuid())
    response = await vault.post(OPEN, json={"grant": grant}, headers=gateway_auth)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)


# --- grants refused -------------------------------------------------------------------------


async def _refused(vault: httpx.AsyncClient, auth: dict[str, str], grant: str) -> httpx.Response:
    response = await vault.post(OPEN, json={"grant": grant}, headers=auth)
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    return response


async def test_grant_signed_by_the_gateway_is_refused(vault, gateway_auth, gateway_identity):
    tenant_id, job_id, ref = await seal_job_data(vault, gateway_auth, data={"a": 1})
    forged = make_grant(gateway_identity, tenant_id=tenant_id, job_id=job_id, ref=ref)
    response = await _refused(vault, gateway_auth, forged)
    assert "router" in response.json()["detail"]


async def test_grant_for_another_job_is_refused(vault, gateway_auth, router_identity):
    tenant_id, job_id, ref = await seal_job_data(vault, gateway_auth, data={"a": 1})
    grant = make_grant(router_identity, tenant_id=tenant_id, job_id=new_uuid(), ref=ref)
    await _refused(vault, gateway_auth, grant)


@pytest.mark.parametrize(
    "change",
    [
        {"tenant_id": "other"},
        {"purpose": "result"},
        {"action": "seal"},
        {"ttl_seconds": -60},
        {"typ": "service"},
        {"audience": "router"},
        {"ref": None},
    ],
)
async def test_grant_not_covering_the_record_is_refused(
    vault, gateway_auth, router_identity, change
):
    tenant_id, job_id, ref = await seal_job_data(vault, gateway_auth, data={"a": 1})
    claims: dict[str, Any] = {"tenant_id": tenant_id, "job_id": job_id, "ref": ref}
    claims.update({k: new_uuid() if v == "other" else v for k, v in change.items()})
    await _refused(vault, gateway_auth, make_grant(router_identity, **claims))


async def test_garbage_grant_is_refused(vault, gateway_auth):
    await _refused(vault, gateway_auth, "not-a-jwt")


async def test_e2e_member_grant_asking_for_plaintext_is_refused(
    vault, gateway_auth, router_identity
):
    tenant_id, job_id, ref = await seal_job_data(vault, gateway_auth, data={"a": 1})
    grant = make_grant(
        router_identity, tenant_id=tenant_id, job_id=job_id, ref=ref, require_e2e=True
    )
    response = await _refused(vault, gateway_auth, grant)
    assert "end-to-end" in response.json()["detail"]


# --- results sealed by grant ----------------------------------------------------------------


async def test_result_sealed_by_grant_then_opened_by_the_tenant(
    vault, gateway_auth, router_identity
):
    tenant_id, job_id, member = new_uuid(), new_uuid(), f"member:{new_uuid()}"
    seal_grant = make_grant(
        router_identity,
        action="seal",
        tenant_id=tenant_id,
        job_id=job_id,
        purpose="result",
        subject=member,
    )
    result = {"summary": "done", "figures": [1, 2, 3]}
    response = await vault.post(
        BY_GRANT, json={"grant": seal_grant, "data": result}, headers=gateway_auth
    )
    assert response.status_code == 201, response.text
    ref = response.json()["ref"]
    assert response.json()["receipt"] is None  # a grant without a lease: an older router's

    again = await vault.post(BY_GRANT, json={"grant": seal_grant, "data": {}}, headers=gateway_auth)
    assert again.status_code == 409

    open_grant = tenant_result_grant(router_identity, tenant_id=tenant_id, job_id=job_id, ref=ref)
    opened = await vault.post(OPEN, json={"grant": open_grant}, headers=gateway_auth)
    assert opened.status_code == 200
    assert opened.json() == {"data": result}


FIRST_LEASE, SECOND_LEASE = "2026-11-29T09:00:00.000000Z#2", "2026-11-29T09:05:00.000001Z#2"


async def test_results_are_sealed_once_per_lease_with_a_receipt_for_the_router(
    vault, gateway_auth, router_identity, databases, keys_dir
):
    """A send-back (a new lease) may bring a new result; within one lease a result is sealed
    once. Each answer carries the vault's receipt naming the tenant, job, lease and ref."""
    tenant_id, job_id = new_uuid(), new_uuid()

    async def seal(lease: str, data: Any) -> httpx.Response:
        grant = result_seal_grant(router_identity, tenant_id=tenant_id, job_id=job_id, lease=lease)
        body = {"grant": grant, "data": data}
        response: httpx.Response = await vault.post(BY_GRANT, json=body, headers=gateway_auth)
        return response

    first = await seal(FIRST_LEASE, {"coded": 1})
    assert first.status_code == 201, first.text
    assert receipt_claims(keys_dir, first.json()) == {
        "tenant_id": tenant_id,
        "job_id": job_id,
        "lease": FIRST_LEASE,
        "ref": first.json()["ref"],
    }
    replayed = await seal(FIRST_LEASE, {"coded": 1})
    assert replayed.json()["ref"] == first.json()["ref"]
    assert receipt_claims(keys_dir, replayed.json())["ref"] == first.json()["ref"]
    assert (await seal(FIRST_LEASE, {"coded": 2})).status_code == 409
    second = await seal(SECOND_LEASE, {"coded": 2})
    assert second.status_code == 201, second.text
    assert second.json()["ref"] != first.json()["ref"]
    assert receipt_claims(keys_dir, second.json())["lease"] == SECOND_LEASE
    rows = "SELECT lease FROM records WHERE job_id = :job ORDER BY lease"
    assert await _sql(databases["vault"], rows, job=job_id) == [(FIRST_LEASE,), (SECOND_LEASE,)]
    for ref, data in ((first.json()["ref"], {"coded": 1}), (second.json()["ref"], {"coded": 2})):
        grant = tenant_result_grant(router_identity, tenant_id=tenant_id, job_id=job_id, ref=ref)
        opened = await vault.post(OPEN, json={"grant": grant}, headers=gateway_auth)
        assert opened.json() == {"data": data}


@pytest.mark.parametrize(
    "change",
    [
        {"purpose": "job"},
        {"action": "open"},
        {"ref": "some"},
        {"signer": "gateway"},
        {"lease": "2026-11-29 09:00:00"},
        {"lease": "2026-11-29T09:00:00.000000Z"},  # no sequence number
        {"lease": 1764406800},
    ],
)
async def test_bad_seal_grant_is_refused(
    vault, gateway_auth, router_identity, gateway_identity, databases, change
):
    change = dict(change)  # parameters are shared between backends: never mutate them
    signer = gateway_identity if change.pop("signer", None) else router_identity
    claims: dict[str, Any] = {
        "action": "seal",
        "tenant_id": new_uuid(),
        "job_id": new_uuid(),
        "purpose": "result",
    }
    claims.update({k: new_uuid() if v == "some" else v for k, v in change.items()})
    grant = make_grant(signer, **claims)
    response = await vault.post(BY_GRANT, json={"grant": grant, "data": {}}, headers=gateway_auth)
    assert response.status_code == 403
    assert await _sql(databases["vault"], "SELECT count(*) FROM records") == [(0,)]


# --- sealed vault ---------------------------------------------------------------------------


@pytest.fixture
def sealed_settings(databases, tmp_path: Path, keys_dir: Path) -> VaultSettings:
    return VaultSettings(
        database_url=databases["vault"],
        data_dir=tmp_path,
        service_keys_dir=keys_dir,
        generate_root_key=False,
    )


async def test_sealed_vault_refuses_crypto_with_503(
    sealed_settings, gateway_auth, router_identity, tmp_path
):
    async with running(create_app(sealed_settings)) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "sealed"}
        assert ready.headers["Retry-After"] == "2"
        assert (await client.get("/healthz")).status_code == 200

        grant = make_grant(router_identity, tenant_id=new_uuid(), job_id=new_uuid(), ref=new_uuid())
        calls = [
            (
                "POST",
                RECORDS,
                {"tenant_id": new_uuid(), "job_id": new_uuid(), "purpose": "job", "data": 1},
            ),
            ("POST", BY_GRANT, {"grant": grant, "data": 1}),
            ("POST", OPEN, {"grant": grant}),
            ("GET", VERIFY, None),
        ]
        for method, path, body in calls:
            response = await client.request(method, path, json=body, headers=gateway_auth)
            assert response.status_code == 503, path
            assert response.headers["content-type"].startswith(PROBLEM)
            assert response.json()["type"].endswith("/vault-sealed")
            # Credentials are still checked first: a stranger learns nothing.
            assert (await client.request(method, path, json=body)).status_code == 401
        assert (await client.get(AUDIT, headers=gateway_auth)).status_code == 200
    assert not (tmp_path / "vault-root.key").exists()


async def test_ready_when_unsealed_and_key_file_is_private(vault, vault_settings):
    response = await vault.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}
    key_file = vault_settings.resolved_root_key_file()
    assert key_file.stat().st_mode & 0o777 == 0o600


async def test_records_survive_a_restart_with_the_same_env_root_key(
    databases, tmp_path, keys_dir, gateway_auth, router_identity
):
    root = base64.b64encode(os.urandom(32)).decode()
    settings = VaultSettings(
        database_url=databases["vault"],
        data_dir=tmp_path,
        service_keys_dir=keys_dir,
        root_key=root,
        generate_root_key=False,
    )
    async with running(create_app(settings)) as client:
        tenant_id, job_id, ref = await seal_job_data(client, gateway_auth, data={"k": "v"})
    grant = make_grant(router_identity, tenant_id=tenant_id, job_id=job_id, ref=ref)
    async with running(create_app(settings)) as client:
        response = await client.post(OPEN, json={"grant": grant}, headers=gateway_auth)
        assert response.json() == {"data": {"k": "v"}}
    # Another root key (a freshly generated key file) cannot unwrap this tenant's key.
    other_settings = VaultSettings(
        database_url=databases["vault"], data_dir=tmp_path / "other", service_keys_dir=keys_dir
    )
    async with running(create_app(other_settings)) as client:
        response = await client.post(OPEN, json={"grant": grant}, headers=gateway_auth)
        assert response.status_code == 503
        assert response.json()["type"].endswith("/root-key-mismatch")


# --- audit ----------------------------------------------------------------------------------


async def test_seal_open_and_refusals_are_audited(vault, gateway_auth, router_identity):
    tenant_id, job_id, ref = await seal_job_data(vault, gateway_auth, data={"a": 1})
    member = f"member:{new_uuid()}"
    ok = make_grant(router_identity, tenant_id=tenant_id, job_id=job_id, ref=ref, subject=member)
    assert (await vault.post(OPEN, json={"grant": ok}, headers=gateway_auth)).status_code == 200
    wrong = make_grant(router_identity, tenant_id=tenant_id, job_id=new_uuid(), ref=ref)
    assert (await vault.post(OPEN, json={"grant": wrong}, headers=gateway_auth)).status_code == 403
    assert (
        await vault.post(OPEN, json={"grant": "x.y.z"}, headers=gateway_auth)
    ).status_code == 403

    response = await vault.get(AUDIT, headers=gateway_auth)
    assert response.status_code == 200
    records = response.json()["data"]
    summary = [(r["seq"], r["action"], r["outcome"], r["reason"]) for r in records]
    assert summary == [
        (4, "open", "refused", "invalid_grant"),
        (3, "open", "refused", "grant_mismatch"),
        (2, "open", "ok", None),
        (1, "seal", "ok", None),
    ]
    assert records[2]["subject"] == member
    assert records[2]["ref"] == ref
    assert records[3]["subject"] == f"tenant:{tenant_id}"
    assert all(r["actor"] == "gateway" for r in records)
    assert records[0]["tenant_id"] is None  # an unverified grant's claims are not trusted
    assert records[1]["prev_hash"] == records[2]["hash"]

    verify = await vault.get(VERIFY, headers=gateway_auth)
    assert verify.json() == {
        "valid": True,
        "records": 4,
        "first_invalid": None,
        "problem": None,
        "anchors": 0,
        "anchoring": True,
    }


async def test_audit_list_filters_by_tenant_and_pages(vault, gateway_auth):
    tenant_id = new_uuid()
    for _ in range(5):
        await seal_job_data(vault, gateway_auth, data=1, tenant_id=tenant_id)
    await seal_job_data(vault, gateway_auth, data=1)  # another tenant's

    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"tenant_id": tenant_id, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = (await vault.get(AUDIT, params=params, headers=gateway_auth)).json()
        assert all(r["tenant_id"] == tenant_id for r in body["data"])
        seen += [r["seq"] for r in body["data"]]
        if not body["has_more"]:
            assert body["next_cursor"] is None
            break
        cursor = body["next_cursor"]
    assert seen == [5, 4, 3, 2, 1]

    for bad in (
        {"cursor": "abc"},
        {"cursor": "0"},
        {"cursor": "\u00b2"},  # a digit to str.isdigit, not to int()
        {"limit": 0},
        {"limit": 101},
        {"tenant_id": "x"},
    ):
        response = await vault.get(AUDIT, params=bad, headers=gateway_auth)
        assert response.status_code in (400, 422), bad
        assert response.headers["content-type"].startswith(PROBLEM)


async def test_verify_finds_a_row_altered_in_the_database(
    vault, gateway_auth, router_identity, databases
):
    for _ in range(3):
        await seal_job_data(vault, gateway_auth, data={"x": 1})
    assert (await vault.get(VERIFY, headers=gateway_auth)).json()["valid"] is True

    await _sql(databases["vault"], "UPDATE audit_records SET outcome = 'refused' WHERE seq = 2")
    result = (await vault.get(VERIFY, headers=gateway_auth)).json()
    assert result == {
        "valid": False,
        "records": 3,
        "first_invalid": 2,
        "problem": "record_altered",
        "anchors": 0,
        "anchoring": True,
    }


async def test_verify_catches_a_wiped_audit_log(vault, gateway_auth, databases):
    for _ in range(2):
        await seal_job_data(vault, gateway_auth, data={"x": 1})
    await _sql(databases["vault"], "DELETE FROM audit_records")
    await _sql(databases["vault"], "DELETE FROM audit_chain_head")
    result = (await vault.get(VERIFY, headers=gateway_auth)).json()
    assert result["valid"] is False
    assert result["problem"] == "audit_log_missing"


async def test_verify_and_appends_catch_a_truncated_tail(vault, gateway_auth, databases):
    for _ in range(3):
        await seal_job_data(vault, gateway_auth, data={"x": 1})
    await _sql(databases["vault"], "DELETE FROM audit_records WHERE seq = 3")
    result = (await vault.get(VERIFY, headers=gateway_auth)).json()
    assert (result["valid"], result["first_invalid"]) == (False, 3)
    # Fail closed: with the chain inconsistent, nothing more is sealed (and nothing stored).
    response = await vault.post(
        RECORDS,
        json={"tenant_id": new_uuid(), "job_id": new_uuid(), "purpose": "job", "data": 1},
        headers=gateway_auth,
    )
    assert response.status_code == 503
    assert await _sql(databases["vault"], "SELECT count(*) FROM records") == [(3,)]


async def test_tampered_ciphertext_is_refused_and_audited(
    vault, gateway_auth, router_identity, databases
):
    tenant_id, job_id, ref = await seal_job_data(vault, gateway_auth, data={"a": 1})
    _, _, other_ref = await seal_job_data(vault, gateway_auth, data={"b": 2}, tenant_id=tenant_id)
    # Move the other record's ciphertext into this row: same tenant key, different context.
    await _sql(
        databases["vault"],
        "UPDATE records SET ciphertext = (SELECT ciphertext FROM records WHERE id = :other), "
        "wrapped_data_key = (SELECT wrapped_data_key FROM records WHERE id = :other) "
        "WHERE id = :ref",
        other=other_ref,
        ref=ref,
    )
    grant = make_grant(router_identity, tenant_id=tenant_id, job_id=job_id, ref=ref)
    response = await vault.post(OPEN, json={"grant": grant}, headers=gateway_auth)
    assert response.status_code == 500
    assert response.json()["type"].endswith("/integrity")
    assert "b" not in response.json().get("data", {})
    latest = (await vault.get(AUDIT, params={"limit": 1}, headers=gateway_auth)).json()["data"]
    assert (latest[0]["outcome"], latest[0]["reason"]) == ("refused", "integrity_failure")


# --- confidentiality ------------------------------------------------------------------------


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Every log line as the services write them (JSON), captured at DEBUG."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter("vault"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


async def test_canary_is_in_no_table_no_log_and_no_error(
    vault, gateway_auth, router_identity, databases, json_logs, caplog
):
    canary = "CANARY-" + os.urandom(8).hex()
    data = {"secret": canary, "nested": [canary, {"k": canary}]}
    tenant_id, job_id, ref = await seal_job_data(vault, gateway_auth, data=data)
    grant = make_grant(router_identity, tenant_id=tenant_id, job_id=job_id, ref=ref)
    opened = await vault.post(OPEN, json={"grant": grant}, headers=gateway_auth)
    assert opened.json() == {"data": data}  # the canary is really in there
    # Error paths that receive it: a conflicting seal, a refused open, a validation failure.
    duplicate = await vault.post(
        RECORDS,
        json={"tenant_id": tenant_id, "job_id": job_id, "purpose": "job", "data": [canary]},
        headers=gateway_auth,
    )
    assert duplicate.status_code == 409
    assert canary not in duplicate.text
    invalid = await vault.post(
        RECORDS,
        json={"tenant_id": canary, "job_id": job_id, "purpose": "job", "data": data},
        headers=gateway_auth,
    )
    assert invalid.status_code == 422
    assert canary not in invalid.text
    by_grant = await vault.post(
        BY_GRANT, json={"grant": canary, "data": data}, headers=gateway_auth
    )
    assert by_grant.status_code == 403
    assert canary not in by_grant.text

    engine = create_async_engine(databases["vault"], poolclass=NullPool)
    needles = (canary.encode(), canary.encode("utf-16-le"), base64.b64encode(canary.encode()))
    rows_seen = 0
    try:
        async with engine.connect() as connection:
            for table in Base.metadata.sorted_tables:
                for row in (await connection.execute(select(table))).all():
                    rows_seen += 1
                    for value in row:
                        raw = value if isinstance(value, bytes) else str(value).encode()
                        assert not any(n in raw for n in needles), table.name
    finally:
        await engine.dispose()
    assert rows_seen >= 5  # a tenant key, a record, audit records and the head were read

    logged = json_logs.getvalue()
    assert '"message": "record sealed"' in logged
    assert '"message": "record opened"' in logged
    assert canary not in logged
    assert all(
        canary not in r.getMessage() and canary not in str(r.__dict__) for r in caplog.records
    )
    for line in logged.splitlines():
        json.loads(line)


async def test_root_key_material_is_in_no_log(
    databases, tmp_path, keys_dir, json_logs, gateway_auth
):
    material = os.urandom(32)
    encoded = base64.b64encode(material).decode()
    settings = VaultSettings(
        database_url=databases["vault"],
        data_dir=tmp_path,
        service_keys_dir=keys_dir,
        root_key=encoded,
    )
    async with running(create_app(settings)) as client:
        await seal_job_data(client, gateway_auth, data={"a": 1})
    logged = json_logs.getvalue()
    assert "vault unsealed" in logged
    assert encoded not in logged
    assert material.hex() not in logged


async def test_identity_of_unknown_service_is_401(vault, tmp_path):
    from shared.service_auth import ensure_service_keys

    ensure_service_keys(tmp_path / "stranger", names=("gateway",))
    impostor = ServiceIdentity.load(name="gateway", keys_dir=tmp_path / "stranger", peers=())
    response = await vault.get(
        AUDIT, headers={"Authorization": f"Bearer {impostor.credential_for('vault')}"}
    )
    assert response.status_code == 401


async def test_failed_requests_return_their_connection_at_once(vault_settings, gateway_auth):
    # A route that raises must roll back and close its session before the response, not leave
    # it (and its connection, and on PostgreSQL its transaction) to the garbage collector.
    app = create_app(vault_settings)
    async with running(app) as client:
        tenant_id, job_id, _ = await seal_job_data(client, gateway_auth, data=1)
        for _ in range(3):
            response = await client.post(
                RECORDS,
                json={"tenant_id": tenant_id, "job_id": job_id, "purpose": "job", "data": 2},
                headers=gateway_auth,
            )
            assert response.status_code == 409
        assert app.state.engine.pool.checkedout() == 0
