"""The router's internal API, in-process, on the run's real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from services.cli.main import app as cli
from services.cli.router import forget_member_key
from services.router.app import create_app
from services.router.db.models import ForgottenMemberKey, MemberKey
from services.router.db.repository import JobRepository
from services.router.domain.classifier import LexiconClassifier
from services.router.sweeper import sweep_once
from shared.db import create_engine, create_sessionmaker
from shared.service_auth import ServiceIdentity
from tests.conftest import running
from tests.router.factories import (
    OTHER_TENANT,
    TENANT,
    claim,
    create_team,
    job_body,
    new_uuid,
    outbox_token,
    result_receipt,
    submit_job,
    team_body,
)

PROBLEM = "application/problem+json"
VAGUE = {"title": "Quick favour", "description": "Please have a look at the attached and help."}


def assert_problem(response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"]
    assert body["title"]
    assert body["detail"]
    assert "request_id" in body
    return body


# ----------------------------------------------------------------------------- service auth


async def test_internal_routes_need_gateway_credentials(router_settings, keys_dir: Path):
    vault = ServiceIdentity.load(name="vault", keys_dir=keys_dir, peers=())
    gateway = ServiceIdentity.load(name="gateway", keys_dir=keys_dir, peers=())
    async with running(create_app(router_settings)) as http:
        for headers in (
            {},
            {"Authorization": "Bearer not-a-token"},
            {"Authorization": "Basic abc"},
            # Signed by the vault: a real service, but not one allowed to call the router.
            {"Authorization": f"Bearer {vault.credential_for('router')}"},
            # The gateway's credential for another audience.
            {"Authorization": f"Bearer {gateway.credential_for('vault')}"},
        ):
            for method, path in (
                ("GET", "/internal/v1/teams"),
                ("POST", "/internal/v1/jobs"),
                ("GET", f"/internal/v1/jobs/{new_uuid()}"),
                ("POST", "/internal/v1/classify"),
                ("GET", "/internal/v1/stats"),
                ("GET", "/internal/v1/events/unpublished"),
                ("POST", "/internal/v1/events/published"),
            ):
                response = await http.request(method, path, headers=headers, json={})
                assert_problem(response, 401)
                assert response.headers["www-authenticate"].startswith("Bearer")
        # Nothing was created by any refused call.
        ok = await http.get(
            "/internal/v1/teams",
            headers={"Authorization": f"Bearer {gateway.credential_for('router')}"},
        )
        assert ok.status_code == 200
        assert ok.json()["data"] == []


async def test_health_and_readiness(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


async def test_readiness_fails_when_the_database_does_not_answer(router_settings, gateway_headers):
    # Port 1 on the loopback: nothing listens there, so every connection is refused at once.
    settings = router_settings.model_copy(
        update={"database_url": "postgresql+asyncpg://postgres@127.0.0.1:1/none"}
    )
    async with running(create_app(settings)) as http:
        assert (await http.get("/healthz")).status_code == 200
        response = await http.get("/readyz")
        body = assert_problem(response, 503)
        assert "127.0.0.1" not in body["detail"]
        assert response.headers["Retry-After"] == "2"


# ----------------------------------------------------------------------------- submit


async def test_submit_queues_with_assignment_events_and_decision(client):
    team = await create_team(client, name="Clinical Pune")
    await create_team(client, name="Legal Dublin", country="IE", skills=["legal"])
    job = await submit_job(client, id=(job_id := new_uuid()))
    assert job["id"] == job_id
    assert job["tenant_id"] == TENANT
    assert job["status"] == "queued"
    assert job["classification"]["tier"] == "KPO"
    assert job["classification"]["domain"] == "clinical"
    assert job["classification"]["confidence"] >= 0.5
    assert any("adverse event" in reason for reason in job["classification"]["reasons"])
    assert job["assignment"]["team_id"] == team["id"]
    assert job["assignment"]["team_name"] == "Clinical Pune"
    assert job["assignment"]["score"] > 0
    assert job["lease"] is None
    assert job["has_confidential"] is True
    assert job["metadata"] == {"batch": "7"}

    events = (await client.get(f"/internal/v1/jobs/{job_id}/events")).json()
    assert events["has_more"] is False
    assert events["next_cursor"] is None
    assert [(e["seq"], e["type"], e["from_status"], e["to_status"]) for e in events["data"]] == [
        (1, "created", None, "pending"),
        (2, "routed", "pending", "queued"),
    ]
    assert events["data"][0]["actor"] == f"client:{TENANT}"
    assert events["data"][1]["actor"] == "router"

    routing = (await client.get(f"/internal/v1/jobs/{job_id}/routing")).json()
    assert routing["chosen"]["team_id"] == team["id"]
    assert [e["team_id"] for e in routing["eligible"]] == [team["id"]]
    [excluded] = routing["excluded"]
    assert excluded["team_name"] == "Legal Dublin"
    assert excluded["codes"] == ["lacks_skill"]
    assert routing["outcome"] == "queued"
    assert routing["at"]


async def test_resubmitting_the_same_id_returns_the_stored_job(client):
    await create_team(client)
    body = job_body()
    first = await client.post("/internal/v1/jobs", json=body)
    assert first.status_code == 201
    again = await client.post("/internal/v1/jobs", json={**body, "title": "changed"})
    assert again.status_code == 200
    assert again.json() == first.json()
    listed = (await client.get("/internal/v1/jobs", params={"tenant_id": TENANT})).json()
    assert [job["id"] for job in listed["data"]] == [body["id"]]
    events = (await client.get(f"/internal/v1/jobs/{body['id']}/events")).json()["data"]
    assert len(events) == 2


async def test_concurrent_resubmissions_make_one_job(client):
    await create_team(client)
    body = job_body()
    responses = await asyncio.gather(
        *(client.post("/internal/v1/jobs", json=body) for _ in range(3))
    )
    assert sorted(r.status_code for r in responses) == [200, 200, 201]
    assert len({r.json()["id"] for r in responses}) == 1
    listed = (await client.get("/internal/v1/jobs", params={"tenant_id": TENANT})).json()
    assert len(listed["data"]) == 1


async def test_a_failed_request_gives_its_connection_back_at_once(client):
    # The session must be rolled back and closed when the route raises, not whenever the
    # garbage collector gets to it (a held connection would keep SQLite's write lock).
    pool = client._transport.app.state.engine.pool
    await create_team(client, name="Taken")
    assert_problem(await client.post("/internal/v1/teams", json=team_body(name="Taken")), 409)
    assert pool.checkedout() == 0
    assert_problem(await client.get(f"/internal/v1/teams/{new_uuid()}"), 404)
    assert pool.checkedout() == 0


async def test_same_id_from_another_tenant_is_a_conflict(client):
    body = job_body()
    await client.post("/internal/v1/jobs", json=body)
    response = await client.post("/internal/v1/jobs", json={**body, "tenant_id": OTHER_TENANT})
    assert_problem(response, 409)
    assert body["title"] not in response.text


async def test_service_hint_is_honoured(client):
    team = await create_team(client, name="Legal", skills=["legal"])
    job = await submit_job(client, service="legal", **VAGUE)
    assert job["status"] == "queued"
    assert job["assignment"]["team_id"] == team["id"]
    assert job["classification"]["confidence"] == 1.0
    assert job["service"] == "legal"


async def test_vague_text_goes_to_triage(client):
    await create_team(client)
    job = await submit_job(client, **VAGUE)
    assert job["status"] == "triage"
    assert job["assignment"] is None
    assert job["classification"]["confidence"] < 0.5
    events = (await client.get(f"/internal/v1/jobs/{job['id']}/events")).json()["data"]
    assert events[-1]["type"] == "triaged"
    assert "below the threshold" in events[-1]["reason"]
    triage = (await client.get("/internal/v1/triage")).json()
    assert [j["id"] for j in triage["data"]] == [job["id"]]
    routing = (await client.get(f"/internal/v1/jobs/{job['id']}/routing")).json()
    assert routing["outcome"] == "triage"
    assert routing["chosen"] is None


async def test_no_eligible_team_is_unroutable_and_retried_by_the_sweeper(client, router_settings):
    await create_team(client, name="Inactive clinical", active=False)
    job = await submit_job(client)
    assert job["status"] == "unroutable"
    assert job["assignment"] is None
    events = (await client.get(f"/internal/v1/jobs/{job['id']}/events")).json()["data"]
    assert events[-1]["type"] == "unroutable"
    assert events[-1]["to_status"] == "unroutable"
    routing = (await client.get(f"/internal/v1/jobs/{job['id']}/routing")).json()
    assert routing["excluded"][0]["codes"] == ["inactive"]

    # A team able to take it appears; the sweeper routes the job once its retry time comes.
    team = await create_team(client, name="Clinical Manila", country="PH")
    maker = client._transport.app.state.sessionmaker
    classifier = LexiconClassifier()
    early = await sweep_once(
        maker, settings=router_settings, classifier=classifier, now=datetime.now(UTC)
    )
    assert early.rerouted == 0
    later = datetime.now(UTC) + timedelta(seconds=router_settings.unroutable_retry_seconds + 1)
    report = await sweep_once(maker, settings=router_settings, classifier=classifier, now=later)
    assert report.rerouted == 1
    routed = (await client.get(f"/internal/v1/jobs/{job['id']}")).json()
    assert routed["status"] == "queued"
    assert routed["assignment"]["team_id"] == team["id"]


async def test_policy_filters_apply_at_submission(client):
    await create_team(client, name="India", country="IN", certifications=["HIPAA"])
    ireland = await create_team(
        client, name="Ireland", country="IE", certifications=["HIPAA", "GDPR"]
    )
    job = await submit_job(
        client,
        policy={
            "allowed_countries": ["ie", "CZ"],
            "required_certifications": ["gdpr"],
            "require_e2e": True,
        },
    )
    assert job["assignment"]["team_id"] == ireland["id"]
    assert job["policy"] == {
        "allowed_countries": ["CZ", "IE"],
        "required_certifications": ["GDPR"],
        "require_e2e": True,
    }
    routing = (await client.get(f"/internal/v1/jobs/{job['id']}/routing")).json()
    assert routing["excluded"][0]["codes"] == ["country_not_allowed", "missing_certifications"]


@pytest.mark.parametrize(
    "override",
    [
        {"id": "not-a-uuid"},
        {"tenant_id": "x"},
        {"priority": "urgent"},
        {"service": "astrology"},
        {"due_at": "2026-01-01T10:00:00"},  # no offset: ambiguous
        {"policy": {"allowed_countries": ["XX"]}},
        {"confidential": {"ssn": "123-45-6789"}},  # confidential values never come here
        {"description": "x" * 20_001},
        {"metadata": {"blob": "y" * 9000}},
    ],
)
async def test_bad_submissions_are_422_and_change_nothing(client, override):
    response = await client.post("/internal/v1/jobs", json=job_body(**override))
    body = assert_problem(response, 422)
    assert "123-45-6789" not in response.text
    assert body["errors"]
    listed = (await client.get("/internal/v1/jobs", params={"tenant_id": TENANT})).json()
    assert listed["data"] == []


# ----------------------------------------------------------------------------- leases


async def test_claim_race_has_exactly_one_winner(client):
    await create_team(client)
    job = await submit_job(client)
    first, second = new_uuid(), new_uuid()
    responses = await asyncio.gather(claim(client, job, first), claim(client, job, second))
    assert sorted(r.status_code for r in responses) == [200, 409]
    winner = next(r for r in responses if r.status_code == 200).json()
    loser = next(r for r in responses if r.status_code == 409)
    assert_problem(loser, 409)
    assert winner["status"] == "in_progress"
    assert winner["lease"]["member_id"] in (first, second)
    events = (await client.get(f"/internal/v1/jobs/{job['id']}/events")).json()["data"]
    assert [e["type"] for e in events].count("claimed") == 1


async def test_lease_rules_for_heartbeat_release_and_complete(client, keys_dir):
    await create_team(client)
    job = await submit_job(client)
    team_id = job["assignment"]["team_id"]
    base = f"/internal/v1/teams/{team_id}/jobs/{job['id']}"
    holder, other = new_uuid(), new_uuid()

    # Nothing but claim works on a queued job.
    for action in ("heartbeat", "release", "complete"):
        body = (
            {"member_id": holder, "result": {}} if action == "complete" else {"member_id": holder}
        )
        assert_problem(await client.post(f"{base}/{action}", json=body), 409)

    claimed = (await claim(client, job, holder)).json()
    assert claimed["lease"]["member_id"] == holder
    claimed_expiry = datetime.fromisoformat(claimed["lease"]["expires_at"])
    taken = assert_problem(await claim(client, job, other), 409)
    assert taken["detail"] == "The job is in progress; only a queued job can be claimed."

    # Another member can do nothing with the lease.
    assert_problem(await client.post(f"{base}/heartbeat", json={"member_id": other}), 409)
    assert_problem(await client.post(f"{base}/release", json={"member_id": other}), 409)
    assert_problem(
        await client.post(f"{base}/complete", json={"member_id": other, "result": {"a": 1}}), 409
    )

    beat = await client.post(f"{base}/heartbeat", json={"member_id": holder})
    assert beat.status_code == 200
    assert datetime.fromisoformat(beat.json()["lease"]["expires_at"]) >= claimed_expiry

    released = await client.post(f"{base}/release", json={"member_id": holder, "reason": "lunch"})
    assert released.status_code == 200
    assert released.json()["status"] == "queued"
    assert released.json()["lease"] is None
    assert_problem(await client.post(f"{base}/heartbeat", json={"member_id": holder}), 409)

    reclaimed = await claim(client, job, other)
    assert reclaimed.status_code == 200
    result_ref, receipt = result_receipt(keys_dir, reclaimed.json())
    assert_problem(
        await client.get(f"/internal/v1/jobs/{job['id']}/result", params={"tenant_id": TENANT}),
        409,
    )
    done = await client.post(
        f"{base}/complete",
        json={
            "member_id": other,
            "result": {"summary": "coded 40"},
            "confidential_result_receipt": receipt,
        },
    )
    assert done.status_code == 200
    assert done.json()["status"] == "completed"
    assert done.json()["lease"] is None
    result = await client.get(f"/internal/v1/jobs/{job['id']}/result", params={"tenant_id": TENANT})
    assert result.json() == {
        "result": {"summary": "coded 40"},
        "confidential_result_ref": result_ref,
    }
    # Completed is final.
    assert_problem(
        await client.post(f"{base}/complete", json={"member_id": other, "result": 1}), 409
    )
    assert_problem(
        await client.post(f"/internal/v1/jobs/{job['id']}/cancel", json={"tenant_id": TENANT}), 409
    )

    events = (await client.get(f"/internal/v1/jobs/{job['id']}/events")).json()["data"]
    assert [e["type"] for e in events] == [
        "created",
        "routed",
        "claimed",
        "released",
        "claimed",
        "completed",
    ]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[3]["actor"] == f"member:{holder}"
    assert events[3]["reason"] == "lunch"


async def test_another_teams_job_looks_like_no_job(client):
    await create_team(client)
    other_team = await create_team(client, name="Other", skills=["legal"])
    job = await submit_job(client)
    response = await client.post(
        f"/internal/v1/teams/{other_team['id']}/jobs/{job['id']}/claim",
        json={"member_id": new_uuid()},
    )
    assert_problem(response, 404)
    unknown_team = await client.post(
        f"/internal/v1/teams/{new_uuid()}/jobs/{job['id']}/claim", json={"member_id": new_uuid()}
    )
    assert_problem(unknown_team, 404)


async def test_lease_expiry_is_swept_back_to_the_queue(router_settings, gateway_headers):
    settings = router_settings.model_copy(
        update={"lease_seconds": 1, "sweep_interval_seconds": 0.1}
    )
    async with running(create_app(settings)) as http:
        http.headers.update(gateway_headers)
        await create_team(http)
        job = await submit_job(http)
        member = new_uuid()
        assert (await claim(http, job, member)).status_code == 200
        status = "in_progress"
        for _ in range(60):
            await asyncio.sleep(0.1)
            status = (await http.get(f"/internal/v1/jobs/{job['id']}")).json()["status"]
            if status == "queued":
                break
        assert status == "queued"
        current = (await http.get(f"/internal/v1/jobs/{job['id']}")).json()
        assert current["lease"] is None
        assert current["assignment"]["team_id"] == job["assignment"]["team_id"]
        events = (await http.get(f"/internal/v1/jobs/{job['id']}/events")).json()["data"]
        expired = events[-1]
        assert expired["type"] == "lease_expired"
        assert expired["actor"] == "system"
        assert (expired["from_status"], expired["to_status"]) == ("in_progress", "queued")
        assert member in expired["reason"]
        # The member's late heartbeat is refused; another member may claim it again.
        team_id = job["assignment"]["team_id"]
        late = await http.post(
            f"/internal/v1/teams/{team_id}/jobs/{job['id']}/heartbeat", json={"member_id": member}
        )
        assert_problem(late, 409)
        assert (await claim(http, job, new_uuid())).status_code == 200


async def test_an_expired_lease_cannot_be_used_before_the_sweep(client, router_settings):
    await create_team(client)
    job = await submit_job(client)
    member = new_uuid()
    await claim(client, job, member)
    app = client._transport.app
    # Move the app's clock past the lease: the sweeper has not run (interval is an hour).
    app.state.clock = lambda: (
        datetime.now(UTC) + timedelta(seconds=router_settings.lease_seconds + 1)
    )
    base = f"/internal/v1/teams/{job['assignment']['team_id']}/jobs/{job['id']}"
    for action in ("heartbeat", "release", "grant"):
        body = {"member_id": member}
        if action == "grant":
            body["action"] = "open"
        assert_problem(await client.post(f"{base}/{action}", json=body), 409)
    assert_problem(
        await client.post(f"{base}/complete", json={"member_id": member, "result": None}), 409
    )


# ----------------------------------------------------------------------------- reject


async def test_reject_passes_the_job_on_and_never_back(client):
    first = await create_team(client, name="First", quality=0.95)
    second = await create_team(client, name="Second", quality=0.6)
    job = await submit_job(client)
    assert job["assignment"]["team_id"] == first["id"]
    member = new_uuid()
    await claim(client, job, member)
    # In progress: only the lease holder may reject.
    rejected = await client.post(
        f"/internal/v1/teams/{first['id']}/jobs/{job['id']}/reject",
        json={"member_id": new_uuid(), "reason": "not ours"},
    )
    assert_problem(rejected, 409)
    rejected = await client.post(
        f"/internal/v1/teams/{first['id']}/jobs/{job['id']}/reject",
        json={"member_id": member, "reason": "no oncology expertise"},
    )
    assert rejected.status_code == 200, rejected.text
    moved = rejected.json()
    assert moved["status"] == "queued"
    assert moved["lease"] is None
    assert moved["assignment"]["team_id"] == second["id"]
    routing = (await client.get(f"/internal/v1/jobs/{job['id']}/routing")).json()
    assert {"team_id": first["id"]}.items() <= routing["excluded"][0].items()
    assert "rejected" in routing["excluded"][0]["codes"]

    # The second team declines too (while queued, no member needed): nobody is left.
    parked = await client.post(
        f"/internal/v1/teams/{second['id']}/jobs/{job['id']}/reject", json={"reason": "full"}
    )
    assert parked.status_code == 200
    assert parked.json()["status"] == "unroutable"
    events = (await client.get(f"/internal/v1/jobs/{job['id']}/events")).json()["data"]
    assert [e["type"] for e in events][-2:] == ["rejected", "rejected"]
    assert "no oncology expertise" in events[-2]["reason"]
    assert events[-1]["to_status"] == "unroutable"


# ----------------------------------------------------------------------------- grants


def decode_grant(token: str, keys_dir: Path) -> dict[str, Any]:
    public_key = serialization.load_pem_public_key((keys_dir / "router.pub").read_bytes())
    assert isinstance(public_key, Ed25519PublicKey)
    claims: dict[str, Any] = jwt.decode(token, public_key, algorithms=["EdDSA"], audience="vault")
    return claims


async def test_grants_only_for_the_live_lease_holder(client, keys_dir):
    await create_team(client)
    job = await submit_job(
        client,
        policy={"allowed_countries": None, "required_certifications": [], "require_e2e": True},
    )
    base = f"/internal/v1/teams/{job['assignment']['team_id']}/jobs/{job['id']}"
    holder, other = new_uuid(), new_uuid()
    # Not yet claimed: no grant for anyone.
    assert_problem(
        await client.post(f"{base}/grant", json={"member_id": holder, "action": "open"}), 409
    )
    await claim(client, job, holder)
    assert_problem(
        await client.post(f"{base}/grant", json={"member_id": other, "action": "open"}), 409
    )

    response = await client.post(f"{base}/grant", json={"member_id": holder, "action": "open"})
    assert response.status_code == 200
    body = response.json()
    assert body["tenant_id"] == TENANT
    assert body["require_e2e"] is True
    claims = decode_grant(body["grant"], keys_dir)
    assert claims["iss"] == "router"
    assert claims["aud"] == "vault"
    assert claims["typ"] == "grant"
    assert claims["exp"] - claims["iat"] == 60
    assert claims["jti"]
    assert {
        k: claims[k]
        for k in ("action", "tenant_id", "job_id", "purpose", "ref", "subject", "require_e2e")
    } == {
        "action": "open",
        "tenant_id": TENANT,
        "job_id": job["id"],
        "purpose": "job",
        "ref": job["confidential_ref"],
        "subject": f"member:{holder}",
        "require_e2e": True,
    }
    sealed = await client.post(f"{base}/grant", json={"member_id": holder, "action": "seal"})
    seal_claims = decode_grant(sealed.json()["grant"], keys_dir)
    assert (seal_claims["action"], seal_claims["purpose"], seal_claims["ref"]) == (
        "seal",
        "result",
        None,
    )
    # The grant is not a service credential: the router itself would refuse it as one.
    assert_problem(
        await client.get(
            "/internal/v1/teams", headers={"Authorization": f"Bearer {body['grant']}"}
        ),
        401,
    )
    bad_action = await client.post(f"{base}/grant", json={"member_id": holder, "action": "delete"})
    assert_problem(bad_action, 422)


async def test_open_grant_needs_confidential_data(client):
    await create_team(client)
    job = await submit_job(client, confidential_ref=None)
    assert job["has_confidential"] is False
    holder = new_uuid()
    await claim(client, job, holder)
    base = f"/internal/v1/teams/{job['assignment']['team_id']}/jobs/{job['id']}"
    assert_problem(
        await client.post(f"{base}/grant", json={"member_id": holder, "action": "open"}), 404
    )
    assert (
        await client.post(f"{base}/grant", json={"member_id": holder, "action": "seal"})
    ).status_code == 200


async def test_result_grant_for_the_tenant_only(client, keys_dir):
    await create_team(client)
    job = await submit_job(client)
    holder = new_uuid()
    result_ref, receipt = result_receipt(keys_dir, (await claim(client, job, holder)).json())
    grant_path = f"/internal/v1/jobs/{job['id']}/result-grant"
    assert_problem(await client.post(grant_path, json={"tenant_id": TENANT}), 409)
    done = await client.post(
        f"/internal/v1/teams/{job['assignment']['team_id']}/jobs/{job['id']}/complete",
        json={"member_id": holder, "result": "ok", "confidential_result_receipt": receipt},
    )
    assert done.status_code == 200, done.text
    assert_problem(await client.post(grant_path, json={"tenant_id": OTHER_TENANT}), 404)
    response = await client.post(grant_path, json={"tenant_id": TENANT})
    assert response.status_code == 200
    claims = decode_grant(response.json()["grant"], keys_dir)
    assert claims["subject"] == f"tenant:{TENANT}"
    assert (claims["action"], claims["purpose"], claims["ref"]) == ("open", "result", result_ref)
    assert claims["require_e2e"] is False


# ----------------------------------------------------------------------------- tenants


async def test_another_tenant_sees_nothing(client):
    await create_team(client)
    job = await submit_job(client)
    unknown = new_uuid()
    for path in ("", "/events", "/routing"):
        foreign = await client.get(
            f"/internal/v1/jobs/{job['id']}{path}", params={"tenant_id": OTHER_TENANT}
        )
        missing = await client.get(
            f"/internal/v1/jobs/{unknown}{path}", params={"tenant_id": TENANT}
        )
        assert_problem(foreign, 404)
        assert_problem(missing, 404)
        assert foreign.json()["detail"] == missing.json()["detail"]
    assert_problem(
        await client.get(
            f"/internal/v1/jobs/{job['id']}/result", params={"tenant_id": OTHER_TENANT}
        ),
        404,
    )
    assert_problem(
        await client.post(
            f"/internal/v1/jobs/{job['id']}/cancel", json={"tenant_id": OTHER_TENANT}
        ),
        404,
    )
    listed = (await client.get("/internal/v1/jobs", params={"tenant_id": OTHER_TENANT})).json()
    assert listed["data"] == []
    # The operator view (no tenant_id) sees the job; the owner still can cancel it.
    assert (await client.get(f"/internal/v1/jobs/{job['id']}")).status_code == 200
    cancelled = await client.post(
        f"/internal/v1/jobs/{job['id']}/cancel", json={"tenant_id": TENANT, "reason": "dup"}
    )
    assert cancelled.json()["status"] == "cancelled"
    events = (await client.get(f"/internal/v1/jobs/{job['id']}/events")).json()["data"]
    assert (events[-1]["type"], events[-1]["actor"], events[-1]["reason"]) == (
        "cancelled",
        f"client:{TENANT}",
        "dup",
    )
    # A cancelled job will never have a result: the refusal does not say "yet".
    none = await client.get(f"/internal/v1/jobs/{job['id']}/result", params={"tenant_id": TENANT})
    assert assert_problem(none, 409)["detail"] == "The job is cancelled; it has no result."


# ----------------------------------------------------------------------------- lists


async def test_job_list_pages_newest_first(client):
    await create_team(client)
    ids = [(await submit_job(client))["id"] for _ in range(5)]
    await submit_job(client, tenant_id=OTHER_TENANT)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"tenant_id": TENANT, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/internal/v1/jobs", params=params)).json()
        seen += [job["id"] for job in page["data"]]
        pages += 1
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert pages == 3
    assert seen == list(reversed(ids))
    only_queued = (
        await client.get("/internal/v1/jobs", params={"tenant_id": TENANT, "status": "triage"})
    ).json()
    assert only_queued["data"] == []
    assert_problem(
        await client.get("/internal/v1/jobs", params={"tenant_id": TENANT, "cursor": "garbage!"}),
        400,
    )
    assert_problem(
        await client.get("/internal/v1/jobs", params={"tenant_id": TENANT, "limit": 101}), 422
    )


async def test_team_queue_serves_high_priority_then_oldest(client):
    team = await create_team(client)
    low = await submit_job(client, priority="low")
    normal_1 = await submit_job(client)
    high = await submit_job(client, priority="high")
    normal_2 = await submit_job(client)
    await claim(client, normal_2, new_uuid())
    path = f"/internal/v1/teams/{team['id']}/jobs"
    everything = (await client.get(path)).json()
    assert [j["id"] for j in everything["data"]] == [
        high["id"],
        normal_1["id"],
        normal_2["id"],
        low["id"],
    ]
    queued = (await client.get(path, params={"status": "queued"})).json()
    assert [j["id"] for j in queued["data"]] == [high["id"], normal_1["id"], low["id"]]
    first = (await client.get(path, params={"limit": 3})).json()
    rest = (await client.get(path, params={"limit": 3, "cursor": first["next_cursor"]})).json()
    assert [j["id"] for j in first["data"] + rest["data"]] == [j["id"] for j in everything["data"]]
    assert rest["has_more"] is False
    assert_problem(await client.get(f"/internal/v1/teams/{new_uuid()}/jobs"), 404)


async def test_team_list_filters_and_pages(client):
    created = [
        await create_team(client, name=f"T{i}", tier="KPO", skills=["research"]) for i in range(3)
    ]
    await create_team(client, name="B", tier="BPO", skills=["data_entry"], active=False)
    page = (await client.get("/internal/v1/teams", params={"limit": 2})).json()
    rest = (
        await client.get("/internal/v1/teams", params={"limit": 2, "cursor": page["next_cursor"]})
    ).json()
    assert [t["name"] for t in page["data"] + rest["data"]] == ["T0", "T1", "T2", "B"]
    kpo = (await client.get("/internal/v1/teams", params={"tier": "KPO"})).json()
    assert [t["id"] for t in kpo["data"]] == [t["id"] for t in created]
    inactive = (await client.get("/internal/v1/teams", params={"active": "false"})).json()
    assert [t["name"] for t in inactive["data"]] == ["B"]


# ----------------------------------------------------------------------------- teams


async def test_team_create_read_and_etag(client):
    response = await client.post(
        "/internal/v1/teams",
        json=team_body(
            name="  Manila BPO ",
            country="ph",
            tier="BPO",
            skills=["data_entry", "data_entry"],
            certifications=["iso27001"],
        ),
    )
    assert response.status_code == 201
    team = response.json()
    assert (team["name"], team["country"], team["skills"], team["certifications"]) == (
        "Manila BPO",
        "PH",
        ["data_entry"],
        ["ISO27001"],
    )
    assert team["version"] == 1
    assert response.headers["etag"] == '"1"'
    read = await client.get(f"/internal/v1/teams/{team['id']}")
    assert read.json() == team
    assert read.headers["etag"] == '"1"'
    assert_problem(await client.post("/internal/v1/teams", json=team_body(name="Manila BPO")), 409)
    assert_problem(await client.get(f"/internal/v1/teams/{new_uuid()}"), 404)


@pytest.mark.parametrize(
    "override",
    [
        {"country": "XX"},
        {"timezone": "Mars/Olympus"},
        {"timezone": "../etc/passwd"},
        {"working_hours": {"start": "9am", "end": "18:00", "days": [0]}},
        {"working_hours": {"start": "09:00", "end": "18:00", "days": [7]}},
        {"working_hours": {"start": "09:00", "end": "09:00", "days": [0]}},
        {"tier": "XPO"},
        {"skills": []},
        {"skills": ["astrology"]},
        {"skills": ["data_entry"]},  # a BPO skill on a KPO team
        {"quality": 1.5},
        {"capacity": -1},
        {"languages": ["English"]},
        {"name": ""},
    ],
)
async def test_bad_teams_are_422(client, override):
    assert_problem(await client.post("/internal/v1/teams", json=team_body(**override)), 422)
    assert (await client.get("/internal/v1/teams")).json()["data"] == []


async def test_team_patch_honours_if_match(client):
    team = await create_team(client, capacity=5)
    path = f"/internal/v1/teams/{team['id']}"
    updated = await client.patch(path, json={"capacity": 7}, headers={"If-Match": '"1"'})
    assert updated.status_code == 200
    assert updated.json()["capacity"] == 7
    assert updated.json()["version"] == 2
    assert updated.headers["etag"] == '"2"'
    stale = await client.patch(path, json={"capacity": 9}, headers={"If-Match": '"1"'})
    body = assert_problem(stale, 412)
    assert body["type"].endswith("precondition-failed")
    assert (await client.get(path)).json()["capacity"] == 7
    assert_problem(await client.patch(path, json={"capacity": 9}, headers={"If-Match": "abc"}), 412)
    # Weak ETags and no If-Match at all are accepted.
    assert (
        await client.patch(path, json={"quality": 0.9}, headers={"If-Match": 'W/"2"'})
    ).status_code == 200
    unconditional = await client.patch(path, json={"active": False})
    assert unconditional.json()["version"] == 4
    # Nothing to change (an empty patch, or the values it has): no new version.
    for unchanged in ({}, {"active": False, "capacity": 7}):
        same = await client.patch(path, json=unchanged, headers={"If-Match": '"4"'})
        assert (same.status_code, same.json()["version"], same.headers["etag"]) == (200, 4, '"4"')
    assert unconditional.json()["active"] is False
    assert_problem(await client.patch(path, json={"capacity": None}), 422)
    assert_problem(await client.patch(path, json={"tier": "BPO"}), 422)  # skills are KPO
    switched = await client.patch(path, json={"tier": "BPO", "skills": ["bookkeeping"]})
    assert switched.status_code == 200
    assert switched.json()["tier"] == "BPO"
    assert_problem(
        await client.patch(f"/internal/v1/teams/{new_uuid()}", json={"capacity": 1}), 404
    )
    other = await create_team(client)
    assert_problem(await client.patch(path, json={"name": other["name"]}), 409)


async def test_capacity_counts_queued_and_in_progress(client):
    await create_team(client, capacity=1)
    first = await submit_job(client)
    assert first["status"] == "queued"
    second = await submit_job(client)
    assert second["status"] == "unroutable"
    routing = (await client.get(f"/internal/v1/jobs/{second['id']}/routing")).json()
    assert routing["excluded"][0]["codes"] == ["at_capacity"]


# ----------------------------------------------------------------------------- operators


async def test_manual_route_from_triage_stores_a_labelled_example(client, databases):
    team = await create_team(client, name="Bookkeepers", tier="BPO", skills=["bookkeeping"])
    job = await submit_job(client, **VAGUE)
    assert job["status"] == "triage"
    bad = await client.post(f"/internal/v1/jobs/{job['id']}/route", json={"team_id": new_uuid()})
    assert_problem(bad, 422)
    routed = await client.post(
        f"/internal/v1/jobs/{job['id']}/route", json={"team_id": team["id"], "actor": "operator"}
    )
    assert routed.status_code == 200, routed.text
    body = routed.json()
    assert body["status"] == "queued"
    assert body["assignment"]["team_id"] == team["id"]
    assert body["classification"]["domain"] == "bookkeeping"
    assert body["classification"]["confidence"] == 1.0
    events = (await client.get(f"/internal/v1/jobs/{job['id']}/events")).json()["data"]
    assert (events[-1]["type"], events[-1]["from_status"], events[-1]["actor"]) == (
        "routed_manually",
        "triage",
        "operator",
    )
    routing = (await client.get(f"/internal/v1/jobs/{job['id']}/routing")).json()
    assert routing["outcome"] == "manual"
    assert routing["chosen"]["team_id"] == team["id"]
    assert (await client.get("/internal/v1/triage")).json()["data"] == []

    app = client._transport.app
    async with app.state.sessionmaker() as session:
        examples = await JobRepository(session).examples(job_id=job["id"])
    assert [(e.tier, e.domain, e.source) for e in examples] == [("BPO", "bookkeeping", "operator")]
    assert VAGUE["description"] in examples[0].text


async def test_manual_route_leaves_work_in_progress_alone(client):
    first = await create_team(client)
    second = await create_team(client, name="Other clinical")
    job = await submit_job(client)
    assigned = job["assignment"]["team_id"]
    elsewhere = second["id"] if assigned == first["id"] else first["id"]
    await claim(client, job, new_uuid())
    response = await client.post(
        f"/internal/v1/jobs/{job['id']}/route", json={"team_id": elsewhere}
    )
    assert_problem(response, 409)
    current = (await client.get(f"/internal/v1/jobs/{job['id']}")).json()
    assert current["status"] == "in_progress"
    assert current["assignment"]["team_id"] == assigned


async def test_manual_route_cannot_break_the_data_policy(client):
    team = await create_team(client, name="India", country="IN")
    job = await submit_job(
        client,
        **VAGUE,
        policy={"allowed_countries": ["IE"], "required_certifications": [], "require_e2e": False},
    )
    response = await client.post(
        f"/internal/v1/jobs/{job['id']}/route", json={"team_id": team["id"]}
    )
    body = assert_problem(response, 422)
    assert "not allowed by policy" in body["detail"]
    assert (await client.get(f"/internal/v1/jobs/{job['id']}")).json()["status"] == "triage"


async def test_classify_is_a_dry_run(client):
    team = await create_team(client)
    items = [
        {"title": "AE coding", "description": "Code adverse events with MedDRA for the trial."},
        {"description": "Reconcile invoices in the general ledger."},
        VAGUE,
        {"description": "anything", "service": "clinical"},
    ]
    response = await client.post("/internal/v1/classify", json={"items": items})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["domain"] for r in results[:2]] == ["clinical", "bookkeeping"]
    assert results[0]["team"] == {"id": team["id"], "name": team["name"]}
    assert results[0]["status"] == "queued"
    assert results[1]["team"] is None
    assert results[1]["status"] == "unroutable"
    assert results[2]["status"] == "triage"
    assert results[2]["team"] is None
    assert results[3]["confidence"] == 1.0
    assert results[3]["team"]["id"] == team["id"]
    restricted = await client.post(
        "/internal/v1/classify", json={"items": items[:1], "policy": {"allowed_countries": ["IE"]}}
    )
    assert restricted.json()["results"][0]["team"] is None
    stats = (await client.get("/internal/v1/stats")).json()
    assert stats["by_status"] == {}
    too_many = await client.post(
        "/internal/v1/classify", json={"items": [{"description": "x"}] * 1001}
    )
    assert_problem(too_many, 422)
    assert_problem(await client.post("/internal/v1/classify", json={"items": []}), 422)


async def test_stats(client):
    team = await create_team(client, capacity=5)
    jobs = [await submit_job(client) for _ in range(3)]
    await submit_job(client, **VAGUE)
    await claim(client, jobs[0], new_uuid())
    stats = (await client.get("/internal/v1/stats")).json()
    assert stats["by_status"] == {"queued": 2, "in_progress": 1, "triage": 1}
    # The triaged job carries the model's provisional tier, whichever it is.
    assert sum(stats["by_tier"].values()) == 4
    assert stats["by_tier"]["KPO"] >= 3
    assert stats["by_domain"]["clinical"] == 3
    assert stats["queues"] == [
        {
            "team_id": team["id"],
            "team_name": team["name"],
            "queued": 2,
            "in_progress": 1,
            "capacity": 5,
        }
    ]


async def test_a_job_the_gateway_held_keeps_the_time_it_was_acknowledged(client):
    """The gateway's outbox forwards a job acknowledged while the router was away: its
    creation time (and its "created" event) is when the client was answered, never later
    than the router's clock."""
    await create_team(client)
    acknowledged = datetime.now(UTC) - timedelta(minutes=7)
    held = await submit_job(client, acknowledged_at=acknowledged.isoformat())
    assert datetime.fromisoformat(held["created_at"]) == acknowledged
    assert datetime.fromisoformat(held["updated_at"]) > acknowledged + timedelta(minutes=6)
    events = (await client.get(f"/internal/v1/jobs/{held['id']}/events")).json()["data"]
    assert datetime.fromisoformat(events[0]["at"]) == acknowledged
    assert datetime.fromisoformat(events[1]["at"]) > acknowledged + timedelta(minutes=6)

    before = datetime.now(UTC)
    ahead = await submit_job(client, acknowledged_at=(before + timedelta(hours=1)).isoformat())
    assert before <= datetime.fromisoformat(ahead["created_at"]) <= datetime.now(UTC)

    naive = await client.post(
        "/internal/v1/jobs", json=job_body(acknowledged_at="2026-01-01T00:00:00")
    )
    assert naive.status_code == 422


