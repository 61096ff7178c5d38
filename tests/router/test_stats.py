"""Operators' statistics (issue 4 item 6) on SQLite and PostgreSQL, with the router's clock
under the test's control: every wait, age and deadline below is an exact number of seconds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from services.gateway.app import create_app as create_gateway_app
from services.router.app import create_app
from services.router.db.repository import JobRepository, StatsRepository
from services.router.domain.classifier import Classification, LexiconClassifier
from services.router.domain.routing import DataPolicy
from services.router.domain.stats import percentile, summarise_waits
from services.router.domain.taxonomy import Domain, Tier
from services.router.settings import RouterSettings
from services.router.sweeper import sweep_once
from services.router.workflow import JobWorkflow
from tests.conftest import running
from tests.gateway.conftest import OPERATOR_KEY, gateway_settings
from tests.router.factories import claim, create_team, make_job, make_team, new_uuid, submit_job

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
VAGUE = {"title": "Quick favour", "description": "Please have a look at the attached and help."}


class Clock:
    """The router's clock (``app.state.clock``), moved by the test."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> None:
        self.now = T0 + timedelta(seconds=seconds)


def iso(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


async def team_action(
    http: httpx.AsyncClient, job: dict[str, Any], action: str, body: dict[str, Any]
) -> dict[str, Any]:
    team_id = job["assignment"]["team_id"]
    response = await http.post(f"/internal/v1/teams/{team_id}/jobs/{job['id']}/{action}", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def build_history(
    http: httpx.AsyncClient, settings: RouterSettings, clock: Clock
) -> dict[str, dict[str, Any]]:
    """Two teams and eight jobs through a known timeline (seconds after T0):

    claims wait 10 (j4), 60 (j1), 120 (j2), 300 (j5, reassigned within the queue at 100) and,
    after j4's lease expires and the sweeper requeues it at 1000, 500 more (j4 again at 1500);
    j1 completes after its deadline, j2 before; j3 and the unroutable job stay open past theirs.
    """
    clock.at(0)
    clinical = await create_team(http, name="A clinical", country="IN", capacity=10)
    entry = await create_team(
        http,
        name="B data entry",
        country="PH",
        tier="BPO",
        skills=["data_entry"],
        certifications=[],
        capacity=4,
    )
    j1 = await submit_job(http, service="clinical", due_at=iso(90))
    j2 = await submit_job(http, service="clinical", due_at=iso(10 * 3600))
    j3 = await submit_job(http, service="clinical", due_at=iso(1800))
    j4 = await submit_job(http, service="clinical")
    j5 = await submit_job(http, service="data_entry")
    triaged = await submit_job(http, **VAGUE)
    parked = await submit_job(
        http,
        service="clinical",
        due_at=iso(1200),
        policy={"allowed_countries": ["FR"], "required_certifications": [], "require_e2e": False},
    )
    clock.at(5)
    j6 = await submit_job(http, service="data_entry")
    assert [j["status"] for j in (j1, j2, j3, j4, j5, j6)] == ["queued"] * 6
    assert (triaged["status"], parked["status"]) == ("triage", "unroutable")

    member, other = new_uuid(), new_uuid()
    clock.at(10)
    assert (await claim(http, j4, member)).status_code == 200
    clock.at(60)
    assert (await claim(http, j1, other)).status_code == 200
    clock.at(120)
    assert (await claim(http, j2, other)).status_code == 200
    clock.at(200)
    await team_action(http, j1, "complete", {"member_id": other, "result": {"ok": True}})
    # An operator reassigns j5 within its queue at 100: its wait still counts from 0.
    clock.at(100)
    moved = await http.post(
        f"/internal/v1/jobs/{j5['id']}/route", json={"team_id": entry["id"], "actor": "operator"}
    )
    assert moved.status_code == 200, moved.text
    clock.at(300)
    assert (await claim(http, j5, other)).status_code == 200
    clock.at(400)
    await team_action(http, j5, "complete", {"member_id": other, "result": None})
    clock.at(600)
    await team_action(http, j2, "complete", {"member_id": other, "result": None})
    # j4's lease (900 s from 10) ran out at 910; the sweeper returns it to the queue at 1000.
    clock.at(1000)
    app = http._transport.app  # type: ignore[attr-defined]
    report = await sweep_once(
        app.state.sessionmaker, settings=settings, classifier=app.state.classifier, now=clock()
    )
    assert report.requeued == 1
    clock.at(1500)
    assert (await claim(http, j4, other)).status_code == 200
    clock.at(3600)
    return {"clinical": clinical, "entry": entry}


async def test_stats_over_a_known_timeline(router_settings, gateway_headers):
    clock = Clock(T0)
    app = create_app(router_settings)
    async with running(app) as http:
        http.headers.update(gateway_headers)
        app.state.clock = clock
        teams = await build_history(http, router_settings, clock)
        clinical, entry = teams["clinical"], teams["entry"]

        response = await http.get("/internal/v1/stats")
        assert response.status_code == 200, response.text
        stats = response.json()

        assert stats["by_status"] == {
            "queued": 2,
            "in_progress": 1,
            "completed": 3,
            "triage": 1,
            "unroutable": 1,
        }
        assert (stats["triage"], stats["unroutable"]) == (1, 1)
        assert datetime.fromisoformat(stats["generated_at"]) == T0 + timedelta(seconds=3600)
        assert stats["window_seconds"] == 86_400
        # Queue depth by team (existing shape), by tier and by domain (queued jobs only).
        assert stats["queues"] == [
            {
                "team_id": clinical["id"],
                "team_name": "A clinical",
                "queued": 1,
                "in_progress": 1,
                "capacity": 10,
            },
            {
                "team_id": entry["id"],
                "team_name": "B data entry",
                "queued": 1,
                "in_progress": 0,
                "capacity": 4,
            },
        ]
        assert stats["queued_by_tier"] == {"KPO": 1, "BPO": 1}
        assert stats["queued_by_domain"] == {"clinical": 1, "data_entry": 1}
        # Oldest queued job per team, longest wait first: j3 since T0, j6 since T0 + 5 s.
        ages = [
            (a["team_id"], a["queued"], a["oldest_queued_age_seconds"]) for a in stats["queue_ages"]
        ]
        assert ages == [(clinical["id"], 1, 3600.0), (entry["id"], 1, 3595.0)]
        assert datetime.fromisoformat(stats["queue_ages"][1]["oldest_queued_since"]) == (
            T0 + timedelta(seconds=5)
        )
        # Waits 10, 60, 120, 300, 500: nearest-rank p50 is the 3rd, p95 the 5th.
        assert stats["waits"] == {
            "window_seconds": 86_400,
            "count": 5,
            "sampled": 5,
            "p50_seconds": 120.0,
            "p95_seconds": 500.0,
            "max_seconds": 500.0,
        }
        assert stats["lease_expiries"] == {"total": 1, "in_window": 1}
        assert stats["sla"] == {"completed_late": 1, "completed_on_time": 1, "open_overdue": 2}
        # Every wait behind those figures: j5's counts from 0, not from its reassignment.
        async with app.state.sessionmaker() as session:
            pairs = await StatsRepository(session).recent_waits(since=T0, until=clock(), limit=100)
        waits = sorted((claimed - queued).total_seconds() for queued, claimed in pairs)
        assert waits == [10.0, 60.0, 120.0, 300.0, 500.0]

        # A shorter window keeps only the re-claim at 1500 and the expiry at 1000 ...
        recent = (await http.get("/internal/v1/stats", params={"window_seconds": 3000})).json()
        assert recent["waits"]["count"] == 1
        assert recent["waits"]["p50_seconds"] == recent["waits"]["p95_seconds"] == 500.0
        assert recent["lease_expiries"] == {"total": 1, "in_window": 1}
        # ... and one that starts after both has no waits, and still the all-time expiry.
        quiet = (await http.get("/internal/v1/stats", params={"window_seconds": 2000})).json()
        assert quiet["waits"]["count"] == quiet["waits"]["sampled"] == 0
        assert quiet["waits"]["p50_seconds"] is None
        assert quiet["lease_expiries"] == {"total": 1, "in_window": 0}
        # Deadlines are judged at the clock's time: an hour earlier nothing open was overdue.
        clock.at(1100)
        earlier = (await http.get("/internal/v1/stats")).json()
        assert earlier["sla"]["open_overdue"] == 0
        for bad in (0, 59, 31 * 86_400, "day"):
            refused = await http.get("/internal/v1/stats", params={"window_seconds": bad})
            assert refused.status_code == 422


async def test_stats_of_an_empty_router(client):
    stats = (await client.get("/internal/v1/stats")).json()
    assert stats["by_status"] == {}
    assert stats["queues"] == stats["queue_ages"] == []
    assert stats["queued_by_tier"] == stats["queued_by_domain"] == {}
    assert stats["waits"]["count"] == 0
    assert stats["waits"]["p95_seconds"] is None
    assert stats["lease_expiries"] == {"total": 0, "in_window": 0}
    assert stats["sla"] == {"completed_late": 0, "completed_on_time": 0, "open_overdue": 0}
    assert (stats["triage"], stats["unroutable"]) == (0, 0)


async def test_gateway_shows_the_stats_to_operators_only(
    databases, keys_dir: Path, tmp_path: Path, gateway_headers
):
    router_app = create_app(
        RouterSettings(
            database_url=databases["router"],
            data_dir=tmp_path,
            service_keys_dir=keys_dir,
            sweep_interval_seconds=3600,
        )
    )
    async with running(router_app) as router_http:
        router_http.headers.update(gateway_headers)
        await create_team(router_http, name="A clinical")
        job = await submit_job(router_http, service="clinical")
        assert (await claim(router_http, job, new_uuid())).status_code == 200
        await submit_job(router_http, service="clinical")

        def vault_not_under_test(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("the vault plays no part in statistics", request=request)

        gateway = create_gateway_app(
            gateway_settings(databases, keys_dir, tmp_path),
            transports={
                "router": httpx.ASGITransport(app=router_app),
                "vault": httpx.MockTransport(vault_not_under_test),
            },
        )
        async with running(gateway) as gw:
            operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
            response = await gw.get("/v1/admin/stats", headers=operator)
            assert response.status_code == 200, response.text
            stats = response.json()
            assert stats["by_status"] == {"queued": 1, "in_progress": 1}
            assert stats["queued_by_tier"] == {"KPO": 1}
            assert stats["waits"]["count"] == 1
            assert stats["waits"]["p50_seconds"] >= 0
            assert stats["queue_ages"][0]["queued"] == 1
            assert set(stats["sla"]) == {"completed_late", "completed_on_time", "open_overdue"}
            assert stats["lease_expiries"] == {"total": 0, "in_window": 0}
            assert (await gw.get("/v1/admin/stats")).status_code == 401


def test_nearest_rank_percentiles():
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 100)) == (
        50.0,
        95.0,
        100.0,
    )
    assert percentile(values, 0) == 1.0
    pairs = [(T0, T0 + timedelta(seconds=s)) for s in (30, 10, 20)]
    summary = summarise_waits(pairs, count=7)
    assert (summary.count, summary.sampled) == (7, 3)
    assert (summary.p50_seconds, summary.p95_seconds, summary.max_seconds) == (20.0, 30.0, 30.0)


# ----------------------------------------------------------------------------- routing cost


async def test_a_decision_counts_only_the_able_teams_loads(session, router_settings):
    """The change measured in BENCHMARKS.md ("Routing at scale"): submit counts the load of
    the teams able to take the job only, and still excludes the able team at capacity."""
    full = await make_team(session, name="Full clinical", capacity=2)
    free = await make_team(session, name="Free clinical", capacity=5)
    other_tier = await make_team(session, name="Entry", tier="BPO", skills=["data_entry"])
    for team, count in ((full, 2), (free, 1), (other_tier, 4)):
        for _ in range(count):
            await make_job(session, status="queued", team_id=team.id, team_name=team.name)
    repo = JobRepository(session)
    assert await repo.team_loads() == {full.id: 2, free.id: 1, other_tier.id: 4}
    assert [await repo.team_load(team.id) for team in (full, free, other_tier)] == [2, 1, 4]
    assert await repo.team_load(str(uuid.uuid4())) == 0  # no counter row

    workflow = JobWorkflow(session, settings=router_settings, classifier=LexiconClassifier())
    work = Classification(tier=Tier.KPO, domain=Domain.CLINICAL, confidence=1.0)
    loads = {p.name: p.load for p in await workflow.profiles(work=work)}
    assert loads == {"Full clinical": 2, "Free clinical": 1, "Entry": 0}
    everyone = {p.name: p.load for p in await workflow.profiles()}
    assert everyone == {"Full clinical": 2, "Free clinical": 1, "Entry": 4}
    decision = workflow.decide(
        classification=work,
        policy=DataPolicy.from_json(None),
        due_at=None,
        rejected_by=(),
        teams=await workflow.profiles(work=work),
        now=T0,
    )
    assert decision.chosen is not None
    assert decision.chosen.team.name == "Free clinical"
    codes = {e.team.name: e.codes for e in decision.excluded}
    assert codes == {"Entry": ("wrong_tier", "lacks_skill"), "Full clinical": ("at_capacity",)}
