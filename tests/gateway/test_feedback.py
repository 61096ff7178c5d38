"""POST /v1/jobs/{id}/feedback: the gateway wired to the real router and vault (in-process), and
alone for what it refuses itself."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway.conftest import Platform
from tests.gateway.test_api import (
    BOOKKEEPING_JOB,
    _setup_team_and_member,
    assert_problem,
    bearer,
    create_tenant,
)


async def completed(platform: Platform) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """A job done for a new tenant: (job, the tenant's client headers, the team)."""
    gw = platform.client
    tenant = await create_tenant(platform)
    team, member = await _setup_team_and_member(platform)
    client_key, member_key = bearer(tenant["api_key"]), bearer(member["api_key"])
    job = (await gw.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=client_key)).json()
    assert (await gw.post(f"/v1/team/jobs/{job['id']}/claim", headers=member_key)).is_success
    done = await gw.post(
        f"/v1/team/jobs/{job['id']}/complete", json={"result": {"ok": 1}}, headers=member_key
    )
    assert done.status_code == 200, done.text
    return job, client_key, team


async def team_quality(platform: Platform, team_id: str) -> float:
    response = await platform.client.get(f"/v1/admin/teams/{team_id}", headers=platform.operator)
    assert response.status_code == 200, response.text
    return float(response.json()["quality"])


async def test_a_client_rates_its_completed_job_once(platform):
    job, client_key, team = await completed(platform)
    before = await team_quality(platform, team["id"])
    response = await platform.client.post(
        f"/v1/jobs/{job['id']}/feedback",
        json={"rating": 2, "comment": "Two ledgers were left unreconciled."},
        headers=client_key,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["job_id"] == job["id"]
    assert (body["rating"], body["comment"]) == (2, "Two ledgers were left unreconciled.")
    assert body["created_at"]
    # The client is not shown the team's internal score.
    assert "quality_before" not in body
    assert "quality_after" not in body
    assert "team_id" not in body
    # The operator sees the team's quality moved down (2 stars = 0.25 on the quality scale).
    after = await team_quality(platform, team["id"])
    assert 0.25 < after < before

    # The timeline shows it.
    events = (await platform.client.get(f"/v1/jobs/{job['id']}/events", headers=client_key)).json()
    feedback = events["data"][-1]
    assert feedback["type"] == "feedback"
    assert feedback["reason"] == "rated 2/5"
    assert feedback["actor"].startswith("client:")

    # A second feedback: 409 problem+json, and the quality stays where it was.
    again = await platform.client.post(
        f"/v1/jobs/{job['id']}/feedback", json={"rating": 5}, headers=client_key
    )
    problem = assert_problem(again, 409)
    assert "rated once" in problem["detail"]
    assert await team_quality(platform, team["id"]) == after


async def test_feedback_is_tenant_scoped_and_needs_a_completed_job(platform):
    job, _client_key, team = await completed(platform)
    quality = await team_quality(platform, team["id"])
    stranger = bearer((await create_tenant(platform, name="Other Corp"))["api_key"])
    theirs = await platform.client.post(
        f"/v1/jobs/{job['id']}/feedback", json={"rating": 1}, headers=stranger
    )
    unknown = await platform.client.post(
        "/v1/jobs/0b7e1c9e-9a55-4a52-8a0c-5b7a7ad6f0a1/feedback",
        json={"rating": 1},
        headers=stranger,
    )
    malformed = await platform.client.post(
        "/v1/jobs/not-a-job/feedback", json={"rating": 1}, headers=stranger
    )
    # Another tenant's job looks exactly like an unknown one; a malformed id is unknown too.
    assert assert_problem(theirs, 404)["detail"] == assert_problem(unknown, 404)["detail"]
    assert_problem(malformed, 404)

    open_job = await platform.client.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=stranger)
    assert open_job.status_code == 202, open_job.text
    early = await platform.client.post(
        f"/v1/jobs/{open_job.json()['id']}/feedback", json={"rating": 4}, headers=stranger
    )
    assert_problem(early, 409)
    assert await team_quality(platform, team["id"]) == quality

    # Members and operators do not rate jobs: the key's role decides.
    _team, member = await _setup_member(platform, team["id"])
    for headers in (bearer(member["api_key"]), platform.operator):
        refused = await platform.client.post(
            f"/v1/jobs/{job['id']}/feedback", json={"rating": 5}, headers=headers
        )
        assert_problem(refused, 403)
    assert await team_quality(platform, team["id"]) == quality


async def _setup_member(platform: Platform, team_id: str) -> tuple[str, dict[str, Any]]:
    member = await platform.client.post(
        f"/v1/admin/teams/{team_id}/members", json={"name": "Arjun"}, headers=platform.operator
    )
    assert member.status_code == 201, member.text
    return team_id, member.json()


async def test_a_retried_feedback_with_an_idempotency_key_replays_the_answer(platform):
    job, client_key, team = await completed(platform)
    headers = {**client_key, "Idempotency-Key": "rate-job-1"}
    first = await platform.client.post(
        f"/v1/jobs/{job['id']}/feedback", json={"rating": 4}, headers=headers
    )
    assert first.status_code == 201, first.text
    quality = await team_quality(platform, team["id"])
    replay = await platform.client.post(
        f"/v1/jobs/{job['id']}/feedback", json={"rating": 4}, headers=headers
    )
    assert replay.status_code == 201
    assert replay.json() == first.json()
    # The retry reached nobody: the rating counted once.
    assert await team_quality(platform, team["id"]) == quality
    # The same key with another body is a mistake the gateway names.
    reused = await platform.client.post(
        f"/v1/jobs/{job['id']}/feedback", json={"rating": 1}, headers=headers
    )
    assert_problem(reused, 422)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rating": 0}, "rating"),
        ({"rating": 6}, "rating"),
        ({"rating": "5"}, "rating"),
        ({"rating": 3.5}, "rating"),
        ({"rating": True}, "rating"),
        ({}, "rating"),
        ({"rating": 3, "comment": "x" * 2001}, "comment"),
        ({"rating": 3, "team_id": "abc"}, "team_id"),
    ],
)
async def test_bad_feedback_is_422_before_anything_is_asked(gateway_alone, body, field):
    tenant = await create_tenant(gateway_alone)
    response = await gateway_alone.client.post(
        "/v1/jobs/0b7e1c9e-9a55-4a52-8a0c-5b7a7ad6f0a1/feedback",
        json=body,
        headers=bearer(tenant["api_key"]),
    )
    # The router is unreachable here: a 422 proves the gateway refused it on its own.
    problem = assert_problem(response, 422)
    assert field in response.text
    assert problem["status"] == 422