async def test_the_same_member_key_registered_at_once_is_accepted_every_time(
    client, databases
) -> None:
    """The gateway retries a PUT that timed out, so a slow registration and its retries can
    run at once: all are the key's registration (200), none the unique index's error; another
    key for the member is still 409. Here the first registration is held uncommitted while the
    others arrive, so they all find no key and meet it at the insert."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from services.router.db.models import MemberKey
    from shared import sealed_envelope
    from shared.db import create_engine, utcnow

    def public_key() -> str:
        key = X25519PrivateKey.generate().public_key()
        return sealed_envelope.b64url_encode(sealed_envelope.public_raw(key))

    team = await create_team(client)
    member_id = new_uuid()
    path = f"/internal/v1/teams/{team['id']}/members/{member_id}/key"
    registered = public_key()
    engine = create_engine(databases["router"])
    try:
        async with engine.connect() as first:
            await first.execute(
                insert(MemberKey).values(
                    member_id=member_id,
                    team_id=team["id"],
                    public_key=registered,
                    updated_at=utcnow(),
                )
            )
            retries = [
                asyncio.create_task(client.put(path, json={"public_key": registered}))
                for _ in range(3)
            ]
            await asyncio.sleep(0.5)  # they wait for the first registration's row
            await first.commit()
        answers = await asyncio.gather(*retries)
    finally:
        await engine.dispose()
    assert [answer.status_code for answer in answers] == [200] * 3, [a.text for a in answers]
    assert {answer.json()["public_key"] for answer in answers} == {registered}
    other = await client.put(path, json={"public_key": public_key()})
    assert other.status_code == 409


def _member_public_key() -> str:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from shared import sealed_envelope

    key = X25519PrivateKey.generate().public_key()
    return sealed_envelope.b64url_encode(sealed_envelope.public_raw(key))


async def test_a_lost_member_key_is_forgotten_by_the_operator_not_the_gateway(
    client, databases, monkeypatch
) -> None:
    """The gateway cannot replace a registered key (409); the operator's command, run with the
    router's own settings, forgets it, and the member can then register a new one."""
    team = await create_team(client)
    member_id = new_uuid()
    path = f"/internal/v1/teams/{team['id']}/members/{member_id}/key"
    lost = _member_public_key()
    assert (await client.put(path, json={"public_key": lost})).status_code == 200
    replacement = _member_public_key()
    refused = assert_problem(await client.put(path, json={"public_key": replacement}), 409)
    assert "forget-member-key" in refused["detail"]

    monkeypatch.setenv("TASKROUTE_ROUTER_DATABASE_URL", databases["router"])
    runner = CliRunner()
    forgotten = await asyncio.to_thread(
        runner.invoke, cli, ["router", "forget-member-key", member_id]
    )
    assert forgotten.exit_code == 0, forgotten.output
    assert "x25519-" in forgotten.output
    again = await asyncio.to_thread(runner.invoke, cli, ["router", "forget-member-key", member_id])
    assert again.exit_code == 1  # nothing left to forget
    # Not even from the gateway: a key nothing can be wrapped to (all zeros).
    zeros = "A" * 43
    assert_problem(await client.put(path, json={"public_key": zeros}), 422)
    # Nor the forgotten key itself (its endorsement, public, may still be valid).
    put_back = await client.put(path, json={"public_key": lost})
    assert "forgot this key" in assert_problem(put_back, 409)["detail"]
    registered = await client.put(path, json={"public_key": replacement})
    assert registered.status_code == 200, registered.text
    assert registered.json()["public_key"] == replacement


