"""Escalation of unclaimed jobs and queue aging, driven by an injected clock (never sleeps),
on the run's real databases (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from fastapi import FastAPI
from sqlalchemy import select, text

from services.router.app import create_app
from services.router.db.migrate import MIGRATIONS, VERSION_TABLE
from services.router.db.models import Job
from services.router.domain.queueing import (
    PriorityDurations,
    describe_duration,
    escalate_at,
    queue_order_at,
)
from services.router.domain.routing import DataPolicy, RoutingRequest, decide
from services.router.domain.taxonomy import Domain, Priority, Tier
from services.router.settings import RouterSettings
from services.router.sweeper import SweepReport, sweep_once
from services.router.workflow import JobWorkflow
from shared.db import alembic_config, create_engine, create_sessionmaker
from tests.conftest import running, scratch_database
from tests.router.factories import claim, create_team, job_body, new_uuid, submit_job

# A Monday morning; every team in these tests works around the clock.
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class Clock:
    """The router's clock, moved by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def set(self, **delta: float) -> datetime:
        self.now = T0 + timedelta(**delta)
        return self.now


@dataclass
class Router:
    app: FastAPI
    http: httpx.AsyncClient
    clock: Clock
    settings: RouterSettings

    async def sweep(self) -> SweepReport:
        return await sweep_once(
            self.app.state.sessionmaker,
            settings=self.settings,
            classifier=self.app.state.classifier,
            now=self.clock(),
        )

    async def job(self, job_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/internal/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    async def events(self, job_id: str) -> list[dict[str, Any]]:
        response = await self.http.get(f"/internal/v1/jobs/{job_id}/events")
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["data"]
        return events

    async def routing(self, job_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/internal/v1/jobs/{job_id}/routing")
        assert response.status_code == 200, response.text
        record: dict[str, Any] = response.json()
        return record


@asynccontextmanager
async def router_at(
    settings: RouterSettings, headers: dict[str, str], **overrides: Any
) -> AsyncIterator[Router]:
    settings = settings.model_copy(update=overrides)
    app = create_app(settings)
    clock = Clock(T0)
    async with running(app) as http:
        app.state.clock = clock
        http.headers.update(headers)
        yield Router(app, http, clock, settings)


@pytest.fixture
async def router(router_settings, gateway_headers) -> AsyncIterator[Router]:
    async with router_at(router_settings, gateway_headers) as running_router:
        yield running_router


async def two_teams(http: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two clinical teams; routing prefers ``first`` (better quality)."""
    first = await create_team(http, name="Pune Clinical", quality=0.95)
    second = await create_team(http, name="Manila Clinical", country="PH", quality=0.6)
    return first, second


# ----------------------------------------------------------------------------- pure rules


def test_queue_order_gives_each_priority_its_head_start():
    head_starts = PriorityDurations(high=4 * 3600, normal=3600, low=0)
    assert queue_order_at(created_at=T0, priority=Priority.HIGH, head_starts=head_starts) == (
        T0 - timedelta(hours=4)
    )
    assert queue_order_at(created_at=T0, priority=Priority.NORMAL, head_starts=head_starts) == (
        T0 - timedelta(hours=1)
    )
    assert queue_order_at(created_at=T0, priority=Priority.LOW, head_starts=head_starts) == T0
    # A low job older than the high head start is served before a fresh high job.
    old_low = queue_order_at(
        created_at=T0 - timedelta(hours=4, seconds=1),
        priority=Priority.LOW,
        head_starts=head_starts,
    )
    fresh_high = queue_order_at(created_at=T0, priority=Priority.HIGH, head_starts=head_starts)
    assert old_low < fresh_high


def test_escalation_window_depends_on_priority():
    windows = PriorityDurations(high=1800, normal=7200, low=14_400)
    assert escalate_at(queued_at=T0, priority=Priority.HIGH, windows=windows) == T0 + timedelta(
        minutes=30
    )
    assert escalate_at(queued_at=T0, priority=Priority.LOW, windows=windows) == T0 + timedelta(
        hours=4
    )
    assert describe_duration(timedelta(hours=2)) == "2 h"
    assert describe_duration(timedelta(minutes=90)) == "1 h 30 min"
    assert describe_duration(timedelta(seconds=45)) == "45 s"
    assert describe_duration(timedelta(0)) == "0 s"


def test_a_team_passed_through_is_excluded_with_its_reason():
    from services.router.domain.routing import TeamProfile, WorkingHours

    always = WorkingHours.from_json({"start": "00:00", "end": "23:59", "days": list(range(7))})

    def team(name: str) -> TeamProfile:
        return TeamProfile(
            id=name,
            name=name,
            country="IN",
            timezone="UTC",
            working_hours=always,
            tier=Tier.KPO,
            skills=frozenset({"clinical"}),
            certifications=frozenset(),
            capacity=5,
            hourly_rate=20,
            quality=0.8,
            active=True,
            load=0,
        )

    request = RoutingRequest(
        tier=Tier.KPO,
        domain=Domain.CLINICAL,
        policy=DataPolicy(),
        now=T0,
        passed_through=frozenset({"a"}),
    )
    decision = decide(request=request, teams=[team("a"), team("b")], weights=_weights())
    assert [c.team.id for c in decision.eligible] == ["b"]
    [excluded] = decision.excluded
    assert excluded.codes == ("passed_through",)
    assert "escalated" in excluded.reasons[0]


def _weights() -> Any:
    return RouterSettings().score_weights()


# ----------------------------------------------------------------------------- escalation


async def test_an_unclaimed_job_passes_to_the_next_team_then_stays(router: Router):
    first, second = await two_teams(router.http)
    job = await submit_job(router.http)
    assert job["assignment"]["team_id"] == first["id"]

    # One second before the normal window (2 h) ends: nothing moves.
    router.clock.set(hours=2, seconds=-1)
    assert (await router.sweep()).escalated == 0
    assert (await router.job(job["id"]))["assignment"]["team_id"] == first["id"]

    router.clock.set(hours=2)
    assert (await router.sweep()).escalated == 1
    moved = await router.job(job["id"])
    assert moved["status"] == "queued"
    assert moved["assignment"]["team_id"] == second["id"]
    assert moved["assignment"]["assigned_at"] == router.clock().isoformat().replace("+00:00", "Z")
    escalated = (await router.events(job["id"]))[-1]
    assert escalated["type"] == "escalated"
    assert escalated["actor"] == "system"
    assert (escalated["from_status"], escalated["to_status"]) == ("queued", "queued")
    assert "not claimed within 2 h at Pune Clinical" in escalated["reason"]
    assert "passed to Manila Clinical" in escalated["reason"]
    record = await router.routing(job["id"])
    assert record["trigger"] == "escalation"
    assert record["escalated_from"] == {"team_id": first["id"], "team_name": "Pune Clinical"}
    assert record["chosen"]["team_id"] == second["id"]
    [left] = [e for e in record["excluded"] if e["team_id"] == first["id"]]
    assert left["codes"] == ["passed_through"]

    # Two hours later at the second team: no other team is eligible, so it stays there.
    router.clock.set(hours=4)
    assert (await router.sweep()).escalated == 0
    held = await router.job(job["id"])
    assert (held["status"], held["assignment"]["team_id"]) == ("queued", second["id"])
    event = (await router.events(job["id"]))[-1]
    assert event["type"] == "escalation_held"
    assert event["actor"] == "system"
    assert "no other team is eligible" in event["reason"]
    # The hold restarted the clock: the next pass leaves it alone, so no event piles up.
    router.clock.set(hours=5)
    await router.sweep()
    assert (await router.events(job["id"]))[-1]["seq"] == event["seq"]

    # A new team appears: the next window passes the job on, never back to the first team.
    third = await create_team(router.http, name="Dublin Clinical", country="IE", quality=0.5)
    router.clock.set(hours=6)
    assert (await router.sweep()).escalated == 1
    assert (await router.job(job["id"]))["assignment"]["team_id"] == third["id"]
    record = await router.routing(job["id"])
    codes = {e["team_id"]: e["codes"] for e in record["excluded"]}
    assert codes == {first["id"]: ["passed_through"], second["id"]: ["passed_through"]}


async def test_a_rejection_after_escalation_never_returns_to_a_team_passed(router: Router):
    first, second = await two_teams(router.http)
    job = await submit_job(router.http)
    router.clock.set(hours=2)
    await router.sweep()
    rejected = await router.http.post(
        f"/internal/v1/teams/{second['id']}/jobs/{job['id']}/reject", json={"reason": "no staff"}
    )
    assert rejected.status_code == 200, rejected.text
    # The first team was passed through, the second rejected it: nobody is left.
    assert rejected.json()["status"] == "unroutable"
    record = await router.routing(job["id"])
    codes = {e["team_id"]: e["codes"] for e in record["excluded"]}
    assert codes == {first["id"]: ["passed_through"], second["id"]: ["rejected"]}


async def test_high_priority_escalates_sooner_and_windows_are_settings(
    router_settings, gateway_headers
):
    async with router_at(
        router_settings, gateway_headers, escalation_seconds_high=600, escalation_seconds=1200
    ) as router:
        first, second = await two_teams(router.http)
        high = await submit_job(router.http, priority="high")
        normal = await submit_job(router.http, priority="normal")
        low = await submit_job(router.http, priority="low")
        router.clock.set(minutes=10)
        assert (await router.sweep()).escalated == 1
        assert (await router.job(high["id"]))["assignment"]["team_id"] == second["id"]
        assert (await router.job(normal["id"]))["assignment"]["team_id"] == first["id"]
        assert "within 10 min" in (await router.events(high["id"]))[-1]["reason"]
        router.clock.set(minutes=20)
        assert (await router.sweep()).escalated == 1
        assert (await router.job(normal["id"]))["assignment"]["team_id"] == second["id"]
        # Low keeps the default of four hours.
        router.clock.set(hours=4, seconds=-1)
        assert (await router.sweep()).escalated == 0
        router.clock.set(hours=4)
        assert (await router.sweep()).escalated == 1
        assert (await router.job(low["id"]))["assignment"]["team_id"] == second["id"]


async def test_claiming_stops_the_clock_and_coming_back_restarts_it(router: Router):
    first, second = await two_teams(router.http)
    member = new_uuid()
    job = await submit_job(router.http)
    router.clock.set(hours=1)
    assert (await claim(router.http, job, member)).status_code == 200
    # In progress past the window: a claimed job never escalates.
    router.clock.set(hours=1, minutes=10)
    assert (await router.sweep()).escalated == 0
    released = await router.http.post(
        f"/internal/v1/teams/{first['id']}/jobs/{job['id']}/release", json={"member_id": member}
    )
    assert released.status_code == 200, released.text
    # Back in the queue at 1 h 10: the window counts from there, not from submission.
    router.clock.set(hours=3, minutes=9)
    assert (await router.sweep()).escalated == 0
    router.clock.set(hours=3, minutes=10)
    assert (await router.sweep()).escalated == 1
    assert (await router.job(job["id"]))["assignment"]["team_id"] == second["id"]


async def test_an_expired_lease_restarts_the_escalation_clock(router: Router):
    first, _second = await two_teams(router.http)
    job = await submit_job(router.http)
    router.clock.set(minutes=30)
    assert (await claim(router.http, job, new_uuid())).status_code == 200
    # The lease (15 min) ran out long ago; this pass requeues it, and the clock starts now.
    router.clock.set(hours=3)
    report = await router.sweep()
    assert (report.requeued, report.escalated) == (1, 0)
    router.clock.set(hours=5, seconds=-1)
    assert (await router.sweep()).escalated == 0
    assert (await router.job(job["id"]))["assignment"]["team_id"] == first["id"]
    router.clock.set(hours=5)
    assert (await router.sweep()).escalated == 1


async def test_a_claim_and_an_escalation_at_once_have_one_winner(router: Router):
    teams = {team["id"] for team in await two_teams(router.http)}
    jobs = [await submit_job(router.http) for _ in range(5)]
    router.clock.set(hours=2)
    answers = await asyncio.gather(
        router.sweep(), *(claim(router.http, job, new_uuid()) for job in jobs)
    )
    claims: list[httpx.Response] = list(answers[1:])  # type: ignore[arg-type]
    for job, response in zip(jobs, claims, strict=True):
        stored = await router.job(job["id"])
        types = [event["type"] for event in await router.events(job["id"])]
        original = job["assignment"]["team_id"]
        if response.status_code == 200:
            # The claim won: the job stayed with its team and never escalated.
            assert stored["status"] == "in_progress"
            assert stored["assignment"]["team_id"] == original
            assert "escalated" not in types
        else:
            # The escalation won: the claim on the old team's queue is refused, as a conflict
            # if it read the job mid-move, or as any other team's job (404) if it came after.
            assert response.status_code in (404, 409), response.text
            assert stored["status"] == "queued"
            [other] = teams - {original}
            assert stored["assignment"]["team_id"] == other
            assert "claimed" not in types
            assert types.count("escalated") == 1


async def test_sweepers_on_several_replicas_escalate_each_job_once(router: Router):
    await two_teams(router.http)
    jobs = [await submit_job(router.http) for _ in range(6)]
    router.clock.set(hours=2)
    reports = await asyncio.gather(*(router.sweep() for _ in range(3)))
    assert sum(report.escalated for report in reports) == len(jobs)
    for job in jobs:
        types = [event["type"] for event in await router.events(job["id"])]
        assert types.count("escalated") == 1
        assert "escalation_held" not in types


async def test_escalation_respects_capacity_and_the_data_policy(router: Router):
    first = await create_team(router.http, name="Pune Clinical", quality=0.95)
    await create_team(router.http, name="Dublin Clinical", country="IE", quality=0.6)
    full = await create_team(router.http, name="Cebu Clinical", country="PH", capacity=0)
    job = await submit_job(
        router.http,
        policy={"allowed_countries": ["IN", "PH"], "required_certifications": []},
    )
    router.clock.set(hours=2)
    assert (await router.sweep()).escalated == 0
    assert (await router.job(job["id"]))["assignment"]["team_id"] == first["id"]
    reason = (await router.events(job["id"]))[-1]["reason"]
    assert "no other team is eligible (3 excluded)" in reason
    assert full["id"] != first["id"]


# ----------------------------------------------------------------------------- aging


async def _queue(router: Router, team_id: str, **params: Any) -> dict[str, Any]:
    response = await router.http.get(f"/internal/v1/teams/{team_id}/jobs", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def test_queue_is_priority_then_age_and_low_priority_cannot_starve(router: Router):
    team = await create_team(router.http, name="Pune Clinical", capacity=100)
    submitted: dict[str, str] = {}
    # (name, priority, minutes after T0): virtual enqueue times are
    # low T0, normal T0-30m, high T0-1h, late_high T0+31m, fresh_low T0+5h.
    for name, priority, minutes in (
        ("low", "low", 0),
        ("normal", "normal", 30),
        ("high", "high", 180),
        ("late_high", "high", 271),
        ("fresh_low", "low", 300),
    ):
        router.clock.set(minutes=minutes)
        submitted[name] = (await submit_job(router.http, priority=priority))["id"]
    names = {job_id: name for name, job_id in submitted.items()}
    page = await _queue(router, team["id"])
    assert [names[j["id"]] for j in page["data"]] == [
        "high",
        "normal",
        "low",
        # A high job that arrived more than 4 h after the low one is served after it.
        "late_high",
        "fresh_low",
    ]
    # The cursor walks the same order, one job per page.
    walked: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = await _queue(router, team["id"], **params)
        walked += [names[j["id"]] for j in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert walked == ["high", "normal", "low", "late_high", "fresh_low"]
    # A claimed job keeps its place among the in-progress ones.
    await claim(router.http, await router.job(submitted["low"]), new_uuid())
    in_progress = await _queue(router, team["id"], status="in_progress")
    assert [names[j["id"]] for j in in_progress["data"]] == ["low"]
    queued = await _queue(router, team["id"], status="queued")
    assert [names[j["id"]] for j in queued["data"]] == [
        "high",
        "normal",
        "late_high",
        "fresh_low",
    ]


async def test_head_starts_are_settings(router_settings, gateway_headers):
    # With no head starts at all the queue is first come, first served.
    async with router_at(
        router_settings, gateway_headers, head_start_seconds_high=0, head_start_seconds_normal=0
    ) as router:
        team = await create_team(router.http, name="Pune Clinical")
        low = await submit_job(router.http, priority="low")
        router.clock.set(seconds=1)
        high = await submit_job(router.http, priority="high")
        page = await _queue(router, team["id"])
        assert [j["id"] for j in page["data"]] == [low["id"], high["id"]]


async def test_a_bad_queue_cursor_is_400_and_changes_nothing(router: Router):
    team = await create_team(router.http, name="Pune Clinical")
    await submit_job(router.http)
    response = await router.http.get(
        f"/internal/v1/teams/{team['id']}/jobs", params={"cursor": "not-a-cursor"}
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert len((await _queue(router, team["id"]))["data"]) == 1


# ----------------------------------------------------------------------------- migration


async def test_migration_backfills_queue_order_and_escalation(backend: str, tmp_path: Path):
    """A database at 0002 with jobs in it is upgraded: every job gets its aged queue position,
    every queued job an escalation time, and the team queue index moves onto them."""
    async with scratch_database(backend, tmp_path, "mig") as url:
        config = alembic_config(
            script_location=MIGRATIONS, database_url=url, version_table=VERSION_TABLE
        )
        engine = create_engine(url)
        try:
            # Alembic runs its own event loop: keep it off this test's loop.
            await asyncio.to_thread(command.upgrade, config, "0002_member_keys")
            old_rows = {
                "high-queued": ("high", 0, "queued"),
                "normal-queued": ("normal", 1, "queued"),
                "low-done": ("low", 2, "completed"),
            }
            async with engine.begin() as connection:
                for job_id, (priority, rank, status) in old_rows.items():
                    await connection.execute(
                        text(
                            "INSERT INTO jobs (id, tenant_id, status, title, description, priority,"
                            " priority_rank, metadata, policy, rejected_team_ids, event_seq,"
                            " created_at, updated_at) VALUES (:id, 't', :status, 'x', 'y',"
                            " :priority, :rank, '{}', '{}', '[]', 1, :created, :updated)"
                        ),
                        {
                            "id": job_id,
                            "status": status,
                            "priority": priority,
                            "rank": rank,
                            "created": _db_time(backend, T0),
                            "updated": _db_time(backend, T0 + timedelta(minutes=10)),
                        },
                    )
            await asyncio.to_thread(command.upgrade, config, "head")
            maker = create_sessionmaker(engine)
            async with maker() as session:
                jobs = {job.id: job for job in (await session.scalars(select(Job))).all()}
            assert jobs["high-queued"].queue_order_at == T0 - timedelta(hours=4)
            assert jobs["normal-queued"].queue_order_at == T0 - timedelta(hours=1)
            assert jobs["low-done"].queue_order_at == T0
            assert jobs["high-queued"].escalate_at == T0 + timedelta(minutes=40)
            assert jobs["normal-queued"].escalate_at == T0 + timedelta(hours=2, minutes=10)
            assert jobs["low-done"].escalate_at is None
            assert all(job.passed_team_ids == [] for job in jobs.values())
            # The back-filled jobs are swept like new ones.
            settings = RouterSettings(database_url=url, data_dir=tmp_path, environment="test")
            async with maker() as session, session.begin():
                workflow = JobWorkflow(session, settings=settings, classifier=_classifier())
                due = await workflow.jobs.due_escalations(now=T0 + timedelta(hours=1), limit=10)
                assert [job.id for job in due] == ["high-queued"]
            # And the migration goes back down cleanly.
            await asyncio.to_thread(command.downgrade, config, "0002_member_keys")
        finally:
            await engine.dispose()


def _db_time(backend: str, value: datetime) -> Any:
    # As SQLAlchemy's UTCDateTime stores it: text on SQLite, timestamptz on PostgreSQL.
    return value.strftime("%Y-%m-%d %H:%M:%S.%f") if backend == "sqlite" else value


def _classifier() -> Any:
    from services.router.domain.classifier import LexiconClassifier

    return LexiconClassifier()


async def test_submission_stores_the_aged_queue_position(router: Router):
    team = await create_team(router.http, name="Pune Clinical")
    job = await submit_job(router.http, **job_body(priority="high"))
    async with router.app.state.sessionmaker() as session:
        stored = await session.get(Job, job["id"])
        assert stored is not None
        assert stored.queue_order_at == T0 - timedelta(hours=4)
        assert stored.escalate_at == T0 + timedelta(minutes=30)
        assert stored.team_id == team["id"]
