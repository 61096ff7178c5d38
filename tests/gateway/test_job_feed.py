"""The router's event feed into the webhook outbox (services/gateway/job_feed.py): changes the
router makes alone reach the tenant's webhooks, and an event queued twice is delivered once."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from fastapi import FastAPI
from sqlalchemy import text

from services.gateway.clients.router import RouterClient
from services.gateway.db.migrate import SCRIPT_LOCATION, VERSION_TABLE
from services.gateway.job_feed import JobEventFeed
from services.router.sweeper import sweep_once
from shared.db import alembic_config, create_engine, utcnow
from tests.conftest import scratch_database
from tests.gateway.conftest import Platform, platform_in_process
from tests.gateway.test_api import BOOKKEEPING_JOB, BOOKKEEPING_TEAM, bearer, create_tenant

EVENT_NAMESPACE = uuid.UUID("6f1c2a0e-3b8d-4e55-9a41-7c0d5e2b9f13")


@dataclass
class Setup:
    platform: Platform
    router_app: FastAPI
    client_key: str
    member_key: str
    endpoint_id: str

    feed: JobEventFeed

    async def deliveries(self) -> list[dict[str, Any]]:
        answer = await self.platform.client.get(
            f"/v1/webhook-endpoints/{self.endpoint_id}/deliveries",
            params={"limit": 100},
            headers=bearer(self.client_key),
        )
        assert answer.status_code == 200, answer.text
        data: list[dict[str, Any]] = answer.json()["data"]
        return data

    async def submit(self) -> dict[str, Any]:
        job = await self.platform.client.post(
            "/v1/jobs", json=BOOKKEEPING_JOB, headers=bearer(self.client_key)
        )
        assert job.status_code == 202, job.text
        submitted: dict[str, Any] = job.json()
        return submitted


@pytest.fixture
async def setup(databases, keys_dir, tmp_path) -> AsyncIterator[Setup]:
    """The platform in-process, a tenant with an endpoint, a team with a member; the feed is
    pulled when a test says so (the sweeper's own is taken off it)."""
    async with platform_in_process(databases, keys_dir, tmp_path) as platform:
        app, client = platform.app, platform.client
        assert platform.router_app is not None
        feed = app.state.submission_sweeper.feed
        app.state.submission_sweeper.feed = None
        tenant = await create_tenant(platform)
        team = await client.post(
            "/v1/admin/teams", json=BOOKKEEPING_TEAM, headers=platform.operator
        )
        assert team.status_code == 201, team.text
        member = await client.post(
            f"/v1/admin/teams/{team.json()['id']}/members",
            json={"name": "Priya"},
            headers=platform.operator,
        )
        assert member.status_code == 201, member.text
        # Nobody listens there: the deliveries stay in the outbox for the test to read.
        endpoint = await client.post(
            "/v1/webhook-endpoints",
            json={"url": "https://hooks.example.com/taskroute"},
            headers=bearer(tenant["api_key"]),
        )
        assert endpoint.status_code == 201, endpoint.text
        yield Setup(
            platform,
            platform.router_app,
            tenant["api_key"],
            member.json()["api_key"],
            endpoint.json()["id"],
            feed,
        )


def event_id(job_id: str, seq: int) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{job_id}:{seq}"))


async def test_a_lease_the_router_ends_alone_reaches_the_webhooks(setup: Setup):
    job = await setup.submit()
    claimed = await setup.platform.client.post(
        f"/v1/team/jobs/{job['id']}/claim", headers=bearer(setup.member_key)
    )
    assert claimed.status_code == 200, claimed.text
    # The gateway's requests queued their events at once.
    assert sorted(d["event_type"] for d in await setup.deliveries()) == [
        "job.in_progress",
        "job.queued",
    ]
    router_state = setup.router_app.state
    later = datetime.now(UTC) + timedelta(seconds=router_state.settings.lease_seconds + 1)
    report = await sweep_once(
        router_state.sessionmaker,
        settings=router_state.settings,
        classifier=router_state.classifier,
        now=later,
    )
    assert report.requeued == 1
    # No gateway request saw the lease end: only the feed brings it.
    assert len(await setup.deliveries()) == 2
    await setup.feed.pull()
    found = await setup.deliveries()
    assert len(found) == 3
    # The submit's routing (seq 2), the claim (3), the lease's end (4): one delivery each,
    # the first two queued by the requests and again by the feed.
    assert {d["event_id"] for d in found} == {event_id(job["id"], seq) for seq in (2, 3, 4)}
    expired = next(d for d in found if d["event_id"] == event_id(job["id"], 4))
    assert expired["event_type"] == "job.queued"
    # All taken: the router's feed is empty, and another pull queues nothing.
    assert (
        await RouterClient(setup.platform.app.state.router_http).unpublished_events(limit=10) == []
    )
    await setup.feed.pull()
    assert len(await setup.deliveries()) == 3


async def test_a_change_whose_gateway_step_was_lost_is_delivered_by_the_feed(setup: Setup):
    """The router commits a cancel, but the request that asked for it never queued the event
    (as when the gateway dies between the router's answer and its own commit)."""
    job = await setup.submit()
    router = RouterClient(setup.platform.app.state.router_http)
    stored = await router.get_job(job["id"], tenant_id=None)
    await router.cancel_job(job["id"], tenant_id=stored["tenant_id"], reason="changed plans")
    assert [d["event_type"] for d in await setup.deliveries()] == ["job.queued"]
    await setup.feed.pull()
    found = await setup.deliveries()
    assert sorted(d["event_type"] for d in found) == ["job.cancelled", "job.queued"]
    cancelled = next(d for d in found if d["event_type"] == "job.cancelled")
    assert cancelled["event_id"] == event_id(job["id"], 3)


async def test_replicas_pulling_at_once_queue_each_event_once(setup: Setup):
    jobs = [await setup.submit() for _ in range(6)]
    # A second replica's feed: its own client and breaker, the same databases.
    other = JobEventFeed(
        maker=setup.platform.app.state.sessionmaker,
        router=RouterClient(setup.platform.app.state.router_http),
        page=2,  # several pages, interleaving with the first replica's
    )
    await asyncio.gather(setup.feed.pull(), other.pull(), setup.feed.pull())
    found = await setup.deliveries()
    assert sorted(d["event_id"] for d in found) == sorted(event_id(j["id"], 2) for j in jobs)


async def test_a_router_away_leaves_the_events_waiting(setup: Setup):
    job = await setup.submit()
    router = RouterClient(setup.platform.app.state.router_http)
    stored = await router.get_job(job["id"], tenant_id=None)
    await router.cancel_job(job["id"], tenant_id=stored["tenant_id"], reason=None)

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("router down", request=request)

    away = httpx.AsyncClient(
        base_url="http://router", transport=httpx.MockTransport(unreachable), timeout=1
    )
    try:
        dead_feed = JobEventFeed(
            maker=setup.platform.app.state.sessionmaker, router=RouterClient(away)
        )
        assert await dead_feed.pull() == 0  # no error: the events wait at the router
    finally:
        await away.aclose()
    assert len(await setup.deliveries()) == 1
    assert await setup.feed.pull() >= 1
    assert sorted(d["event_type"] for d in await setup.deliveries()) == [
        "job.cancelled",
        "job.queued",
    ]


async def test_migration_keeps_one_delivery_per_endpoint_and_event(backend: str, tmp_path: Path):
    """Copies of one event for one endpoint (an idempotent retry could queue them before
    0008) are reduced to one (a delivered one first, else the oldest), and the unique pair
    then holds."""
    async with scratch_database(backend, tmp_path, "gwmig") as url:
        config = alembic_config(
            script_location=SCRIPT_LOCATION, database_url=url, version_table=VERSION_TABLE
        )
        engine = create_engine(url)
        try:
            await asyncio.to_thread(command.upgrade, config, "0007")
            t0 = datetime(2026, 11, 1, tzinfo=UTC).replace(tzinfo=None)
            async with engine.begin() as connection:
                await connection.execute(
                    text(
                        "INSERT INTO tenants (id, name, policy, version, created_at, updated_at,"
                        " policy_pushed_version) VALUES ('t1', 'Acme', '{}', 1, :t, :t, 0)"
                    ),
                    {"t": t0},
                )
                await connection.execute(
                    text(
                        "INSERT INTO webhook_endpoints (id, tenant_id, url, sealed_secret,"
                        " created_at) VALUES ('e1', 't1', 'https://h.example/x', :secret, :t)"
                    ),
                    {"secret": b"sealed", "t": t0},
                )
                for row_id, event, status, minutes in (
                    ("d-late", "ev-a", "pending", 5),
                    ("d-first", "ev-a", "pending", 0),
                    ("d-b", "ev-b", "pending", 1),
                    # Of these, the delivered copy stays, though it is not the oldest.
                    ("d-c-failed", "ev-c", "failed", 0),
                    ("d-c-done", "ev-c", "succeeded", 3),
                    ("d-c-pending", "ev-c", "pending", 1),
                ):
                    await connection.execute(
                        text(
                            "INSERT INTO webhook_deliveries (id, endpoint_id, tenant_id, event_id,"
                            " event_type, payload, status, attempts, attempt_log, created_at)"
                            " VALUES (:id, 'e1', 't1', :event, 'job.queued', '{}', :status, 0,"
                            " '[]', :t)"
                        ),
                        {
                            "id": row_id,
                            "event": event,
                            "status": status,
                            "t": t0 + timedelta(minutes=minutes),
                        },
                    )
            await asyncio.to_thread(command.upgrade, config, "head")
            async with engine.connect() as connection:
                kept = (
                    await connection.execute(text("SELECT id FROM webhook_deliveries ORDER BY id"))
                ).scalars()
                assert list(kept) == ["d-b", "d-c-done", "d-first"]
            with pytest.raises(Exception, match="(?i)unique"):
                async with engine.begin() as connection:
                    await connection.execute(
                        text(
                            "INSERT INTO webhook_deliveries (id, endpoint_id, tenant_id, event_id,"
                            " event_type, payload, status, attempts, attempt_log, created_at)"
                            " VALUES ('d-again', 'e1', 't1', 'ev-a', 'job.queued', '{}',"
                            " 'pending', 0, '[]', :t)"
                        ),
                        {"t": t0},
                    )
            await asyncio.to_thread(command.downgrade, config, "0007")
        finally:
            await engine.dispose()


async def fast_path_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "taskroute.gateway.job_events"]


