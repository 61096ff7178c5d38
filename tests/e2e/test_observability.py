"""Observability over three real processes: one request id in every service's logs, /metrics."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Platform

TEAM = {
    "name": "Observability Clinical Team",
    "country": "IN",
    "timezone": "Asia/Kolkata",
    "working_hours": {"start": "00:00", "end": "23:59", "days": [0, 1, 2, 3, 4, 5, 6]},
    "tier": "KPO",
    "skills": ["clinical", "pharmaceutical"],
    "certifications": ["HIPAA"],
    "languages": ["en"],
    "capacity": 5,
    "hourly_rate": 30.0,
    "quality": 0.9,
}
JOB = {
    "title": "Code adverse events from a phase III trial",
    "description": (
        "Code the adverse event narratives from the case report forms of our phase III trial "
        "to MedDRA terms and flag serious adverse events for pharmacovigilance review."
    ),
    "confidential": {"patient": "J. Doe"},
}
# The log file is written by three processes; give the last lines a moment to land.
LOG_WAIT_SECONDS = 5.0


def log_entries(platform: Platform) -> list[dict[str, Any]]:
    """Every JSON log line the platform wrote so far (other lines, e.g. the banner, skipped)."""
    entries = []
    for line in platform.logs().splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            entry = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def services_logging(platform: Platform, request_id: str) -> set[str]:
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while True:
        seen = {
            str(entry.get("service"))
            for entry in log_entries(platform)
            if entry.get("request_id") == request_id
        }
        if seen >= {"gateway", "router", "vault"} or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


def samples(url: str, name: str) -> list[tuple[dict[str, str], float]]:
    scraped = httpx.get(f"{url}/metrics", timeout=10)
    assert scraped.status_code == 200, scraped.text
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(scraped.text)
        for sample in family.samples
        if sample.name == name
    ]


def submit_job(platform: Platform, request_id: str) -> dict[str, Any]:
    with platform.operator() as operator:
        tenant = operator.post("/v1/admin/tenants", json={"name": f"Obs {secrets.token_hex(3)}"})
        assert tenant.status_code == 201, tenant.text
        team = operator.post(
            "/v1/admin/teams", json={**TEAM, "name": f"Obs {secrets.token_hex(3)}"}
        )
        assert team.status_code == 201, team.text
    with platform.client(tenant.json()["api_key"]) as client:
        submitted = client.post("/v1/jobs", json=JOB, headers={"X-Request-ID": request_id})
    assert submitted.status_code == 202, submitted.text
    assert submitted.headers["x-request-id"] == request_id
    job: dict[str, Any] = submitted.json()
    return job


def test_one_request_id_appears_in_the_logs_of_all_three_services(platform: Platform) -> None:
    request_id = f"obs-{secrets.token_hex(8)}"
    job = submit_job(platform, request_id)
    assert job["status"] == "queued"
    # The gateway sealed the confidential data in the vault and submitted the job to the router,
    # forwarding the client's request id each time.
    assert services_logging(platform, request_id) == {"gateway", "router", "vault"}


def test_each_service_serves_its_own_metrics(platform: Platform) -> None:
    submit_job(platform, f"obs-{secrets.token_hex(8)}")

    gateway = samples(platform.urls["gateway"], "taskroute_http_request_duration_seconds_count")
    assert any(
        labels["service"] == "gateway"
        and labels["route"] == "/v1/jobs"
        and labels["method"] == "POST"
        and labels["status_class"] == "2xx"
        and value >= 1
        for labels, value in gateway
    )
    assert all(labels["service"] == "gateway" for labels, _ in gateway)  # its own registry

    decisions = samples(platform.urls["router"], "taskroute_router_routing_decisions_total")
    assert any(labels["outcome"] == "queued" and value >= 1 for labels, value in decisions)
    jobs = samples(platform.urls["router"], "taskroute_router_jobs")
    assert any(labels["status"] == "queued" and value >= 1 for labels, value in jobs)

    operations = samples(platform.urls["vault"], "taskroute_vault_operations_total")
    assert any(
        labels["action"] == "seal" and labels["outcome"] == "ok" and value >= 1
        for labels, value in operations
    )
    assert samples(platform.urls["vault"], "taskroute_vault_sealed") == [({}, 0.0)]
