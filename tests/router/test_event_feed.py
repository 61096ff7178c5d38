"""The router's event feed (api/events.py): what the gateway turns into webhooks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from services.router.db.models import JobEventOutbox
from services.router.domain.classifier import LexiconClassifier
from services.router.sweeper import sweep_once
from tests.router.factories import OTHER_TENANT, TENANT, claim, create_team, new_uuid, submit_job
from tests.router.test_api import assert_problem

FEED = "/internal/v1/events/unpublished"
PUBLISHED = "/internal/v1/events/published"


async def feed(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get(FEED, params=params)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def publish(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> int:
    response = await client.post(PUBLISHED, json={"ids": [event["id"] for event in events]})
    assert response.status_code == 200, response.text
    published: int = response.json()["published"]
    return published


async def test_changes_wait_in_the_feed_until_the_gateway_has_them(client):
    await create_team(client)
    job = await submit_job(client)
    # The submit's routing, not its creation (the submit's answer told the client that).
    (routed,) = await feed(client)
    assert (routed["seq"], routed["type"], routed["to_status"]) == (2, "routed", "queued")
    assert (routed["job_id"], routed["tenant_id"]) == (job["id"], job["tenant_id"])
    assert routed["job"]["id"] == job["id"]
    assert (await claim(client, job, new_uuid())).status_code == 200
    routed_again, claimed = await feed(client, with_jobs_of=[job["tenant_id"]])
    assert routed_again["id"] == routed["id"]  # still waiting: nothing marked it
    assert (claimed["seq"], claimed["to_status"]) == (3, "in_progress")
    # The job as it is now rides with every event: the earlier one shows the claim too.
    assert routed_again["job"]["status"] == claimed["job"]["status"] == "in_progress"
    assert await publish(client, [routed]) == 1
    assert [event["id"] for event in await feed(client)] == [claimed["id"]]
    # A second replica, or a retried call, marking the same events changes nothing.
    assert await publish(client, [routed, claimed]) == 1
    assert await publish(client, [routed, claimed]) == 0
    assert await feed(client) == []


async def test_the_feed_is_oldest_first_a_page_at_a_time(client):
    await create_team(client)
    jobs = [await submit_job(client) for _ in range(5)]
    first = await feed(client, limit=2)
    assert [event["job_id"] for event in first] == [job["id"] for job in jobs[:2]]
    await publish(client, first)
    rest = await feed(client, limit=10)
    assert [event["job_id"] for event in rest] == [job["id"] for job in jobs[2:]]


async def test_changes_the_router_makes_alone_are_in_the_feed(client, router_settings):
    """A lease expiring and an unroutable job routed later: no gateway request made them."""
    team = await create_team(client)
    job = await submit_job(client)
    assert (await claim(client, job, new_uuid())).status_code == 200
    parked = await submit_job(client, tenant_id=job["tenant_id"], service="legal")
    assert parked["status"] == "unroutable"
    await publish(client, await feed(client))
    legal = await create_team(client, name="Legal Dublin", skills=["legal"], tier="KPO")
    assert legal["id"] != team["id"]
    maker = client._transport.app.state.sessionmaker
    later = datetime.now(UTC) + timedelta(
        seconds=max(router_settings.lease_seconds, router_settings.unroutable_retry_seconds) + 1
    )
    report = await sweep_once(
        maker, settings=router_settings, classifier=LexiconClassifier(), now=later
    )
    assert (report.requeued, report.rerouted) == (1, 1)
    events = {e["job_id"]: e for e in await feed(client, with_jobs_of=[job["tenant_id"]])}
    assert events[job["id"]]["type"] == "lease_expired"
    assert events[job["id"]]["to_status"] == "queued"
    assert events[parked["id"]]["type"] == "routed"
    assert events[parked["id"]]["job"]["assignment"]["team_id"] == legal["id"]


async def test_a_rating_is_not_news_to_the_client(client):
    await create_team(client)
    job = await submit_job(client)
    await publish(client, await feed(client))
    team_id = job["assignment"]["team_id"]
    member = new_uuid()
    assert (await claim(client, job, member)).status_code == 200
    done = await client.post(
        f"/internal/v1/teams/{team_id}/jobs/{job['id']}/complete",
        json={"member_id": member, "result": {"summary": "coded"}},
    )
    assert done.status_code == 200, done.text
    await publish(client, await feed(client))
    rated = await client.post(
        f"/internal/v1/jobs/{job['id']}/feedback",
        json={"tenant_id": job["tenant_id"], "rating": 5},
    )
    assert rated.status_code == 201, rated.text
    assert await feed(client) == []


async def test_bad_feed_calls_are_refused_and_mark_nothing(client):
    await create_team(client)
    await submit_job(client)
    for params in ({"limit": 0}, {"limit": 501}, {"limit": "x"}):
        assert_problem(await client.get(FEED, params=params), 422)
    (waiting,) = await feed(client)
    bodies: list[dict[str, Any]] = [
        {"ids": []},
        {"ids": [0]},
        {"ids": ["x"]},
        {"ids": list(range(1, 502))},
        {},
    ]
    for body in bodies:
        assert_problem(await client.post(PUBLISHED, json=body), 422)
    assert await feed(client) == [waiting]


async def test_published_events_leave_the_outbox_and_stay_in_the_timeline(client):
    await create_team(client)
    job = await submit_job(client)
    assert (await claim(client, job, new_uuid())).status_code == 200
    await publish(client, await feed(client))
    maker = client._transport.app.state.sessionmaker
    async with maker() as session:
        assert (
            await session.execute(select(func.count()).select_from(JobEventOutbox))
        ).scalar() == 0
    timeline = (await client.get(f"/internal/v1/jobs/{job['id']}/events")).json()["data"]
    assert [event["type"] for event in timeline] == ["created", "routed", "claimed"]


async def test_a_late_mark_cannot_delete_a_newer_event(client):
    """Two replicas read the same page, or a mark is retried after its answer was lost: the
    second mark of an id must not take a newer event that got a freed id (SQLite rowids)."""
    await create_team(client)
    await submit_job(client)
    (first,) = await feed(client)
    assert await publish(client, [first]) == 1
    later_job = await submit_job(client)
    (later,) = await feed(client)
    assert later["id"] != first["id"]
    assert await publish(client, [first]) == 0
    assert [event["job_id"] for event in await feed(client)] == [later_job["id"]]


async def test_the_feed_s_backlog_is_in_the_metrics(client):
    await create_team(client)
    for _ in range(3):
        await submit_job(client)
    assert "taskroute_router_event_outbox 3.0" in (await client.get("/metrics")).text
    await publish(client, await feed(client))
    scraped = (await client.get("/metrics")).text
    assert "taskroute_router_event_outbox 0.0" in scraped
    assert "taskroute_router_event_outbox_oldest_seconds 0.0" in scraped


async def test_jobs_come_for_every_tenant_or_only_those_asked_for(client):
    await create_team(client)
    ours = await submit_job(client)
    theirs = await submit_job(client, tenant_id=OTHER_TENANT)
    named = {e["job_id"]: e for e in await feed(client, jobs="named", with_jobs_of=[TENANT])}
    assert named[ours["id"]]["job"]["id"] == ours["id"]
    assert named[theirs["id"]]["job"] is None
    assert all(e["job"] is None for e in await feed(client, jobs="named"))
    # By default every event's job, as a gateway of the previous release reads the feed.
    assert all(e["job"] is not None for e in await feed(client))
    for bad in (
        {"jobs": "some"},
        {"jobs": "named", "with_jobs_of": [new_uuid() for _ in range(501)]},
        {"jobs": "named", "with_jobs_of": ["x" * 65]},
    ):
        assert_problem(await client.get(FEED, params=bad), 422)
    many = {"jobs": "named", "with_jobs_of": [new_uuid() for _ in range(500)]}
    assert (await client.get(FEED, params=many)).status_code == 200
