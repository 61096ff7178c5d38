"""The public API: alone for what the gateway decides itself, and against the real router and
vault (in-process, lifespans running) for the whole slice."""

from __future__ import annotations

import base64
import importlib
import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text

from services.gateway.app import create_app
from services.gateway.clients.resilience import CircuitBreaker, install_breaker
from services.gateway.db.models import ApiKey
from services.gateway.db.repository import ApiKeyRepository
from services.gateway.domain import api_keys
from services.gateway.domain.api_keys import Role
from shared.db import create_engine, create_sessionmaker
from shared.logging import JsonFormatter
from tests.conftest import running
from tests.gateway.conftest import OPERATOR_KEY, Platform, gateway_settings
from tests.gateway.factories import make_member

PROBLEM = "application/problem+json"
# Appears in confidential data only: it must never show up anywhere but in the answers that
# are meant to carry it.
CANARY = "CANARY-7f3a9c-SSN-078-05-1120"
RESULT_CANARY = "CANARY-RESULT-51e0d2-IBAN-DE89370400440532013000"

BOOKKEEPING_TEAM = {
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

BOOKKEEPING_JOB = {
    "title": "Reconcile March bookkeeping ledgers",
    "description": "Bookkeeping: reconcile the general ledger with bank statements, post "
    "journal entries and prepare the trial balance for March.",
    "service": "bookkeeping",
    "priority": "high",
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_problem(response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    for field in ("type", "title", "detail", "request_id"):
        assert body[field]
    return body


async def create_tenant(gateway: Platform, name: str = "Acme Health", **extra) -> dict[str, Any]:
    response = await gateway.client.post(
        "/v1/admin/tenants", json={"name": name, **extra}, headers=gateway.operator
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def raw_rows(service: str, url: str) -> list[str]:
    """Every row of every table of a service's database, as text."""
    models = importlib.import_module(f"services.{service}.db.models")
    engine = create_engine(url)
    rows: list[str] = []
    try:
        async with engine.connect() as connection:
            for table in models.Base.metadata.sorted_tables:
                result = await connection.execute(text(f'SELECT * FROM "{table.name}"'))
                rows.extend(repr(tuple(row)) for row in result)
    finally:
        await engine.dispose()
    return rows


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Every log line written while the test runs, formatted as production writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


# --- authentication and roles (the gateway alone) ---------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Bearer tr_client_aaaaaaaaaaaaaaaa_" + "a" * 52},
        {"Authorization": "Bearer " + OPERATOR_KEY[:-1] + "X"},
    ],
)
async def test_missing_or_bad_key_is_401_with_challenge(gateway_alone, headers):
    response = await gateway_alone.client.get("/v1/admin/tenants", headers=headers)
    body = assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Bearer" in body["detail"]


async def test_bootstrap_operator_key_works_and_is_stored_once(gateway_alone, keys_dir, tmp_path):
    response = await gateway_alone.client.get("/v1/admin/tenants", headers=gateway_alone.operator)
    assert response.status_code == 200
    assert response.json() == {"data": [], "has_more": False, "next_cursor": None}
    # A second start with the same key (a restart, another replica) adds nothing.
    again = create_app(gateway_settings(gateway_alone.databases, keys_dir, tmp_path))
    async with running(again) as client:
        assert (await client.get("/v1/admin/tenants", headers=gateway_alone.operator)).is_success
    engine = create_engine(gateway_alone.databases["gateway"])
    try:
        async with create_sessionmaker(engine)() as session:
            rows = (await session.scalars(select(ApiKey))).all()
    finally:
        await engine.dispose()
    assert len(rows) == 1
    assert rows[0].role == "operator"
    assert OPERATOR_KEY not in repr(tuple(vars(rows[0]).values()))


async def test_wrong_role_is_403(gateway_alone):
    tenant = await create_tenant(gateway_alone)
    client_key = bearer(tenant["api_key"])
    # A client key on operator and member routes.
    refused = await gateway_alone.client.get("/v1/admin/tenants", headers=client_key)
    assert assert_problem(refused, 403)["detail"] == "This endpoint needs an operator API key."
    refused = await gateway_alone.client.get("/v1/team/jobs", headers=client_key)
    assert assert_problem(refused, 403)["detail"] == "This endpoint needs a member API key."
    # A member key on operator and client routes.
    engine = create_engine(gateway_alone.databases["gateway"])
    try:
        async with create_sessionmaker(engine)() as session:
            member = await make_member(session, team_id="8c1d4a62-9a8e-4b7e-9a51-6f0c2b6f3e11")
            pepper = gateway_alone.app.state.pepper
            key = api_keys.generate_key(Role.MEMBER, pepper=pepper)
            await ApiKeyRepository(session).add(
                key, role=Role.MEMBER, team_id=member.team_id, member_id=member.id
            )
            await session.commit()
    finally:
        await engine.dispose()
    member_key = bearer(key.plaintext)
    body = assert_problem(
        await gateway_alone.client.post(
            "/v1/admin/tenants", json={"name": "x"}, headers=member_key
        ),
        403,
    )
    assert "operator" in body["detail"]
    assert_problem(await gateway_alone.client.get("/v1/jobs", headers=member_key), 403)
    # The operator key on client routes.
    assert_problem(await gateway_alone.client.get("/v1/jobs", headers=gateway_alone.operator), 403)


async def test_loose_admin_input_is_422_and_changes_nothing(gateway_alone):
    """Input that used to be taken loosely: a key option the API does not have, a "yes" for a
    boolean, control characters in a name or a name filter (a NUL matched every tenant)."""
    gw, operator = gateway_alone.client, gateway_alone.operator
    tenant = await create_tenant(gateway_alone)
    keys_path = f"/v1/admin/tenants/{tenant['id']}/keys"
    expiring = await gw.post(
        keys_path, json={"expires_at": "1970-01-01T00:00:00Z"}, headers=operator
    )
    assert assert_problem(expiring, 422)["errors"][0]["field"].endswith("expires_at")
    assert len((await gw.get(keys_path, headers=operator)).json()["data"]) == 1
    assert (await gw.post(keys_path, json={}, headers=operator)).status_code == 201
    for policy in ({"require_e2e": "yes"}, {"require_review": 1}):
        refused = await gw.put(
            f"/v1/admin/tenants/{tenant['id']}/policy", json=policy, headers=operator
        )
        assert_problem(refused, 422)
    for name in ("Acme\u0000", "Acme\nPharma", "\u0007"):
        assert_problem(
            await gw.post("/v1/admin/tenants", json={"name": name}, headers=operator), 422
        )
    assert_problem(await gw.get("/v1/admin/tenants?name=%00", headers=operator), 422)
    # Not every invisible character is a control character: names hold no-break spaces, the
    # zero-width non-joiner of Persian, emoji joiners and direction marks.
    for name in (
        "Acme\u00a0GmbH",
        "\u0634\u0631\u06a9\u062a\u200c\u0647\u0627",
        "Dev \U0001f469\u200d\U0001f4bb",
    ):
        taken = await gw.post("/v1/admin/tenants", json={"name": name}, headers=operator)
        assert taken.status_code == 201, taken.text
        assert taken.json()["name"] == name
    listed = await gw.get("/v1/admin/tenants", params={"name": "Acme Health"}, headers=operator)
    assert [t["id"] for t in listed.json()["data"]] == [tenant["id"]]
    assert (await gw.get(f"/v1/admin/tenants/{tenant['id']}", headers=operator)).json()[
        "version"
    ] == tenant["version"]


async def test_a_credential_or_idempotency_key_sent_twice_is_400_and_changes_nothing(
    gateway_alone,
):
    """Which of two is meant depends on who reads them (a proxy may take the last, the API the
    first), so the request is refused rather than answered for one of them."""
    gw, operator = gateway_alone.client, gateway_alone.operator
    tenant = await create_tenant(gateway_alone)
    twice = [
        ("Authorization", f"Bearer {tenant['api_key']}"),
        ("Authorization", operator["Authorization"]),
    ]
    body = assert_problem(await gw.get("/v1/admin/tenants", headers=twice), 400)
    assert body["type"].endswith("repeated-header")
    assert "Authorization" in body["detail"]
    assert tenant["api_key"] not in str(body)
    keyed_twice = [
        ("Authorization", operator["Authorization"]),
        ("Idempotency-Key", "first"),
        ("Idempotency-Key", "second"),
    ]
    refused = await gw.post("/v1/admin/tenants", json={"name": "Twice"}, headers=keyed_twice)
    assert assert_problem(refused, 400)["type"].endswith("repeated-header")
    listed = await gw.get("/v1/admin/tenants", params={"name": "Twice"}, headers=operator)
    assert listed.json()["data"] == []


async def test_revoked_key_fails_on_the_next_request(gateway_alone):
    tenant = await create_tenant(gateway_alone)
    second = await gateway_alone.client.post(
        f"/v1/admin/tenants/{tenant['id']}/keys", headers=gateway_alone.operator
    )
    assert second.status_code == 201
    key = second.json()
    assert key["api_key"].startswith("tr_client_")
    # 403 (valid key, wrong role) proves the key is live before revocation.
    assert (
        await gateway_alone.client.get("/v1/team/jobs", headers=bearer(key["api_key"]))
    ).status_code == 403
    listed = await gateway_alone.client.get(
        f"/v1/admin/tenants/{tenant['id']}/keys", headers=gateway_alone.operator
    )
    assert {k["id"] for k in listed.json()["data"]} == {tenant["api_key_id"], key["id"]}
    assert "api_key" not in listed.text
    assert tenant["api_key"] not in listed.text
    assert key["api_key"] not in listed.text
    revoked = await gateway_alone.client.delete(
        f"/v1/admin/tenants/{tenant['id']}/keys/{key['id']}", headers=gateway_alone.operator
    )
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"]
    after = await gateway_alone.client.get("/v1/team/jobs", headers=bearer(key["api_key"]))
    assert_problem(after, 401)
    # The tenant's first key is untouched.
    assert (
        await gateway_alone.client.get("/v1/team/jobs", headers=bearer(tenant["api_key"]))
    ).status_code == 403


# --- tenants (the gateway alone) -------------------------------------------------------------


async def test_tenant_lifecycle(gateway_alone):
    created = await create_tenant(
        gateway_alone,
        policy={"allowed_countries": ["PH", "IN"], "required_certifications": ["hipaa"]},
    )
    assert created["api_key"].startswith("tr_client_")
    assert created["policy"] == {
        "allowed_countries": ["IN", "PH"],
        "required_certifications": ["HIPAA"],
        "require_e2e": False,
    }
    got = await gateway_alone.client.get(
        f"/v1/admin/tenants/{created['id']}", headers=gateway_alone.operator
    )
    assert got.status_code == 200
    assert "api_key" not in got.json()
    assert got.headers["ETag"] == '"1"'
    # A conditional read: 304 and no body while the ETag (weak or in a list) is current.
    path = f"/v1/admin/tenants/{created['id']}"
    for current in ('"1"', 'W/"1"', '"7", "1"', "*"):
        cached = await gateway_alone.client.get(
            path, headers={**gateway_alone.operator, "If-None-Match": current}
        )
        assert (cached.status_code, cached.content, cached.headers["ETag"]) == (304, b"", '"1"')
    stale = await gateway_alone.client.get(
        path, headers={**gateway_alone.operator, "If-None-Match": '"0"'}
    )
    assert (stale.status_code, stale.json()["id"]) == (200, created["id"])
    new_policy: dict[str, Any] = {
        "allowed_countries": None,
        "required_certifications": [],
        "require_e2e": True,
    }
    put = await gateway_alone.client.put(
        f"/v1/admin/tenants/{created['id']}/policy",
        json=new_policy,
        headers={**gateway_alone.operator, "If-Match": '"1"'},
    )
    assert put.status_code == 200, put.text
    assert put.json()["policy"] == new_policy
    assert put.headers["ETag"] == '"2"'
    stale = await gateway_alone.client.put(
        f"/v1/admin/tenants/{created['id']}/policy",
        json=new_policy,
        headers={**gateway_alone.operator, "If-Match": '"1"'},
    )
    assert_problem(stale, 412)
    # The same policy again changes nothing: no new version to make others' If-Match stale.
    same = await gateway_alone.client.put(
        f"/v1/admin/tenants/{created['id']}/policy", json=new_policy, headers=gateway_alone.operator
    )
    assert (same.status_code, same.headers["ETag"], same.json()["version"]) == (200, '"2"', 2)
    for unissued in (b'"99999999999999999999999"', b'"\xc2\xb2"'):
        odd = await gateway_alone.client.put(
            f"/v1/admin/tenants/{created['id']}/policy",
            json={**new_policy, "require_e2e": False},
            headers={**gateway_alone.operator, "If-Match": unissued},
        )
        assert_problem(odd, 412)
    missing = await gateway_alone.client.get(
        "/v1/admin/tenants/6b1f5a0e-0000-4000-8000-000000000000", headers=gateway_alone.operator
    )
    assert_problem(missing, 404)


async def test_tenant_list_paginates(gateway_alone):
    for i in range(3):
        await create_tenant(gateway_alone, name=f"Tenant {i}")
    first = (
        await gateway_alone.client.get(
            "/v1/admin/tenants", params={"limit": 2}, headers=gateway_alone.operator
        )
    ).json()
    assert len(first["data"]) == 2
    assert first["has_more"] is True
    second = (
        await gateway_alone.client.get(
            "/v1/admin/tenants",
            params={"limit": 2, "cursor": first["next_cursor"]},
            headers=gateway_alone.operator,
        )
    ).json()
    assert len(second["data"]) == 1
    assert second["has_more"] is False
    bad = await gateway_alone.client.get(
        "/v1/admin/tenants", params={"cursor": "garbage"}, headers=gateway_alone.operator
    )
    assert_problem(bad, 400)


# --- input validation (the gateway alone: nothing reaches a peer) ------------------------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"title": ""}, "title"),
        ({"description": "x" * 20001}, "description"),
        ({"service": "astrology"}, "service"),
        ({"priority": "asap"}, "priority"),
        ({"due_at": "2030-01-01T10:00:00"}, "due_at"),
        ({"due_at": "0001-01-01T00:00:00+14:00"}, "due_at"),
        ({"confidential": "not an object"}, "confidential"),
        ({"confidential": {"blob": "x" * 70000}}, "confidential"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"callback_url": "http://example.com/hook"}, "callback_url"),
        ({"data_policy": {"allowed_countries": ["Ireland"]}}, "data_policy.allowed_countries"),
        ({"surprise": True}, "surprise"),
    ],
)
async def test_invalid_job_is_422_naming_the_field(gateway_alone, payload, field):
    tenant = await create_tenant(gateway_alone)
    response = await gateway_alone.client.post(
        "/v1/jobs", json={**BOOKKEEPING_JOB, **payload}, headers=bearer(tenant["api_key"])
    )
    body = assert_problem(response, 422)
    assert any(e["field"].startswith(field) for e in body["errors"]), body
    assert body["detail"].startswith(field) or field in body["detail"] or body["errors"]


