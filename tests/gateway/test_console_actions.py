"""Console actions against the real router and vault in-process: the same effects as the API,
webhook events included, and the confidential data only in the answer meant to carry it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from tests.e2e.conftest import free_port
from tests.gateway.conftest import OPERATOR_KEY, Platform
from tests.gateway.test_api import BOOKKEEPING_JOB, BOOKKEEPING_TEAM, bearer, create_tenant
from tests.gateway.test_console_sessions import sign_in

CANARY = "CANARY-console-actions-4d1e"


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf-token" content="([0-9a-f]{64})"', page)
    assert found
    return found.group(1)


@asynccontextmanager
async def console_client(platform: Platform, key: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client of the console, signed in with ``key``."""
    transport = httpx.ASGITransport(app=platform.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        answer = await sign_in(client, key)
        assert answer.status_code == 303, answer.text
        yield client


async def event_types(platform: Platform, client_key: str, endpoint_id: str) -> list[str]:
    answer = await platform.client.get(
        f"/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=bearer(client_key)
    )
    assert answer.status_code == 200, answer.text
    return sorted(d["event_type"] for d in answer.json()["data"])


async def test_member_and_operator_actions_queue_the_apis_webhook_events(platform):
    gw = platform.client
    tenant = await create_tenant(platform)
    client_key = tenant["api_key"]
    team = (
        await gw.post("/v1/admin/teams", json=BOOKKEEPING_TEAM, headers=platform.operator)
    ).json()
    member = (
        await gw.post(
            f"/v1/admin/teams/{team['id']}/members",
            json={"name": "Priya"},
            headers=platform.operator,
        )
    ).json()
    # Nothing listens on the port: deliveries wait in the outbox, which is what is checked.
    endpoint = (
        await gw.post(
            "/v1/webhook-endpoints",
            json={"url": f"http://127.0.0.1:{free_port()}/hooks"},
            headers=bearer(client_key),
        )
    ).json()
    job = (
        await gw.post(
            "/v1/jobs",
            json={**BOOKKEEPING_JOB, "confidential": {"iban": CANARY}},
            headers=bearer(client_key),
        )
    ).json()
    assert job["status"] == "queued", job
    job_id = job["id"]

    async with console_client(platform, member["api_key"]) as console:
        queue = await console.get("/console/queue")
        assert queue.status_code == 200
        assert job_id in queue.text
        assert CANARY not in queue.text
        csrf = csrf_of(queue.text)
        claimed = await console.post(f"/console/jobs/{job_id}/claim", data={"csrf_token": csrf})
        assert claimed.status_code == 303
        page = await console.get(claimed.headers["location"])
        assert page.status_code == 200
        assert CANARY not in page.text
        assert page.headers["cache-control"] == "no-store"
        secret = await console.post(
            f"/console/jobs/{job_id}/confidential",
            headers={"X-CSRF-Token": csrf, "Accept": "application/json"},
        )
        assert secret.status_code == 200
        assert secret.json() == {"confidential": {"iban": CANARY}}
        assert secret.headers["cache-control"] == "no-store"
        # A result that is not valid JSON is refused without echoing what was typed.
        bad = await console.post(
            f"/console/jobs/{job_id}/complete",
            data={"csrf_token": csrf, "result": "{" + CANARY},
        )
        assert bad.status_code == 422
        assert CANARY not in bad.text
        done = await console.post(
            f"/console/jobs/{job_id}/complete",
            data={"csrf_token": csrf, "result": "Reconciled, 3 entries posted"},
        )
        assert done.status_code == 303
        assert done.headers["location"] == "/console/queue?done=completed"

    result = await gw.get(f"/v1/jobs/{job_id}/result", headers=bearer(client_key))
    assert result.json()["result"] == {"text": "Reconciled, 3 entries posted"}
    types = await event_types(platform, client_key, endpoint["id"])
    assert types == ["job.completed", "job.in_progress", "job.queued"]

    triage = (
        await gw.post(
            "/v1/jobs",
            json={
                "title": "Quick help needed",
                "description": "Please take care of the usual things for us this week.",
            },
            headers=bearer(client_key),
        )
    ).json()
    assert triage["status"] == "triage"
    async with console_client(platform, OPERATOR_KEY) as console:
        page = await console.get("/console/triage")
        assert triage["id"] in page.text
        routed = await console.post(
            f"/console/triage/{triage['id']}/route",
            data={"csrf_token": csrf_of(page.text), "team_id": team["id"], "domain": "bookkeeping"},
        )
        assert routed.status_code == 303, routed.text
        detail = await console.get(f"/console/ops/jobs/{triage['id']}")
        assert detail.status_code == 200
        assert "manual" in detail.text or "operator" in detail.text
    job_now: dict[str, Any] = (
        await gw.get(f"/v1/admin/jobs/{triage['id']}", headers=platform.operator)
    ).json()
    assert job_now["status"] == "queued"
    types = await event_types(platform, client_key, endpoint["id"])
    assert types.count("job.queued") == 2
    assert "job.triage" in types