async def test_a_forget_racing_a_registration_of_the_same_key_stands(
    client, databases, monkeypatch
) -> None:
    """The operator forgets a key while a (compromised) gateway registers it again, between
    the registration's look for a tombstone and its insert. Whichever way they interleave,
    the key ends forgotten: on PostgreSQL the forget waits for the registration's lock, on
    SQLite the registration sees the forget once it writes."""
    team = await create_team(client)
    member_id = new_uuid()
    path = f"/internal/v1/teams/{team['id']}/members/{member_id}/key"
    lost = _member_public_key()
    assert (await client.put(path, json={"public_key": lost})).status_code == 200

    looked, go_on = asyncio.Event(), asyncio.Event()
    real_get = AsyncSession.get

    async def get_then_pause(self: AsyncSession, entity: Any, ident: Any, **kwargs: Any) -> Any:
        found = await real_get(self, entity, ident, **kwargs)
        if entity is ForgottenMemberKey and not looked.is_set():
            looked.set()  # the registration has looked, and found no tombstone
            await go_on.wait()
        return found

    monkeypatch.setattr(AsyncSession, "get", get_then_pause)
    registering = asyncio.create_task(client.put(path, json={"public_key": lost}))
    await looked.wait()
    forgetting = asyncio.create_task(forget_member_key(databases["router"], member_id=member_id))
    await asyncio.wait({forgetting}, timeout=1.0)
    forget_waited = not forgetting.done()
    go_on.set()
    registered, forgotten = await registering, await forgetting
    monkeypatch.setattr(AsyncSession, "get", real_get)
    if databases["router"].startswith("postgresql"):
        assert forget_waited  # for the registration's transaction (its advisory lock)

    assert forgotten == lost
    assert registered.status_code in (200, 409, 503), registered.text
    engine = create_engine(databases["router"])
    try:
        async with create_sessionmaker(engine)() as session:
            keys = (await session.scalars(select(MemberKey.public_key))).all()
            tombstones = (await session.scalars(select(ForgottenMemberKey.public_key))).all()
    finally:
        await engine.dispose()
    assert (list(keys), list(tombstones)) == ([], [lost])
    assert_problem(await client.put(path, json={"public_key": lost}), 409)