async def test_a_cursor_outside_the_utc_range_is_400_not_a_failure(gateway_alone):
    tenant = await create_tenant(gateway_alone)
    # ["0001-01-01T00:00:00+14:00", "x"]: valid JSON, but no time a database can hold in UTC.
    cursor = "WyIwMDAxLTAxLTAxVDAwOjAwOjAwKzE0OjAwIiwgIngiXQ"
    response = await gateway_alone.client.get(
        "/v1/webhook-endpoints", params={"cursor": cursor}, headers=bearer(tenant["api_key"])
    )
    assert_problem(response, 400)


async def test_nan_in_confidential_is_422_not_a_failure(gateway_alone):
    tenant = await create_tenant(gateway_alone)
    # Python's JSON parser accepts NaN; it is not JSON, and must not reach the vault.
    body = json.dumps({**BOOKKEEPING_JOB, "confidential": {"ratio": "NAN_HERE"}})
    response = await gateway_alone.client.post(
        "/v1/jobs",
        content=body.replace('"NAN_HERE"', "NaN"),
        headers={**bearer(tenant["api_key"]), "Content-Type": "application/json"},
    )
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["field"].startswith("confidential")


async def test_plain_and_sealed_confidential_together_are_refused(gateway_alone):
    tenant = await create_tenant(gateway_alone)
    response = await gateway_alone.client.post(
        "/v1/jobs",
        json={
            **BOOKKEEPING_JOB,
            "confidential": {"note": CANARY},
            "confidential_sealed": {"v": 1, "payload": CANARY},
        },
        headers=bearer(tenant["api_key"]),
    )
    body = assert_problem(response, 422)
    assert body["errors"][0]["field"] == "confidential_sealed"
    assert "not both" in body["detail"]
    assert CANARY not in response.text


