"""Client feedback and the quality rule: the pure rule, then the router's internal API on the
run's real databases (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from services.router.domain.quality import bayesian_average, rating_score, updated_quality
from tests.router.factories import OTHER_TENANT, TENANT, claim, create_team, new_uuid, submit_job

PROBLEM = "application/problem+json"


# ----------------------------------------------------------------------------- the rule


def test_ratings_map_onto_the_quality_scale():
    assert [rating_score(r) for r in (1, 2, 3, 4, 5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    for bad in (0, 6, -1):
        with pytest.raises(ValueError, match="1 to 5"):
            rating_score(bad)


def test_each_rating_moves_quality_towards_itself_and_never_past_it():
    for quality in (0.0, 0.3, 0.8, 1.0):
        for count in (0, 3, 50):
            for rating in range(1, 6):
                moved = updated_quality(
                    quality=quality, ratings_so_far=count, rating=rating, prior_weight=10
                )
                score = rating_score(rating)
                low, high = sorted((quality, score))
                assert low <= moved <= high
                assert 0.0 <= moved <= 1.0


def test_the_first_rating_moves_at_most_one_share_of_the_prior_weight():
    moved = updated_quality(quality=0.8, ratings_so_far=0, rating=1, prior_weight=10)
    assert moved == pytest.approx(0.8 - 0.8 / 11)
    # Later ratings move it less: the evidence so far weighs in.
    later = updated_quality(quality=0.8, ratings_so_far=30, rating=1, prior_weight=10)
    assert 0.8 - later < 0.8 - moved


def test_incremental_updates_are_the_bayesian_average_in_any_order():
    ratings = [5, 1, 4, 4, 2, 5, 3]
    expected = bayesian_average(prior_mean=0.8, prior_weight=10, ratings=ratings)
    for order in (ratings, list(reversed(ratings)), sorted(ratings)):
        quality = 0.8
        for count, rating in enumerate(order):
            quality = updated_quality(
                quality=quality, ratings_so_far=count, rating=rating, prior_weight=10
            )
        assert quality == pytest.approx(expected)


def test_with_no_prior_weight_the_quality_is_the_plain_mean():
    quality = 0.9
    for count, rating in enumerate([1, 3, 5]):
        quality = updated_quality(
            quality=quality, ratings_so_far=count, rating=rating, prior_weight=0
        )
    assert quality == pytest.approx(0.5)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="negative"):
        updated_quality(quality=0.5, ratings_so_far=-1, rating=3, prior_weight=10)
    with pytest.raises(ValueError, match="negative"):
        updated_quality(quality=0.5, ratings_so_far=0, rating=3, prior_weight=-1)


# ----------------------------------------------------------------------------- the API


async def completed_job(client: httpx.AsyncClient, **team: Any) -> tuple[dict[str, Any], str]:
    """A job done by a fresh team; returns (job, team id)."""
    created = await create_team(client, **team)
    job = await submit_job(client)
    assert job["assignment"]["team_id"] == created["id"]
    member = new_uuid()
    assert (await claim(client, job, member)).status_code == 200
    done = await client.post(
        f"/internal/v1/teams/{created['id']}/jobs/{job['id']}/complete",
        json={"member_id": member, "result": {"ok": True}},
    )
    assert done.status_code == 200, done.text
    return done.json(), created["id"]


async def team_of(client: httpx.AsyncClient, team_id: str) -> dict[str, Any]:
    response = await client.get(f"/internal/v1/teams/{team_id}")
    assert response.status_code == 200, response.text
    team: dict[str, Any] = response.json()
    return team


async def events_of(client: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/internal/v1/jobs/{job_id}/events")
    events: list[dict[str, Any]] = response.json()["data"]
    return events


async def rate(client: httpx.AsyncClient, job_id: str, **body: Any) -> httpx.Response:
    return await client.post(
        f"/internal/v1/jobs/{job_id}/feedback", json={"tenant_id": TENANT, **body}
    )


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["detail"]
    return body


async def test_feedback_moves_the_team_quality_once(client):
    job, team_id = await completed_job(client, quality=0.8)
    before = await team_of(client, team_id)

    response = await rate(client, job["id"], rating=5, comment="  Thorough and on time.  ")
    assert response.status_code == 201, response.text
    feedback = response.json()
    expected = updated_quality(quality=0.8, ratings_so_far=0, rating=5, prior_weight=10)
    assert feedback["job_id"] == job["id"]
    assert feedback["team_id"] == team_id
    assert (feedback["rating"], feedback["comment"]) == (5, "Thorough and on time.")
    assert feedback["quality_before"] == 0.8
    assert feedback["quality_after"] == pytest.approx(expected)
    after = await team_of(client, team_id)
    assert after["quality"] == pytest.approx(expected)
    # The team's representation changed, so its ETag version did too.
    assert after["version"] == before["version"] + 1

    # Recorded on the job's timeline, without changing its status.
    event = (await events_of(client, job["id"]))[-1]
    assert event["type"] == "feedback"
    assert event["actor"] == f"client:{TENANT}"
    assert event["reason"] == "rated 5/5"
    assert (event["from_status"], event["to_status"]) == (None, None)
    stored = (await client.get(f"/internal/v1/jobs/{job['id']}")).json()
    assert stored["status"] == "completed"

    # A second rating for the same job is refused and changes nothing.
    again = await rate(client, job["id"], rating=1)
    body = assert_problem(again, 409)
    assert body["type"].endswith("feedback-exists")
    assert (await team_of(client, team_id))["quality"] == pytest.approx(expected)
    assert len(await events_of(client, job["id"])) == event["seq"]


async def test_ratings_accumulate_as_a_bayesian_average(client):
    team = await create_team(client, quality=0.8, capacity=10)
    ratings = [1, 2, 5]
    for rating in ratings:
        job = await submit_job(client)
        member = new_uuid()
        assert (await claim(client, job, member)).status_code == 200
        done = await client.post(
            f"/internal/v1/teams/{team['id']}/jobs/{job['id']}/complete",
            json={"member_id": member, "result": {}},
        )
        assert done.status_code == 200, done.text
        assert (await rate(client, job["id"], rating=rating)).status_code == 201
    expected = bayesian_average(prior_mean=0.8, prior_weight=10, ratings=ratings)
    assert (await team_of(client, team["id"]))["quality"] == pytest.approx(expected)


async def test_an_operator_setting_quality_starts_a_new_prior(client):
    job, team_id = await completed_job(client, quality=0.8)
    assert (await rate(client, job["id"], rating=1)).status_code == 201
    patched = await client.patch(f"/internal/v1/teams/{team_id}", json={"quality": 0.5})
    assert patched.status_code == 200, patched.text
    # The next rating counts as the first against the operator's 0.5.
    next_job = await submit_job(client)
    member = new_uuid()
    assert (await claim(client, next_job, member)).status_code == 200
    await client.post(
        f"/internal/v1/teams/{team_id}/jobs/{next_job['id']}/complete",
        json={"member_id": member, "result": {}},
    )
    assert (await rate(client, next_job["id"], rating=5)).status_code == 201
    expected = updated_quality(quality=0.5, ratings_so_far=0, rating=5, prior_weight=10)
    assert (await team_of(client, team_id))["quality"] == pytest.approx(expected)


async def test_a_team_created_without_quality_starts_at_the_prior_mean(client):
    body = {
        "name": "Cebu Support",
        "country": "PH",
        "timezone": "Asia/Manila",
        "tier": "BPO",
        "skills": ["customer_support"],
        "capacity": 3,
        "hourly_rate": 9,
    }
    response = await client.post("/internal/v1/teams", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["quality"] == 0.8


async def test_feedback_only_for_the_tenants_completed_job(client):
    job, team_id = await completed_job(client, quality=0.7)
    queued = await submit_job(client)

    # Another tenant's job and an unknown job look the same.
    other = await client.post(
        f"/internal/v1/jobs/{job['id']}/feedback", json={"tenant_id": OTHER_TENANT, "rating": 1}
    )
    unknown = await rate(client, new_uuid(), rating=1)
    assert assert_problem(other, 404)["detail"] == assert_problem(unknown, 404)["detail"]
    # Not completed yet.
    not_done = assert_problem(await rate(client, queued["id"], rating=1), 409)
    assert "completed jobs only" in not_done["detail"]
    # Nothing of that changed the team or the timelines.
    assert (await team_of(client, team_id))["quality"] == 0.7
    assert "feedback" not in [e["type"] for e in await events_of(client, job["id"])]
    assert "feedback" not in [e["type"] for e in await events_of(client, queued["id"])]


@pytest.mark.parametrize(
    "body",
    [
        {"rating": 0},
        {"rating": 6},
        {"rating": 4.5},
        {"rating": "5"},
        {"rating": True},
        {"rating": None},
        {},
        {"rating": 3, "comment": "x" * 2001},
        {"rating": 3, "extra": "field"},
        {"rating": 3, "tenant_id": "not-a-uuid"},
    ],
)
async def test_bad_feedback_is_422_and_changes_nothing(client, body):
    job, team_id = await completed_job(client, quality=0.7)
    response = await client.post(
        f"/internal/v1/jobs/{job['id']}/feedback", json={"tenant_id": TENANT, **body}
    )
    assert_problem(response, 422)
    assert (await team_of(client, team_id))["quality"] == 0.7
    assert "feedback" not in [e["type"] for e in await events_of(client, job["id"])]
    # The job can still be rated properly afterwards.
    assert (await rate(client, job["id"], rating=3)).status_code == 201


async def test_concurrent_feedback_on_one_job_counts_once(client):
    job, team_id = await completed_job(client, quality=0.8)
    answers = await asyncio.gather(*(rate(client, job["id"], rating=1) for _ in range(5)))
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409, 409]
    expected = updated_quality(quality=0.8, ratings_so_far=0, rating=1, prior_weight=10)
    assert (await team_of(client, team_id))["quality"] == pytest.approx(expected)
    assert [e["type"] for e in await events_of(client, job["id"])].count("feedback") == 1


async def test_concurrent_feedback_on_one_team_loses_no_rating(client):
    team = await create_team(client, quality=0.8, capacity=10)
    jobs = []
    for _ in range(4):
        job = await submit_job(client)
        member = new_uuid()
        assert (await claim(client, job, member)).status_code == 200
        done = await client.post(
            f"/internal/v1/teams/{team['id']}/jobs/{job['id']}/complete",
            json={"member_id": member, "result": {}},
        )
        assert done.status_code == 200
        jobs.append(job)
    ratings = [5, 1, 5, 2]
    answers = await asyncio.gather(
        *(rate(client, job["id"], rating=r) for job, r in zip(jobs, ratings, strict=True))
    )
    assert [a.status_code for a in answers] == [201] * 4
    # Every rating counted exactly once, whatever order the database serialised them in.
    expected = bayesian_average(prior_mean=0.8, prior_weight=10, ratings=ratings)
    assert (await team_of(client, team["id"]))["quality"] == pytest.approx(expected)