@pytest.mark.parametrize("token", ["t1", "", "2026-13-01T00:00:00+00:00", "x" * 65])
async def test_a_submit_whose_outbox_token_is_not_a_time_is_422_and_stores_nothing(client, token):
    await create_team(client)
    body = job_body(outbox_token=token)
    assert_problem(await client.post("/internal/v1/jobs", json=body), 422)
    assert_problem(await client.get(f"/internal/v1/jobs/{body['id']}"), 404)


async def test_a_withdrawn_submission_is_refused_and_stores_nothing(client):
    """The gateway rolled the submission back (its sealed data is being discarded): a submit
    that arrives afterwards with the same outbox token must not store the job, while a fresh
    submission of the same job (a keyed retry: a new outbox row, new data) goes through."""
    await create_team(client)
    body = job_body(outbox_token=outbox_token())
    withdrawal = {"tenant_id": TENANT, "outbox_token": body["outbox_token"]}
    path = f"/internal/v1/jobs/{body['id']}/withdrawals"
    first = await client.post(path, json=withdrawal)
    assert first.status_code == 200, first.text
    assert first.json() == {"withdrawn": True}
    assert (await client.post(path, json=withdrawal)).json() == {"withdrawn": True}

    refused = assert_problem(await client.post("/internal/v1/jobs", json=body), 409)
    assert refused["type"].endswith("/submission-withdrawn")
    assert_problem(await client.get(f"/internal/v1/jobs/{body['id']}"), 404)
    listed = (await client.get("/internal/v1/jobs", params={"tenant_id": TENANT})).json()
    assert listed["data"] == []

    retry_token = outbox_token(seconds_later=9)
    retried = await client.post(
        "/internal/v1/jobs", json={**body, "outbox_token": retry_token, "confidential_ref": "r2"}
    )
    assert retried.status_code == 201, retried.text
    assert retried.json()["id"] == body["id"]
    # The job is stored now: withdrawing the retry's token too changes nothing and says so.
    late = {"tenant_id": TENANT, "outbox_token": retry_token}
    assert (await client.post(path, json=late)).json() == {"withdrawn": False}
    assert (await client.get(f"/internal/v1/jobs/{body['id']}")).status_code == 200