async def test_policy_that_leaves_no_country_is_422(gateway_alone):
    tenant = await create_tenant(gateway_alone, policy={"allowed_countries": ["IN"]})
    response = await gateway_alone.client.post(
        "/v1/jobs",
        json={**BOOKKEEPING_JOB, "data_policy": {"allowed_countries": ["US"]}},
        headers=bearer(tenant["api_key"]),
    )
    body = assert_problem(response, 422)
    assert "allowed_countries" in body["detail"]


async def test_a_tenant_policy_allowing_no_country_is_422_and_changes_nothing(gateway_alone):
    """An empty country list would park every job of the tenant for good."""
    gw, operator = gateway_alone.client, gateway_alone.operator
    refused = await gw.post(
        "/v1/admin/tenants",
        json={"name": "Nowhere", "policy": {"allowed_countries": []}},
        headers=operator,
    )
    assert "allowed_countries" in assert_problem(refused, 422)["detail"]
    tenant = await create_tenant(gateway_alone, policy={"allowed_countries": ["IN"]})
    path = f"/v1/admin/tenants/{tenant['id']}"
    changed = await gw.put(f"{path}/policy", json={"allowed_countries": []}, headers=operator)
    assert "allowed_countries" in assert_problem(changed, 422)["detail"]
    stored = (await gw.get(path, headers=operator)).json()
    assert (stored["policy"]["allowed_countries"], stored["version"]) == (["IN"], 1)
    listed = await gw.get("/v1/admin/tenants", headers=operator)
    assert [t["name"] for t in listed.json()["data"]] == ["Acme Health"]


