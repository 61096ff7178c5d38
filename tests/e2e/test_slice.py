"""The vertical slice over real HTTP between three real service processes."""

from __future__ import annotations

import os
import re
import secrets
import signal
import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Platform
from tests.e2e.inspect import dump_database

TEAM: dict[str, Any] = {
    "name": "E2E Clinical Team",
    "country": "IN",
    "timezone": "Asia/Kolkata",
    "working_hours": {"start": "00:00", "end": "23:59", "days": [0, 1, 2, 3, 4, 5, 6]},
    "tier": "KPO",
    "skills": ["clinical", "pharmaceutical"],
    "certifications": ["HIPAA", "ISO27001"],
    "languages": ["en"],
    "capacity": 5,
    "hourly_rate": 30.0,
    "quality": 0.9,
}

CLINICAL_JOB = {
    "title": "Code adverse events from a phase III trial",
    "description": (
        "Code the adverse event narratives from the case report forms of our phase III trial "
        "to MedDRA terms and flag serious adverse events for pharmacovigilance review."
    ),
    "priority": "high",
}


_teams: dict[str, dict[str, Any]] = {}


def _setup_tenant_team_member(
    platform: Platform,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A new tenant and member; one clinical team per platform, so jobs have one place to go:
    the tenants require a certification only that team has (other modules' teams share the
    platform)."""
    with platform.operator() as operator:
        if platform.gateway_url not in _teams:
            certification = f"E2E-{secrets.token_hex(4).upper()}"
            body = {**TEAM, "certifications": [*TEAM["certifications"], certification]}
            team = operator.post("/v1/admin/teams", json=body)
            assert team.status_code == 201, team.text
            _teams[platform.gateway_url] = {**team.json(), "certification": certification}
        team_id = _teams[platform.gateway_url]["id"]
        policy = {"required_certifications": [_teams[platform.gateway_url]["certification"]]}
        tenant = operator.post(
            "/v1/admin/tenants", json={"name": f"Acme {secrets.token_hex(3)}", "policy": policy}
        )
        assert tenant.status_code == 201, tenant.text
        member = operator.post(f"/v1/admin/teams/{team_id}/members", json={"name": "Asha"})
        assert member.status_code == 201, member.text
    return tenant.json(), _teams[platform.gateway_url], member.json()


def test_internal_endpoints_refuse_calls_without_service_credentials(platform: Platform) -> None:
    tenant, _, member = _setup_tenant_team_member(platform)
    attempts = [
        ("POST", f"{platform.urls['router']}/internal/v1/jobs", {"id": "x"}),
        ("GET", f"{platform.urls['router']}/internal/v1/teams", None),
        ("POST", f"{platform.urls['vault']}/internal/v1/records", {"tenant_id": "t"}),
        ("POST", f"{platform.urls['vault']}/internal/v1/records/open", {"grant": "g"}),
    ]
    for method, url, body in attempts:
        for headers in (
            {},
            {"Authorization": f"Bearer {platform.operator_key}"},
            {"Authorization": f"Bearer {tenant['api_key']}"},
            {"Authorization": f"Bearer {member['api_key']}"},
        ):
            response = httpx.request(method, url, json=body, headers=headers, timeout=10)
            assert response.status_code == 401, (url, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")


def test_job_travels_the_whole_slice_and_the_canary_stays_in_the_vault(
    platform: Platform,
) -> None:
    canary = f"CANARY-{secrets.token_hex(8)}"
    result_canary = f"RESULTCANARY-{secrets.token_hex(8)}"
    tenant, team, member = _setup_tenant_team_member(platform)

    with platform.client(tenant["api_key"]) as client, platform.client(member["api_key"]) as worker:
        submitted = client.post(
            "/v1/jobs", json={**CLINICAL_JOB, "confidential": {"patient": canary, "mrn": 4711}}
        )
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()
        assert job["status"] == "queued"
        assert job["classification"]["tier"] == "KPO"
        assert job["classification"]["domain"] == "clinical"
        assert job["assignment"]["team_id"] == team["id"]
        job_id = job["id"]

        queue = worker.get("/v1/team/jobs")
        assert queue.status_code == 200
        assert job_id in [item["id"] for item in queue.json()["data"]]

        # No lease yet: the confidential data stays closed.
        assert worker.get(f"/v1/team/jobs/{job_id}/confidential").status_code == 409

        claimed = worker.post(f"/v1/team/jobs/{job_id}/claim")
        assert claimed.status_code == 200, claimed.text
        assert claimed.json()["status"] == "in_progress"

        confidential = worker.get(f"/v1/team/jobs/{job_id}/confidential")
        assert confidential.status_code == 200, confidential.text
        assert confidential.json() == {"confidential": {"patient": canary, "mrn": 4711}}
        assert confidential.headers["cache-control"] == "no-store"

        completed = worker.post(
            f"/v1/team/jobs/{job_id}/complete",
            json={"result": {"coded_events": 37}, "confidential_result": {"note": result_canary}},
        )
        assert completed.status_code == 200, completed.text

        seen = client.get(f"/v1/jobs/{job_id}")
        assert seen.json()["status"] == "completed"
        result = client.get(f"/v1/jobs/{job_id}/result")
        assert result.status_code == 200, result.text
        assert result.json()["result"] == {"coded_events": 37}
        assert result.json()["confidential_result"] == {"note": result_canary}
        assert result.headers["cache-control"] == "no-store"

        events = client.get(f"/v1/jobs/{job_id}/events").json()["data"]
        transitions = [(event["from_status"], event["to_status"]) for event in events]
        for expected in [
            ("pending", "queued"),
            ("queued", "in_progress"),
            ("in_progress", "completed"),
        ]:
            assert expected in transitions

        # A bad request that carries the canary is refused without echoing it.
        bad = client.post("/v1/jobs", json={**CLINICAL_JOB, "priority": canary})
        assert bad.status_code == 422
        assert canary not in bad.text

    # Give the services a moment to flush their last log lines.
    time.sleep(0.5)
    for secret in (canary, result_canary):
        assert secret not in platform.logs()
        assert secret not in dump_database(platform.database_urls["gateway"])
        assert secret not in dump_database(platform.database_urls["router"])
        assert secret not in dump_database(platform.database_urls["vault"])
    # The vault does hold both, sealed: one record for the job's data, one for the result.
    vault_dump = dump_database(platform.database_urls["vault"])
    assert re.search(r"^## records: ([2-9]|\d\d+) rows$", vault_dump, re.MULTILINE)


def test_another_tenant_cannot_see_the_job(platform: Platform) -> None:
    owner, _, _ = _setup_tenant_team_member(platform)
    stranger, _, _ = _setup_tenant_team_member(platform)
    with platform.client(owner["api_key"]) as client:
        job = client.post("/v1/jobs", json=CLINICAL_JOB).json()
    with platform.client(stranger["api_key"]) as other:
        foreign = other.get(f"/v1/jobs/{job['id']}")
        unknown = other.get("/v1/jobs/00000000-0000-4000-8000-000000000000")
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json()["detail"] == unknown.json()["detail"]


def test_a_killed_service_is_restarted_by_the_supervisor(platform: Platform) -> None:
    old_pid = platform.pid("router")
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if (
                platform.pid("router") != old_pid
                and httpx.get(f"{platform.urls['router']}/healthz", timeout=1).status_code == 200
            ):
                break
        except (httpx.TransportError, FileNotFoundError, ValueError):
            pass
        time.sleep(0.2)
    else:
        pytest.fail("the router was not restarted")
    assert "router exited" in platform.logs()
    tenant, _, _ = _setup_tenant_team_member(platform)
    with platform.client(tenant["api_key"]) as client:
        assert client.post("/v1/jobs", json=CLINICAL_JOB).status_code == 202
