"""Idempotency-Key on POSTs (services/gateway/api/edge.py) against real databases, with the real
router and vault in-process where a job is created."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from services.gateway.db.models import IdempotencyRecord
from services.gateway.db.repository import IdempotencyRepository
from services.gateway.domain.idempotency import State
from shared.db import create_engine, create_sessionmaker, utcnow
from tests.gateway.conftest import Platform
from tests.gateway.test_api import (
    BOOKKEEPING_JOB,
    BOOKKEEPING_TEAM,
    assert_problem,
    bearer,
    create_tenant,
    raw_rows,
)

REPLAYED = "Idempotent-Replayed"


def keyed(api_key: str, idempotency_key: str) -> dict[str, str]:
    return {**bearer(api_key), "Idempotency-Key": idempotency_key}


async def setup_team(platform: Platform) -> None:
    team = await platform.client.post(
        "/v1/admin/teams", json=BOOKKEEPING_TEAM, headers=platform.operator
    )
    assert team.status_code == 201, team.text


async def job_ids(platform: Platform, api_key: str) -> list[str]:
    listed = await platform.client.get("/v1/jobs", headers=bearer(api_key))
    assert listed.status_code == 200, listed.text
    return [job["id"] for job in listed.json()["data"]]


async def records(platform: Platform) -> list[IdempotencyRecord]:
    engine = create_engine(platform.databases["gateway"])
    try:
        async with create_sessionmaker(engine)() as session:
            return list((await session.scalars(select(IdempotencyRecord))).all())
    finally:
        await engine.dispose()


async def test_same_key_and_body_replays_the_first_answer(platform):
    tenant = await create_tenant(platform)
    await setup_team(platform)
    headers = keyed(tenant["api_key"], "order-4711")
    first = await platform.client.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=headers)
    assert first.status_code == 202, first.text
    assert REPLAYED not in first.headers
    # The same body in another key order and spacing is the same request.
    reordered = dict(reversed(list(BOOKKEEPING_JOB.items())))
    again = await platform.client.post("/v1/jobs", json=reordered, headers=headers)
    assert again.status_code == 202
    assert again.headers[REPLAYED] == "true"
    assert again.json() == first.json()
    assert again.headers["content-type"] == first.headers["content-type"]
    assert await job_ids(platform, tenant["api_key"]) == [first.json()["id"]]
    # The job's id is the one reserved with the claim.
    [record] = await records(platform)
    assert record.resource_id == first.json()["id"]
    assert record.state == State.COMPLETED.value
    assert "order-4711" not in repr(tuple(vars(record).values()))


async def test_same_key_with_another_request_is_422(platform):
    tenant = await create_tenant(platform)
    await setup_team(platform)
    headers = keyed(tenant["api_key"], "k-1")
    first = await platform.client.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=headers)
    assert first.status_code == 202, first.text
    other_body = await platform.client.post(
        "/v1/jobs", json={**BOOKKEEPING_JOB, "priority": "low"}, headers=headers
    )
    body = assert_problem(other_body, 422)
    assert body["type"].endswith("idempotency-key-reused")
    other_path = await platform.client.post(
        f"/v1/jobs/{first.json()['id']}/cancel", json=BOOKKEEPING_JOB, headers=headers
    )
    assert_problem(other_path, 422)
    # Nothing changed: one job, still queued.
    assert await job_ids(platform, tenant["api_key"]) == [first.json()["id"]]
    seen = await platform.client.get(
        f"/v1/jobs/{first.json()['id']}", headers=bearer(tenant["api_key"])
    )
    assert seen.json()["status"] == "queued"


async def test_concurrent_duplicates_make_exactly_one_job(platform):
    tenant = await create_tenant(platform)
    await setup_team(platform)
    headers = keyed(tenant["api_key"], "race-" + uuid.uuid4().hex)
    answers = await asyncio.gather(
        *(platform.client.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=headers) for _ in range(8))
    )
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {202, 409}, [a.text for a in answers]
    created = [a for a in answers if a.status_code == 202 and REPLAYED not in a.headers]
    assert len(created) == 1
    for answer in answers:
        if answer.status_code == 409:
            assert_problem(answer, 409)
        else:
            assert answer.json()["id"] == created[0].json()["id"]
    assert await job_ids(platform, tenant["api_key"]) == [created[0].json()["id"]]
    # Once settled, every retry is a replay.
    late = await platform.client.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=headers)
    assert late.status_code == 202
    assert late.headers[REPLAYED] == "true"


async def test_keys_are_scoped_to_the_tenant(platform):
    acme = await create_tenant(platform, name="Acme")
    globex = await create_tenant(platform, name="Globex")
    await setup_team(platform)
    for_acme = await platform.client.post(
        "/v1/jobs", json=BOOKKEEPING_JOB, headers=keyed(acme["api_key"], "shared-key")
    )
    for_globex = await platform.client.post(
        "/v1/jobs", json=BOOKKEEPING_JOB, headers=keyed(globex["api_key"], "shared-key")
    )
    assert for_acme.status_code == for_globex.status_code == 202
    assert REPLAYED not in for_globex.headers
    assert for_acme.json()["id"] != for_globex.json()["id"]
    assert await job_ids(platform, acme["api_key"]) == [for_acme.json()["id"]]
    assert await job_ids(platform, globex["api_key"]) == [for_globex.json()["id"]]
    # A second key of the same tenant shares the tenant's key space.
    second = await platform.client.post(
        f"/v1/admin/tenants/{acme['id']}/keys", headers=platform.operator
    )
    replay = await platform.client.post(
        "/v1/jobs", json=BOOKKEEPING_JOB, headers=keyed(second.json()["api_key"], "shared-key")
    )
    assert replay.headers[REPLAYED] == "true"
    assert replay.json()["id"] == for_acme.json()["id"]


async def test_a_5xx_is_not_stored_and_the_retry_reuses_the_job_id(gateway_alone, platform):
    # gateway_alone and platform share the gateway database: the first attempt meets dead peers.
    # (A dead vault is a 503 for a job with confidential data; a dead router alone is a 202
    # pending job, see test_submissions.py.)
    tenant = await create_tenant(gateway_alone)
    await setup_team(platform)
    headers = keyed(tenant["api_key"], "retry-me")
    job = {**BOOKKEEPING_JOB, "confidential": {"iban": "DE89370400440532013000"}}
    down = await gateway_alone.client.post("/v1/jobs", json=job, headers=headers)
    assert_problem(down, 503)
    down_again = await gateway_alone.client.post("/v1/jobs", json=job, headers=headers)
    assert_problem(down_again, 503)
    assert REPLAYED not in down_again.headers
    [record] = await records(platform)
    assert record.state == State.IN_FLIGHT.value
    assert record.locked_at is None  # released, free for the retry
    up = await platform.client.post("/v1/jobs", json=job, headers=headers)
    assert up.status_code == 202, up.text
    assert REPLAYED not in up.headers
    assert up.json()["id"] == record.resource_id
    assert up.json()["status"] == "queued"


async def test_a_stale_claim_is_taken_over_and_a_fresh_one_is_409(platform):
    tenant = await create_tenant(platform)
    await setup_team(platform)
    headers = keyed(tenant["api_key"], "crashed")
    # A replica claimed the key and died before answering: its claim is recorded, in flight.
    first = await platform.client.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=headers)
    assert first.status_code == 202
    engine = create_engine(platform.databases["gateway"])
    try:
        async with create_sessionmaker(engine)() as session:
            record = (await session.scalars(select(IdempotencyRecord))).one()
            record.state = State.IN_FLIGHT.value
            record.response = None
            record.response_status = None
            record.locked_at = record.created_at  # claimed just now
            await session.commit()
            busy = await platform.client.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=headers)
            body = assert_problem(busy, 409)
            assert body["type"].endswith("idempotency-in-flight")
            # An hour later the claim is stale: the retry takes it over with the same job id,
            # and the router's idempotency on ids answers with the job made the first time.
            record.locked_at = record.created_at.replace(year=record.created_at.year - 1)
            await session.commit()
    finally:
        await engine.dispose()
    retried = await platform.client.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=headers)
    assert retried.status_code == 202, retried.text
    assert retried.json()["id"] == first.json()["id"]
    assert await job_ids(platform, tenant["api_key"]) == [first.json()["id"]]


async def test_secrets_in_a_stored_answer_are_sealed(gateway_alone):
    """Creating a tenant answers with its API key: the replay has it, the table does not."""
    headers = {**gateway_alone.operator, "Idempotency-Key": "tenant-acme"}
    body: dict[str, Any] = {"name": "Acme"}
    first = await gateway_alone.client.post("/v1/admin/tenants", json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = await gateway_alone.client.post("/v1/admin/tenants", json=body, headers=headers)
    assert again.status_code == 201
    assert again.headers[REPLAYED] == "true"
    assert again.json() == first.json()
    listed = await gateway_alone.client.get("/v1/admin/tenants", headers=gateway_alone.operator)
    assert len(listed.json()["data"]) == 1
    rows = await raw_rows("gateway", gateway_alone.databases["gateway"])
    api_key = first.json()["api_key"]
    assert any("/v1/admin/tenants" in row for row in rows)  # the record is among them
    for row in rows:
        assert api_key not in row
        assert api_key.encode() not in row.encode()
        assert "tenant-acme" not in row


async def test_bad_key_header_is_400_and_changes_nothing(gateway_alone):
    headers = {**gateway_alone.operator, "Idempotency-Key": "x" * 256}
    response = await gateway_alone.client.post(
        "/v1/admin/tenants", json={"name": "Acme"}, headers=headers
    )
    assert_problem(response, 400)
    listed = await gateway_alone.client.get("/v1/admin/tenants", headers=gateway_alone.operator)
    assert listed.json()["data"] == []


async def test_without_credentials_nothing_is_claimed(gateway_alone):
    response = await gateway_alone.client.post(
        "/v1/admin/tenants", json={"name": "Acme"}, headers={"Idempotency-Key": "anon"}
    )
    assert_problem(response, 401)
    assert await records(gateway_alone) == []


async def test_an_expired_key_is_a_new_request(gateway_alone):
    headers = {**gateway_alone.operator, "Idempotency-Key": "old"}
    first = await gateway_alone.client.post(
        "/v1/admin/tenants", json={"name": "Acme"}, headers=headers
    )
    assert first.status_code == 201
    engine = create_engine(gateway_alone.databases["gateway"])
    try:
        async with create_sessionmaker(engine)() as session:
            record = (await session.scalars(select(IdempotencyRecord))).one()
            record.expires_at = record.created_at - timedelta(seconds=1)
            await session.commit()
            # More than 24 hours later the key may name another request.
            second = await gateway_alone.client.post(
                "/v1/admin/tenants", json={"name": "Globex"}, headers=headers
            )
            assert second.status_code == 201, second.text
            assert REPLAYED not in second.headers
            assert second.json()["name"] == "Globex"
            # The purge deletes only what has expired.
            record = (await session.scalars(select(IdempotencyRecord))).one()
            record.expires_at = record.created_at - timedelta(seconds=1)
            await session.commit()
            assert await IdempotencyRepository(session).purge_expired(now=utcnow()) == 1
            await session.commit()
    finally:
        await engine.dispose()
    assert await records(gateway_alone) == []


async def test_openapi_documents_the_edge(gateway_alone):
    spec = (await gateway_alone.client.get("/openapi.json")).json()
    submit = spec["paths"]["/v1/jobs"]["post"]
    [header] = [p for p in submit["parameters"] if p["name"] == "Idempotency-Key"]
    assert header["in"] == "header"
    assert header["required"] is False
    assert {"400", "409", "429"} <= set(submit["responses"])
    listing = spec["paths"]["/v1/jobs"]["get"]
    assert {"401", "403", "422", "429", "503"} <= set(listing["responses"])
    assert "application/problem+json" in listing["responses"]["422"]["content"]
    assert "404" in spec["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]
    assert "Idempotency-Key" not in str(listing.get("parameters", []))
    # Fetching it twice documents nothing twice.
    again = (await gateway_alone.client.get("/openapi.json")).json()
    assert again == spec