async def test_body_over_the_limit_is_413(gateway_alone):
    tenant = await create_tenant(gateway_alone)
    response = await gateway_alone.client.post(
        "/v1/jobs",
        content=b'{"title": "' + b"x" * (2 * 1024 * 1024) + b'"}',
        headers={**bearer(tenant["api_key"]), "Content-Type": "application/json"},
    )
    assert_problem(response, 413)


async def test_peers_down_means_503_not_500(gateway_alone):
    tenant = await create_tenant(gateway_alone)
    response = await gateway_alone.client.post(
        "/v1/jobs",
        json={**BOOKKEEPING_JOB, "confidential": {"ssn": CANARY}},
        headers=bearer(tenant["api_key"]),
    )
    body = assert_problem(response, 503)
    assert CANARY not in response.text
    assert "vault" in body["detail"]


async def test_readyz_with_peers_down_is_degraded_not_unready(gateway_alone):
    """The gateway still takes jobs with its peers away (pending for the router, refused with
    503 only where the vault is needed): a 503 here would take every replica out of its load
    balancer during a router outage."""
    install_breaker(
        gateway_alone.app.state.router_http, CircuitBreaker(service="router", failures=1)
    )
    await _submit_while_router_is_away(gateway_alone)
    ready = await gateway_alone.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "degraded",
        "checks": {"database": True, "router": False, "vault": False},
        "circuits": {"router": "open", "vault": "closed"},
    }


