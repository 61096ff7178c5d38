"""A team that stops meeting a job's data policy (its country or certifications changed after
the job was routed there) loses the job: the team change moves its queued and leased jobs on,
and every claim and read of the data checks the policy again. On the run's real databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import update

from services.router.db.models import Team
from tests.router.factories import claim, create_team, new_uuid, submit_job
from tests.router.test_lifecycle import Router, router_at

HIPAA_ONLY = {"allowed_countries": None, "required_certifications": ["HIPAA"]}
INDIA_OR_IRELAND = {"allowed_countries": ["IE", "IN"], "required_certifications": []}


@pytest.fixture
async def router(router_settings, gateway_headers) -> AsyncIterator[Router]:
    async with router_at(router_settings, gateway_headers) as running_router:
        yield running_router


async def _patch_team(router: Router, team_id: str, **changes: Any) -> dict[str, Any]:
    response = await router.http.patch(f"/internal/v1/teams/{team_id}", json=changes)
    assert response.status_code == 200, response.text
    team: dict[str, Any] = response.json()
    return team


async def _grant(router: Router, job: dict[str, Any], member_id: str) -> Any:
    team_id = job["assignment"]["team_id"]
    return await router.http.post(
        f"/internal/v1/teams/{team_id}/jobs/{job['id']}/grant",
        json={"member_id": member_id, "action": "open"},
    )


async def test_a_team_losing_a_certification_hands_on_the_jobs_that_need_it(router: Router):
    pune = await create_team(router.http, name="Pune Clinical", quality=0.95)
    dublin = await create_team(router.http, name="Dublin Clinical", country="IE", quality=0.6)
    queued = await submit_job(router.http, policy=HIPAA_ONLY)
    leased = await submit_job(router.http, policy=HIPAA_ONLY)
    unaffected = await submit_job(router.http)
    assert {j["assignment"]["team_id"] for j in (queued, leased, unaffected)} == {pune["id"]}
    member = new_uuid()
    assert (await claim(router.http, leased, member)).status_code == 200

    await _patch_team(router, pune["id"], certifications=[])

    for job_id in (queued["id"], leased["id"]):
        moved = await router.job(job_id)
        assert moved["status"] == "queued"
        assert moved["assignment"]["team_id"] == dublin["id"]
        assert moved["lease"] is None
        event = (await router.events(job_id))[-1]
        assert (event["type"], event["actor"]) == ("rerouted", "system")
        assert "Pune Clinical no longer meets the job's data policy" in event["reason"]
        assert "missing certification(s): HIPAA" in event["reason"]
        assert "routed to Dublin Clinical" in event["reason"]
    assert (await router.events(leased["id"]))[-1]["from_status"] == "in_progress"
    # The job whose policy asks for no certification stays where it was.
    kept = await router.job(unaffected["id"])
    assert (kept["status"], kept["assignment"]["team_id"]) == ("queued", pune["id"])
    assert (await router.events(unaffected["id"]))[-1]["type"] == "routed"
    # The former lease holder can no longer read the data.
    refused = await _grant(router, leased | {"assignment": {"team_id": pune["id"]}}, member)
    assert refused.status_code == 404, refused.text


async def test_a_team_moving_country_hands_on_its_jobs_or_parks_them(router: Router):
    pune = await create_team(router.http, name="Pune Clinical")
    job = await submit_job(router.http, policy=INDIA_OR_IRELAND)
    anywhere = await submit_job(router.http)

    await _patch_team(router, pune["id"], country="PH", timezone="Asia/Manila")

    parked = await router.job(job["id"])
    assert parked["status"] == "unroutable"
    assert parked["assignment"] is None
    event = (await router.events(job["id"]))[-1]
    assert event["type"] == "rerouted"
    assert "country PH is not allowed by the job's policy" in event["reason"]
    assert (await router.job(anywhere["id"]))["assignment"]["team_id"] == pune["id"]


async def test_other_team_changes_move_nothing(router: Router):
    pune = await create_team(router.http, name="Pune Clinical", certifications=["HIPAA", "GDPR"])
    await create_team(router.http, name="Dublin Clinical", country="IE", quality=0.1)
    job = await submit_job(router.http, policy=HIPAA_ONLY | INDIA_OR_IRELAND)
    before = await router.events(job["id"])

    await _patch_team(router, pune["id"], quality=0.5, capacity=3)
    await _patch_team(router, pune["id"], certifications=["HIPAA"], country="IE")

    assert (await router.job(job["id"]))["assignment"]["team_id"] == pune["id"]
    assert await router.events(job["id"]) == before


async def test_claims_and_reads_check_the_policy_the_move_has_not_reached(router: Router):
    """A team changed outside the update route (or between the move and a claim) holds a
    job it no longer may: its members can neither claim it nor read its data."""
    pune = await create_team(router.http, name="Pune Clinical")
    waiting = await submit_job(router.http, policy=HIPAA_ONLY)
    leased = await submit_job(router.http, policy=HIPAA_ONLY)
    member = new_uuid()
    assert (await claim(router.http, leased, member)).status_code == 200
    assert (await _grant(router, leased, member)).status_code == 200
    async with router.app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(Team).where(Team.id == pune["id"]).values(certifications=["GDPR"])
        )

    refused = await claim(router.http, waiting, new_uuid())
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert problem["type"].endswith("/team-not-eligible")
    assert "missing certification(s): HIPAA" in problem["detail"]
    refused = await _grant(router, leased, member)
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"].endswith("/team-not-eligible")
    # Nothing changed for either job.
    assert (await router.job(waiting["id"]))["status"] == "queued"
    assert (await router.job(leased["id"]))["lease"]["member_id"] == member