async def test_a_stored_job_is_not_withdrawn(client):
    await create_team(client)
    token = outbox_token()
    job = await submit_job(client, outbox_token=token)
    path = f"/internal/v1/jobs/{job['id']}/withdrawals"
    answer = await client.post(path, json={"tenant_id": TENANT, "outbox_token": token})
    assert answer.json() == {"withdrawn": False}
    # A retry of the stored submission still gets the job back.
    again = await client.post("/internal/v1/jobs", json=job_body(id=job["id"], outbox_token=token))
    assert again.status_code == 200
    # Another tenant's job of that id is not this tenant's: its withdrawal is recorded.
    other = await client.post(path, json={"tenant_id": OTHER_TENANT, "outbox_token": token})
    assert other.json() == {"withdrawn": True}
    assert (await client.get(f"/internal/v1/jobs/{job['id']}")).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"tenant_id": TENANT},
        {"tenant_id": TENANT, "outbox_token": ""},
        {"tenant_id": TENANT, "outbox_token": "x" * 65},
        {"tenant_id": TENANT, "outbox_token": "t"},
        {"tenant_id": "not-a-uuid", "outbox_token": "2026-11-29T11:00:00+00:00"},
        {"tenant_id": TENANT, "outbox_token": "2026-11-29T11:00:00+00:00", "extra": 1},
    ],
)
async def test_bad_withdrawals_are_422_and_change_nothing(client, body):
    await create_team(client)
    job = job_body(outbox_token=outbox_token())
    assert_problem(await client.post(f"/internal/v1/jobs/{job['id']}/withdrawals", json=body), 422)
    assert (await client.post("/internal/v1/jobs", json=job)).status_code == 201