async def _submit_while_router_is_away(gateway: Platform) -> None:
    tenant = await create_tenant(gateway)
    accepted = await gateway.client.post(
        "/v1/jobs", json=BOOKKEEPING_JOB, headers=bearer(tenant["api_key"])
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "pending"


async def test_readyz_without_its_database_is_503(gateway_alone):
    """Its own database is what the gateway cannot work without (keys, the outbox)."""
    unreachable = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/taskroute")
    gateway_alone.app.state.sessionmaker = create_sessionmaker(unreachable)
    try:
        ready = await gateway_alone.client.get("/readyz")
    finally:
        await unreachable.dispose()
    body = assert_problem(ready, 503)
    assert body["checks"] == {"database": False, "router": False, "vault": False}


async def test_openapi_documents_the_bearer_scheme(gateway_alone):
    spec = (await gateway_alone.client.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    submit = spec["paths"]["/v1/jobs"]["post"]
    assert submit["summary"].startswith("Submit a job")
    assert submit["tags"] == ["jobs"]
    assert submit["security"] == [{"ApiKey": []}]


# --- the whole platform: real router and vault, in process ------------------------------------


async def _setup_team_and_member(platform: Platform) -> tuple[dict[str, Any], dict[str, Any]]:
    team = await platform.client.post(
        "/v1/admin/teams", json=BOOKKEEPING_TEAM, headers=platform.operator
    )
    assert team.status_code == 201, team.text
    member = await platform.client.post(
        f"/v1/admin/teams/{team.json()['id']}/members",
        json={"name": "Priya Sharma"},
        headers=platform.operator,
    )
    assert member.status_code == 201, member.text
    assert member.json()["api_key"].startswith("tr_member_")
    return team.json(), member.json()


async def test_a_write_that_takes_no_body_refuses_one_and_changes_nothing(platform):
    """Claim, heartbeat and the vault key actions declare no body: a malformed or unexpected
    one is 422 and the action does not happen; none, an empty one or ``{}`` is taken."""
    gw = platform.client
    tenant = await create_tenant(platform)
    _, member = await _setup_team_and_member(platform)
    member_key = bearer(member["api_key"])
    job = await gw.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=bearer(tenant["api_key"]))
    job_id = job.json()["id"]
    rotate = f"/v1/admin/tenants/{tenant['id']}/vault-key/rotate"
    json_type = {"Content-Type": "application/json"}
    for body in (b"garbage{{", b"[1, 2, 3]", b'{"x": 1}', b"null"):
        for path, headers in (
            (f"/v1/team/jobs/{job_id}/claim", member_key),
            (rotate, platform.operator),
            (f"/v1/admin/tenants/{tenant['id']}/vault-key/retire", platform.operator),
        ):
            refused = await gw.post(path, content=body, headers={**headers, **json_type})
            problem = assert_problem(refused, 422)
            assert "takes no body" in problem["detail"], path
    unchanged = await gw.get(f"/v1/jobs/{job_id}", headers=bearer(tenant["api_key"]))
    assert unchanged.json()["status"] == "queued"
    # Authentication comes first: a caller who may not call the route learns nothing else.
    for headers, status in (({}, 401), (bearer("tr_operator_nope"), 401), (member_key, 403)):
        refused = await gw.post(rotate, content=b"garbage", headers={**headers, **json_type})
        assert_problem(refused, status)
    keys = await gw.get("/v1/vault/public-key", headers=bearer(tenant["api_key"]))
    assert len(keys.json()["keys"]) == 1  # no rotation happened

    claimed = await gw.post(
        f"/v1/team/jobs/{job_id}/claim", content=b" {} ", headers={**member_key, **json_type}
    )
    assert claimed.status_code == 200, claimed.text
    beat = await gw.post(
        f"/v1/team/jobs/{job_id}/heartbeat", content=b"garbage", headers=member_key
    )
    assert_problem(beat, 422)
    assert (await gw.post(f"/v1/team/jobs/{job_id}/heartbeat", headers=member_key)).is_success
    assert (await gw.post(rotate, json={}, headers=platform.operator)).status_code == 200
    # A route that takes a body says where its JSON broke, not a field named "0".
    invalid = await gw.post(
        "/v1/jobs", content=b'{"title": }', headers={**bearer(tenant["api_key"]), **json_type}
    )
    assert assert_problem(invalid, 422)["errors"] == [
        {"field": "body", "message": "the body is not valid JSON (at character 10)"}
    ]


async def test_free_text_with_control_characters_is_refused_and_changes_nothing(platform):
    gw = platform.client
    tenant = await create_tenant(platform)
    client_key = bearer(tenant["api_key"])
    _, member = await _setup_team_and_member(platform)
    member_key = bearer(member["api_key"])
    for change in (
        {"title": "Ledger\x00"},
        {"description": BOOKKEEPING_JOB["description"] + "\x1b[2J"},
        {"metadata": {"batch\x00": "7"}},
        {"metadata": {"batch": "7\x07"}},
    ):
        refused = await gw.post("/v1/jobs", json={**BOOKKEEPING_JOB, **change}, headers=client_key)
        assert "control characters" in assert_problem(refused, 422)["detail"]
    assert (await gw.get("/v1/jobs", headers=client_key)).json()["data"] == []
    # Tabs and line breaks are text.
    multiline = {**BOOKKEEPING_JOB, "description": "Bookkeeping:\n\t- reconcile the ledger"}
    job = await gw.post("/v1/jobs", json=multiline, headers=client_key)
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    refused = await gw.post(
        f"/v1/jobs/{job_id}/cancel", json={"reason": "no\x00"}, headers=client_key
    )
    assert_problem(refused, 422)
    refused = await gw.post(
        f"/v1/team/jobs/{job_id}/reject", json={"reason": "no\x1b"}, headers=member_key
    )
    assert_problem(refused, 422)
    assert (await gw.post(f"/v1/team/jobs/{job_id}/claim", headers=member_key)).is_success
    refused = await gw.post(
        f"/v1/team/jobs/{job_id}/complete",
        json={"result": {"rows": ["ok", {"note": "\x00"}]}},
        headers=member_key,
    )
    assert_problem(refused, 422)
    assert (await gw.get(f"/v1/jobs/{job_id}", headers=client_key)).json()["status"] == (
        "in_progress"
    )
    done = await gw.post(
        f"/v1/team/jobs/{job_id}/complete", json={"result": {"rows": 3}}, headers=member_key
    )
    assert done.status_code == 200, done.text
    refused = await gw.post(
        f"/v1/jobs/{job_id}/feedback",
        json={"rating": 5, "comment": "great\x00"},
        headers=client_key,
    )
    assert_problem(refused, 422)


async def test_the_whole_slice(platform, log_output):
    gw = platform.client
    errors: list[str] = []  # every error body seen: none may carry a confidential value

    tenant = await create_tenant(platform, policy={"allowed_countries": ["IN", "PH"]})
    client_key = bearer(tenant["api_key"])
    team, member = await _setup_team_and_member(platform)
    member_key = bearer(member["api_key"])

    # Submit: sealed at the vault, routed by the router.
    submitted = await gw.post(
        "/v1/jobs",
        json={
            **BOOKKEEPING_JOB,
            "confidential": {"ssn": CANARY, "accounts": [1, 2]},
            "metadata": {"po": "PO-1234"},
            "data_policy": {"required_certifications": ["ISO27001"]},
        },
        headers=client_key,
    )
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert job["status"] == "queued"
    assert job["assignment"]["team_id"] == team["id"]
    assert job["assignment"]["team_name"] == team["name"]
    assert job["classification"]["domain"] == "bookkeeping"
    assert job["has_confidential"] is True
    assert job["policy"]["allowed_countries"] == ["IN", "PH"]
    assert job["policy"]["required_certifications"] == ["ISO27001"]
    assert "confidential_ref" not in job
    assert CANARY not in submitted.text

    # The member sees it in the queue, without tenant or reference.
    queue = await gw.get("/v1/team/jobs", headers=member_key)
    assert queue.status_code == 200, queue.text
    [queued] = [j for j in queue.json()["data"] if j["id"] == job["id"]]
    assert "tenant_id" not in queued
    assert "confidential_ref" not in queued

    # No lease, no confidential data.
    early = await gw.get(f"/v1/team/jobs/{job['id']}/confidential", headers=member_key)
    assert early.status_code in (403, 409), early.text
    errors.append(early.text)

    claimed = await gw.post(f"/v1/team/jobs/{job['id']}/claim", headers=member_key)
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["status"] == "in_progress"
    assert claimed.json()["lease"]["member_id"] == member["id"]
    again = await gw.post(f"/v1/team/jobs/{job['id']}/claim", headers=member_key)
    assert_problem(again, 409)
    errors.append(again.text)

    beat = await gw.post(f"/v1/team/jobs/{job['id']}/heartbeat", headers=member_key)
    assert beat.status_code == 200, beat.text

    opened = await gw.get(f"/v1/team/jobs/{job['id']}/confidential", headers=member_key)
    assert opened.status_code == 200, opened.text
    assert opened.json() == {"confidential": {"ssn": CANARY, "accounts": [1, 2]}}

    completed = await gw.post(
        f"/v1/team/jobs/{job['id']}/complete",
        json={
            "result": {"summary": "Ledgers reconciled", "adjustments": 3},
            "confidential_result": {"iban": RESULT_CANARY},
        },
        headers=member_key,
    )
    assert completed.status_code == 200, completed.text
    assert completed.json()["status"] == "completed"
    assert RESULT_CANARY not in completed.text

    # The client sees it completed and reads the result, confidential part included.
    seen = await gw.get(f"/v1/jobs/{job['id']}", headers=client_key)
    assert seen.status_code == 200
    assert seen.json()["status"] == "completed"
    assert "confidential_ref" not in seen.json()
    result = await gw.get(f"/v1/jobs/{job['id']}/result", headers=client_key)
    assert result.status_code == 200, result.text
    assert result.json() == {
        "result": {"summary": "Ledgers reconciled", "adjustments": 3},
        "confidential_result": {"iban": RESULT_CANARY},
    }

    events = await gw.get(f"/v1/jobs/{job['id']}/events", headers=client_key)
    assert events.status_code == 200, events.text
    statuses = [e["to_status"] for e in events.json()["data"] if e["to_status"]]
    assert statuses[-2:] == ["in_progress", "completed"]
    assert "queued" in statuses
    routing = await gw.get(f"/v1/jobs/{job['id']}/routing", headers=client_key)
    assert routing.status_code == 200, routing.text

    listed = await gw.get("/v1/jobs", params={"status": "completed"}, headers=client_key)
    assert [j["id"] for j in listed.json()["data"]] == [job["id"]]
    assert "confidential_ref" not in listed.text

    # Cancelling a completed job is refused and changes nothing.
    late_cancel = await gw.post(f"/v1/jobs/{job['id']}/cancel", headers=client_key)
    assert_problem(late_cancel, 409)
    errors.append(late_cancel.text)

    # Operators: the job, the stats, the audit log (which recorded seal and open).
    admin_job = await gw.get(f"/v1/admin/jobs/{job['id']}", headers=platform.operator)
    assert admin_job.status_code == 200
    assert admin_job.json()["tenant_id"] == tenant["id"]
    assert "confidential_ref" not in admin_job.json()
    stats = await gw.get("/v1/admin/stats", headers=platform.operator)
    assert stats.status_code == 200, stats.text
    audit = await gw.get("/v1/admin/audit", headers=platform.operator)
    assert audit.status_code == 200, audit.text
    assert len(audit.json()["data"]) >= 3
    verified = await gw.get("/v1/admin/audit/verify", headers=platform.operator)
    assert verified.status_code == 200
    assert verified.json()["valid"] is True

    # Errors triggered with confidential values in hand carry none of them.
    too_big = await gw.post(
        "/v1/jobs",
        json={**BOOKKEEPING_JOB, "confidential": {"ssn": CANARY, "pad": "x" * 70000}},
        headers=client_key,
    )
    assert_problem(too_big, 422)
    errors.append(too_big.text)
    misplaced = await gw.post(
        "/v1/jobs",
        json={**BOOKKEEPING_JOB, "metadata": {"note": CANARY * 30}, "ssn": CANARY},
        headers=client_key,
    )
    assert_problem(misplaced, 422)
    errors.append(misplaced.text)
    for body in errors:
        assert CANARY not in body
        assert RESULT_CANARY not in body

    # Credentials are shown once and then kept only as digests or sealed, even the answers an
    # Idempotency-Key replays (a webhook secret here, an API key in a tenant's creation).
    keyed = {**client_key, "Idempotency-Key": "slice-hook-1"}
    hook_body = {"url": "https://hooks.example.com/slice"}
    hook = await gw.post("/v1/webhook-endpoints", json=hook_body, headers=keyed)
    assert hook.status_code == 201, hook.text
    replayed = await gw.post("/v1/webhook-endpoints", json=hook_body, headers=keyed)
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.json()["secret"] == hook.json()["secret"]
    keyed_tenant = await gw.post(
        "/v1/admin/tenants",
        json={"name": "Acme Keyed"},
        headers={**platform.operator, "Idempotency-Key": "slice-tenant-1"},
    )
    assert keyed_tenant.status_code == 201, keyed_tenant.text
    pepper: bytes = platform.app.state.pepper
    credentials = [
        tenant["api_key"],
        member["api_key"],
        keyed_tenant.json()["api_key"],
        OPERATOR_KEY,
        hook.json()["secret"],
        pepper.hex(),
        base64.b64encode(pepper).decode(),
    ]

    # Nowhere at rest but sealed: no gateway row, no router row, no vault row in clear.
    for service in ("gateway", "router", "vault"):
        rows = await raw_rows(service, platform.databases[service])
        assert len(rows) >= 3, service  # the search below is not vacuous
        for row in rows:
            assert CANARY not in row, service
            assert RESULT_CANARY not in row, service
            for credential in credentials:
                assert credential not in row, service
    gateway_rows = "\n".join(await raw_rows("gateway", platform.databases["gateway"]))
    assert "slice-hook-1" not in gateway_rows  # idempotency keys are stored as digests
    assert "hooks.example.com/slice" in gateway_rows  # the search covers those tables

    # No log line of any service (they share this process's loggers).
    logs = log_output.getvalue()
    # The capture works, and holds the inner services' lines too.
    assert '"path": "/v1/jobs"' in logs
    assert '"path": "/internal/v1/records/open"' in logs
    assert CANARY not in logs
    assert RESULT_CANARY not in logs
    for credential in credentials:
        assert credential not in logs
    for line in logs.splitlines():
        json.loads(line)


async def test_another_tenants_job_is_404_like_an_unknown_one(platform):
    gw = platform.client
    acme = await create_tenant(platform, name="Acme")
    globex = await create_tenant(platform, name="Globex")
    await _setup_team_and_member(platform)
    job = await gw.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=bearer(acme["api_key"]))
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    other = bearer(globex["api_key"])
    unknown_id = "0b0e7d7e-1f0a-4b8e-9d55-3c2a1b0f9e77"
    for suffix, method in (
        ("", "GET"),
        ("/events", "GET"),
        ("/routing", "GET"),
        ("/cancel", "POST"),
        ("/result", "GET"),
    ):
        foreign = await gw.request(method, f"/v1/jobs/{job_id}{suffix}", headers=other)
        unknown = await gw.request(method, f"/v1/jobs/{unknown_id}{suffix}", headers=other)
        a, b = assert_problem(foreign, 404), assert_problem(unknown, 404)
        assert (a["type"], a["title"], a["detail"]) == (b["type"], b["title"], b["detail"])
    malformed = await gw.get("/v1/jobs/not-a-uuid", headers=other)
    assert_problem(malformed, 404)
    # Globex's own list does not show it; Acme's job is untouched (the cancel did nothing).
    assert (await gw.get("/v1/jobs", headers=other)).json()["data"] == []
    mine = await gw.get(f"/v1/jobs/{job_id}", headers=bearer(acme["api_key"]))
    assert mine.json()["status"] == "queued"