async def test_a_cancel_queues_its_event_before_the_answer_leaves(setup: Setup, caplog):
    job = await setup.submit()
    caplog.set_level(logging.ERROR, logger="taskroute.gateway.job_events")
    cancelled = await setup.platform.client.post(
        f"/v1/jobs/{job['id']}/cancel",
        json={"reason": "changed plans"},
        headers=bearer(setup.client_key),
    )
    assert cancelled.status_code == 200, cancelled.text
    assert await fast_path_errors(caplog) == []
    # Not pulled: the request queued it, under the id the feed will use.
    found = await setup.deliveries()
    assert {d["event_id"] for d in found} == {event_id(job["id"], 2), event_id(job["id"], 3)}


async def test_a_manual_routing_queues_its_event_before_the_answer_leaves(setup: Setup, caplog):
    job = await setup.submit()
    teams = await setup.platform.client.get("/v1/admin/teams", headers=setup.platform.operator)
    team_id = teams.json()["data"][0]["id"]
    caplog.set_level(logging.ERROR, logger="taskroute.gateway.job_events")
    routed = await setup.platform.client.post(
        f"/v1/admin/jobs/{job['id']}/route",
        json={"team_id": team_id},
        headers=setup.platform.operator,
    )
    assert routed.status_code == 200, routed.text
    assert await fast_path_errors(caplog) == []
    found = await setup.deliveries()
    assert {d["event_id"] for d in found} == {event_id(job["id"], 2), event_id(job["id"], 3)}