async def test_team_admin_and_etags(platform):
    gw = platform.client
    team, _member = await _setup_team_and_member(platform)
    got = await gw.get(f"/v1/admin/teams/{team['id']}", headers=platform.operator)
    assert got.status_code == 200
    etag = got.headers["ETag"]
    changed = await gw.patch(
        f"/v1/admin/teams/{team['id']}",
        json={"capacity": 9},
        headers={**platform.operator, "If-Match": etag},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["capacity"] == 9
    assert changed.headers["ETag"] != etag
    # A conditional read: the old ETag no longer matches (200), the new one does (304).
    path = f"/v1/admin/teams/{team['id']}"
    again = await gw.get(path, headers={**platform.operator, "If-None-Match": etag})
    assert (again.status_code, again.json()["capacity"]) == (200, 9)
    current = changed.headers["ETag"]
    cached = await gw.get(path, headers={**platform.operator, "If-None-Match": current})
    assert (cached.status_code, cached.content, cached.headers["ETag"]) == (304, b"", current)
    stale = await gw.patch(
        f"/v1/admin/teams/{team['id']}",
        json={"capacity": 3},
        headers={**platform.operator, "If-Match": etag},
    )
    assert_problem(stale, 412)
    for unissued in (b'"99999999999999999999999"', b'"\xc2\xb2"', b'"1e3"', b'W/""'):
        odd = await gw.patch(
            f"/v1/admin/teams/{team['id']}",
            json={"capacity": 3},
            headers={**platform.operator, "If-Match": unissued},
        )
        assert_problem(odd, 412)
    assert (await gw.get(f"/v1/admin/teams/{team['id']}", headers=platform.operator)).json()[
        "capacity"
    ] == 9
    listed = await gw.get("/v1/admin/teams", headers=platform.operator)
    assert [t["id"] for t in listed.json()["data"]] == [team["id"]]
    missing = await gw.post(
        "/v1/admin/teams/0b0e7d7e-1f0a-4b8e-9d55-3c2a1b0f9e77/members",
        json={"name": "Nobody"},
        headers=platform.operator,
    )
    assert_problem(missing, 404)
    no_team = await gw.get(
        "/v1/admin/teams/0b0e7d7e-1f0a-4b8e-9d55-3c2a1b0f9e77/members", headers=platform.operator
    )
    assert_problem(no_team, 404)  # not an empty list: there is no such team
    bad_team = await gw.post(
        "/v1/admin/teams",
        json={**BOOKKEEPING_TEAM, "timezone": "Mars/Olympus"},
        headers=platform.operator,
    )
    body = assert_problem(bad_team, 422)
    assert body["errors"][0]["field"] == "timezone"


async def test_triage_and_manual_routing(platform):
    gw = platform.client
    tenant = await create_tenant(platform)
    team, member = await _setup_team_and_member(platform)
    vague = await gw.post(
        "/v1/jobs",
        json={"title": "Help", "description": "Can you do the thing we discussed?"},
        headers=bearer(tenant["api_key"]),
    )
    assert vague.status_code == 202, vague.text
    assert vague.json()["status"] == "triage"
    triage = await gw.get("/v1/admin/triage", headers=platform.operator)
    assert [j["id"] for j in triage.json()["data"]] == [vague.json()["id"]]
    routed = await gw.post(
        f"/v1/admin/jobs/{vague.json()['id']}/route",
        json={"team_id": team["id"], "domain": "bookkeeping"},
        headers=platform.operator,
    )
    assert routed.status_code == 200, routed.text
    assert routed.json()["status"] == "queued"
    assert routed.json()["assignment"]["team_id"] == team["id"]
    # The member can reject it: no other team, so it waits as unroutable.
    rejected = await gw.post(
        f"/v1/team/jobs/{vague.json()['id']}/reject",
        json={"reason": "Not our kind of work"},
        headers=bearer(member["api_key"]),
    )
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] in ("queued", "unroutable")
    assert "tenant_id" not in rejected.json()


async def test_cancel_and_release(platform):
    gw = platform.client
    tenant = await create_tenant(platform)
    _team, member = await _setup_team_and_member(platform)
    client_key, member_key = bearer(tenant["api_key"]), bearer(member["api_key"])
    job = (await gw.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=client_key)).json()
    assert (await gw.post(f"/v1/team/jobs/{job['id']}/claim", headers=member_key)).is_success
    released = await gw.post(
        f"/v1/team/jobs/{job['id']}/release", json={"reason": "shift over"}, headers=member_key
    )
    assert released.status_code == 200, released.text
    assert released.json()["status"] == "queued"
    assert released.json()["lease"] is None
    cancelled = await gw.post(
        f"/v1/jobs/{job['id']}/cancel", json={"reason": "no longer needed"}, headers=client_key
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    no_result = await gw.get(f"/v1/jobs/{job['id']}/result", headers=client_key)
    assert_problem(no_result, 409)


async def test_readyz_with_peers_up(platform):
    ready = await platform.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ready",
        "checks": {"database": True, "router": True, "vault": True},
        "circuits": {"router": "closed", "vault": "closed"},
    }


async def test_e2e_policy_refuses_plaintext_delivery(platform):
    gw = platform.client
    tenant = await create_tenant(platform, policy={"require_e2e": True})
    _team, member = await _setup_team_and_member(platform)
    member_key = bearer(member["api_key"])
    job = await gw.post(
        "/v1/jobs",
        json={**BOOKKEEPING_JOB, "confidential": {"ssn": CANARY}},
        headers=bearer(tenant["api_key"]),
    )
    assert job.status_code == 202, job.text
    assert job.json()["policy"]["require_e2e"] is True
    assert (await gw.post(f"/v1/team/jobs/{job.json()['id']}/claim", headers=member_key)).is_success
    refused = await gw.get(f"/v1/team/jobs/{job.json()['id']}/confidential", headers=member_key)
    body = assert_problem(refused, 409)
    assert body["type"].endswith("e2e-required")
    assert CANARY not in refused.text