class LoseSubmitAnswers(httpx.AsyncBaseTransport):
    """Delivers the gateway's submits to the router, then loses the router's answers."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.lose = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if self.lose and request.method == "POST" and request.url.path == "/internal/v1/jobs":
            await response.aread()
            raise httpx.ReadTimeout("answer lost", request=request)
        return response


async def test_a_job_forwarded_after_it_moved_is_announced_once(setup: Setup):
    """The router took a submit whose answer was lost (the gateway keeps the job as pending);
    before the gateway forwards it again, the router records an escalation that found no
    other team (an event clients are not told of). The forward's answer names that latest
    event; the routing event must still reach the endpoint once, under one id."""
    app = setup.platform.app
    http = app.state.router_http
    lossy = LoseSubmitAnswers(http._transport)
    http._transport = lossy
    job = await setup.submit()
    assert job["status"] == "pending"
    lossy.lose = False
    router_state = setup.router_app.state
    await sweep_once(
        router_state.sessionmaker,
        settings=router_state.settings,
        classifier=router_state.classifier,
        now=datetime.now(UTC) + timedelta(hours=5),
    )
    await app.state.submission_sweeper.sweep_once(utcnow() + timedelta(minutes=5))
    await setup.feed.pull()
    found = await setup.deliveries()
    assert [(d["event_type"], d["event_id"]) for d in found] == [
        ("job.queued", event_id(job["id"], 2))
    ]


async def test_an_event_the_gateway_cannot_read_does_not_hold_back_the_rest(setup: Setup, caplog):
    job = await setup.submit()
    router = RouterClient(setup.platform.app.state.router_http)
    stored = await router.get_job(job["id"], tenant_id=None)
    await router.cancel_job(job["id"], tenant_id=stored["tenant_id"], reason=None)
    _, cancelled = await router.unpublished_events(limit=10, with_jobs_of=[stored["tenant_id"]])
    unreadable = {**cancelled, "job": {**cancelled["job"], "title": None}}
    caplog.set_level(logging.ERROR, logger="taskroute.gateway.job_feed")
    async with setup.platform.app.state.sessionmaker() as session:
        await setup.feed._queue(session, unreadable, [setup.endpoint_id])  # no error raised
        await session.commit()
    assert [r.getMessage() for r in caplog.records] == ["feed event not queued"]
    assert [d["event_id"] for d in await setup.deliveries()] == [event_id(job["id"], 2)]
    # The same event readable again (the router's own answer) goes through.
    await setup.feed.pull()
    assert {d["event_id"] for d in await setup.deliveries()} == {
        event_id(job["id"], 2),
        event_id(job["id"], 3),
    }


async def test_a_console_completion_is_queued_at_once_under_its_own_id(setup: Setup):
    """The console's member view hides the tenant: the event is named from the router's own
    answer, which the route kept, not from a read of the job afterwards."""
    from tests.gateway.test_console_actions import console_client, csrf_of

    job = await setup.submit()
    gw = setup.platform.client
    claimed = await gw.post(f"/v1/team/jobs/{job['id']}/claim", headers=bearer(setup.member_key))
    assert claimed.status_code == 200, claimed.text
    async with console_client(setup.platform, setup.member_key) as console:
        queue = await console.get("/console/queue")
        done = await console.post(
            f"/console/jobs/{job['id']}/complete",
            data={"csrf_token": csrf_of(queue.text), "result": "done"},
        )
        assert done.status_code == 303, done.text

    def completed(found: list[dict[str, Any]]) -> list[str]:
        return [d["event_id"] for d in found if d["event_type"] == "job.completed"]

    assert completed(await setup.deliveries()) == [event_id(job["id"], 4)]
    rated = await gw.post(
        f"/v1/jobs/{job['id']}/feedback", json={"rating": 5}, headers=bearer(setup.client_key)
    )
    assert rated.status_code == 201, rated.text
    await setup.feed.pull()
    assert completed(await setup.deliveries()) == [event_id(job["id"], 4)]


async def test_events_of_tenants_without_endpoints_are_taken_without_their_jobs(setup: Setup):
    other = await create_tenant(setup.platform, name="No Hooks Ltd")
    plain = await setup.platform.client.post(
        "/v1/jobs", json=BOOKKEEPING_JOB, headers=bearer(other["api_key"])
    )
    assert plain.status_code == 202, plain.text
    ours = await setup.submit()
    router = RouterClient(setup.platform.app.state.router_http)
    assert len(await router.unpublished_events(limit=10)) == 2
    await setup.feed.pull()
    assert await router.unpublished_events(limit=10) == []
    assert [d["event_id"] for d in await setup.deliveries()] == [event_id(ours["id"], 2)]


async def test_a_deleted_endpoint_gets_nothing_from_the_feed(setup: Setup):
    job = await setup.submit()
    deleted = await setup.platform.client.delete(
        f"/v1/webhook-endpoints/{setup.endpoint_id}", headers=bearer(setup.client_key)
    )
    assert deleted.status_code == 200, deleted.text
    router = RouterClient(setup.platform.app.state.router_http)
    stored = await router.get_job(job["id"], tenant_id=None)
    await router.cancel_job(job["id"], tenant_id=stored["tenant_id"], reason="changed plans")
    await setup.feed.pull()
    assert await router.unpublished_events(limit=10) == []  # taken, as for a tenant without any
    async with setup.platform.app.state.sessionmaker() as session:
        queued = await session.scalar(
            text("SELECT count(*) FROM webhook_deliveries WHERE event_id = :event_id"),
            {"event_id": event_id(job["id"], 3)},
        )
    assert queued == 0


async def test_an_endpoint_made_during_a_pull_misses_no_later_event(setup: Setup):
    """Tenant B has no endpoint when the page's tenants are looked up; before the second
    read it makes one, and the router cancels its job. That cancel happened after B's
    endpoint existed: it must reach it (the next pass takes it, not this one)."""
    router = RouterClient(setup.platform.app.state.router_http)
    await setup.submit()  # the tenant with an endpoint: the pull reads its page twice
    b = await create_tenant(setup.platform, name="Late Hooks Ltd")
    submitted = await setup.platform.client.post(
        "/v1/jobs", json=BOOKKEEPING_JOB, headers=bearer(b["api_key"])
    )
    assert submitted.status_code == 202, submitted.text
    job_b = submitted.json()
    made: dict[str, str] = {}
    real = setup.feed.router.unpublished_events

    async def between_the_reads(*, limit: int, with_jobs_of: list[str] | None = None) -> Any:
        if with_jobs_of and not made:
            endpoint = await setup.platform.client.post(
                "/v1/webhook-endpoints",
                json={"url": "https://hooks.example.com/late"},
                headers=bearer(b["api_key"]),
            )
            assert endpoint.status_code == 201, endpoint.text
            made["id"] = endpoint.json()["id"]
            await router.cancel_job(job_b["id"], tenant_id=b["id"], reason=None)
        return await real(limit=limit, with_jobs_of=with_jobs_of)

    setup.feed.router.unpublished_events = between_the_reads  # type: ignore[method-assign]
    await setup.feed.pull()
    setup.feed.router.unpublished_events = real  # type: ignore[method-assign]
    await setup.feed.pull()
    assert await router.unpublished_events(limit=10) == []
    late = await setup.platform.client.get(
        f"/v1/webhook-endpoints/{made['id']}/deliveries", headers=bearer(b["api_key"])
    )
    assert [d["event_id"] for d in late.json()["data"]] == [event_id(job_b["id"], 3)]


async def test_a_router_of_the_previous_release_is_read_too(setup: Setup):
    """Rolled out first, the router may still be the previous release's while this gateway
    starts: its feed names the tenant only in the job, which it always carries."""
    job = await setup.submit()
    router = RouterClient(setup.platform.app.state.router_http)
    stored = await router.get_job(job["id"], tenant_id=None)
    await router.cancel_job(job["id"], tenant_id=stored["tenant_id"], reason=None)
    real = setup.feed.router.unpublished_events

    async def previous_release(*, limit: int, with_jobs_of: list[str] | None = None) -> Any:
        answer = await real(limit=limit)  # every event with its job, as it answered
        return [{k: v for k, v in e.items() if k not in ("job_id", "tenant_id")} for e in answer]

    setup.feed.router.unpublished_events = previous_release  # type: ignore[method-assign]
    await setup.feed.pull()
    setup.feed.router.unpublished_events = real  # type: ignore[method-assign]
    assert await router.unpublished_events(limit=10) == []
    assert {d["event_id"] for d in await setup.deliveries()} == {
        event_id(job["id"], 2),
        event_id(job["id"], 3),
    }