async def test_an_operator_revokes_a_members_keys(platform):
    team, member = await _setup_team_and_member(platform)
    member_key = bearer(member["api_key"])
    assert (await platform.client.get("/v1/team/jobs", headers=member_key)).status_code == 200
    elsewhere = await platform.client.delete(
        f"/v1/admin/teams/{uuid.uuid4()}/members/{member['id']}/keys", headers=platform.operator
    )
    assert_problem(elsewhere, 404)
    by_member = await platform.client.delete(
        f"/v1/admin/teams/{team['id']}/members/{member['id']}/keys", headers=member_key
    )
    assert_problem(by_member, 403)
    revoked = await platform.client.delete(
        f"/v1/admin/teams/{team['id']}/members/{member['id']}/keys", headers=platform.operator
    )
    assert revoked.status_code == 204
    assert_problem(await platform.client.get("/v1/team/jobs", headers=member_key), 401)


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "keyed"])
async def test_without_its_database_every_request_is_503_not_500(gateway_alone, keyed, log_output):
    """The edge (key lookup, rate limits, the Idempotency-Key claim) asks the database before
    any route runs: a database that is away is a transient 503 with Retry-After there too."""
    tenant = await create_tenant(gateway_alone)
    headers = bearer(tenant["api_key"]) | ({"Idempotency-Key": "db-away-1"} if keyed else {})
    engine = gateway_alone.app.state.engine
    unreachable = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/taskroute")
    gateway_alone.app.state.engine = unreachable
    gateway_alone.app.state.sessionmaker = create_sessionmaker(unreachable)
    try:
        submitted = await gateway_alone.client.post(
            "/v1/jobs", json=BOOKKEEPING_JOB, headers=headers
        )
        listed = await gateway_alone.client.get("/v1/jobs", headers=bearer(tenant["api_key"]))
    finally:
        gateway_alone.app.state.engine = engine
        gateway_alone.app.state.sessionmaker = create_sessionmaker(engine)
        await unreachable.dispose()
    for answer in (submitted, listed):
        assert "database is unavailable" in assert_problem(answer, 503)["detail"]
        assert answer.headers["Retry-After"] == "1"
    assert tenant["api_key"] not in log_output.getvalue()
    # The access lines say 503 and how long each request took (not the process's clock).
    access = [
        json.loads(line)
        for line in log_output.getvalue().splitlines()
        if '"message": "request"' in line and '"status": 503' in line
    ]
    assert len(access) == 2
    assert all(0 <= line["duration_ms"] < 60_000 for line in access), access
    # Back: the same key works again, nothing was left half-done.
    again = await gateway_alone.client.get("/v1/admin/tenants", headers=gateway_alone.operator)
    assert again.status_code == 200, again.text
