"""The decision record at scale: excluded teams stored grouped by their exclusion codes, read
back (old and new records alike) with every team and its reasons."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update

from services.router.db.models import RoutingDecision
from services.router.domain.decision_record import routing_view, stored_record, team_ids_of
from services.router.domain.routing import (
    DataPolicy,
    RoutingRequest,
    ScoreWeights,
    TeamProfile,
    WorkingHours,
    decide,
)
from services.router.domain.taxonomy import Domain, Tier
from shared.db import create_engine, create_sessionmaker
from tests.router.factories import create_team, job_submission, submit_job

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
ALWAYS = WorkingHours.from_json({"start": "00:00", "end": "23:59", "days": list(range(7))})


def profile(index: int, **overrides: Any) -> TeamProfile:
    base = TeamProfile(
        id=str(uuid.UUID(int=index + 1)),
        name=f"Team {index:04d} Clinical Operations",
        country=("IN", "PH", "IE", "CZ", "IL")[index % 5],
        timezone="Asia/Kolkata",
        working_hours=ALWAYS,
        tier=Tier.KPO if index % 3 else Tier.BPO,
        skills=frozenset({"clinical", "research"} if index % 4 else {"legal"}),
        certifications=frozenset({"HIPAA"} if index % 2 else {"ISO27001"}),
        capacity=10,
        hourly_rate=20.0 + index % 17,
        quality=0.8,
        active=index % 11 != 0,
        load=index % 12,
    )
    return replace(base, **overrides)


def request(**overrides: Any) -> RoutingRequest:
    base = RoutingRequest(
        tier=Tier.KPO,
        domain=Domain.CLINICAL,
        policy=DataPolicy(
            allowed_countries=frozenset({"IN", "IE"}), required_certifications=frozenset({"HIPAA"})
        ),
        now=NOW,
    )
    return replace(base, **overrides)


def size(record: dict[str, Any]) -> int:
    return len(json.dumps(record, separators=(",", ":")).encode())


def test_a_thousand_team_record_is_stored_grouped_and_small():
    decision = decide(
        request=request(), teams=[profile(i) for i in range(1000)], weights=ScoreWeights()
    )
    assert len(decision.excluded) > 900
    full, compact = decision.to_record(), stored_record(decision)
    assert "excluded" not in compact
    assert compact["excluded_count"] == len(decision.excluded)
    assert sorted(team_ids_of(compact)) == sorted(e.team.id for e in decision.excluded)
    # Every team once, under exactly its own set of codes.
    codes_by_team = {e.team.id: list(e.codes) for e in decision.excluded}
    for group in compact["excluded_groups"]:
        assert len(group["codes"]) == len(group["reasons"])
        for team_id in group["team_ids"]:
            assert codes_by_team[team_id] == group["codes"]
    print(f"\nrecord at 1,000 teams: {size(full):,} B per team list, {size(compact):,} B grouped")
    assert size(compact) * 3 < size(full)
    assert size(compact) < 64 * 1024


def test_the_view_of_a_grouped_record_lists_every_team_with_its_reasons():
    teams = [profile(i) for i in range(40)]
    decision = decide(request=request(), teams=teams, weights=ScoreWeights())
    names = {t.id: t.name for t in teams}
    view = routing_view(stored_record(decision), names)
    full = decision.to_record()
    assert [(e["team_id"], e["team_name"], e["codes"]) for e in view["excluded"]] == [
        (e["team_id"], e["team_name"], e["codes"]) for e in full["excluded"]
    ]
    assert view["eligible"] == full["eligible"]
    assert view["chosen"] == full["chosen"]
    assert sum(group["count"] for group in view["excluded_by_reason"]) == len(full["excluded"])
    assert view["excluded_count"] == len(full["excluded"])
    # One sentence per code, naming the job's terms.
    reasons = {
        code: reason
        for group in view["excluded_by_reason"]
        for code, reason in zip(group["codes"], group["reasons"], strict=True)
    }
    assert reasons["country_not_allowed"] == "country not allowed by policy (IE, IN)"
    assert reasons["wrong_tier"] == "team works BPO, the job is KPO"
    assert "HIPAA" in reasons["missing_certifications"]
    # A team renamed or gone shows its id rather than failing.
    assert routing_view(stored_record(decision), {})["excluded"][0]["team_name"]


def test_an_old_record_reads_with_groups_too():
    decision = decide(
        request=request(), teams=[profile(i) for i in range(12)], weights=ScoreWeights()
    )
    old = decision.to_record()
    view = routing_view(old, {})
    assert view["excluded"] == old["excluded"]
    assert sum(group["count"] for group in view["excluded_by_reason"]) == len(old["excluded"])
    for group in view["excluded_by_reason"]:
        for team in group["teams"]:
            [entry] = [e for e in old["excluded"] if e["team_id"] == team["team_id"]]
            assert entry["codes"] == group["codes"]


async def test_routing_answers_grouped_and_per_team(client, databases):
    ireland = await create_team(
        client, name="Dublin Clinical", country="IE", certifications=["GDPR"]
    )
    await create_team(client, name="Pune Clinical", country="IN")
    await create_team(client, name="Manila Clinical", country="PH")
    await create_team(client, name="Legal Dublin", country="IE", skills=["legal"])
    job = await submit_job(
        client, policy={"allowed_countries": ["IE"], "required_certifications": ["GDPR"]}
    )
    assert job["assignment"]["team_id"] == ireland["id"]
    routing = (await client.get(f"/internal/v1/jobs/{job['id']}/routing")).json()
    assert routing["excluded_count"] == 3
    by_name = {e["team_name"]: e["codes"] for e in routing["excluded"]}
    assert by_name == {
        "Legal Dublin": ["lacks_skill", "missing_certifications"],
        "Manila Clinical": ["country_not_allowed", "missing_certifications"],
        "Pune Clinical": ["country_not_allowed", "missing_certifications"],
    }
    [pair] = [g for g in routing["excluded_by_reason"] if g["count"] == 2]
    assert {t["team_name"] for t in pair["teams"]} == {"Manila Clinical", "Pune Clinical"}
    assert pair["reasons"][0] == "country not allowed by policy (IE)"

    # A record stored before grouping (the old list) still reads, grouped on the fly.
    engine = create_engine(databases["router"])
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            old = {**routing, "excluded": routing["excluded"]}
            for key in ("excluded_by_reason", "excluded_count", "record_format"):
                old.pop(key, None)
            await session.execute(
                update(RoutingDecision)
                .where(RoutingDecision.job_id == job["id"])
                .values(record=old)
            )
    finally:
        await engine.dispose()
    again = (await client.get(f"/internal/v1/jobs/{job['id']}/routing")).json()
    assert again["excluded"] == routing["excluded"]
    assert sorted(g["count"] for g in again["excluded_by_reason"]) == [1, 2]


async def test_a_submit_writes_its_job_once_and_both_events_in_one_insert(
    databases, router_settings
):
    """Decided before the insert: three reads (teams, loads, the tenant's policy, after its
    lock on PostgreSQL), the job already routed, its team's load read again (the capacity
    check after the insert), both events in one multi-row INSERT, the routing's row in the
    event outbox (the feed's), the decision record: eight statements (nine on PostgreSQL)."""
    from sqlalchemy import event, select

    from services.router.db.models import Job, JobEvent
    from services.router.domain.classifier import LexiconClassifier
    from services.router.workflow import JobWorkflow, TeamWorkflow
    from tests.router.factories import team_fields

    engine = create_engine(databases["router"])
    maker = create_sessionmaker(engine)
    try:
        async with maker() as session, session.begin():
            await TeamWorkflow(session).create(
                team_fields(
                    name="Pune Clinical",
                    certifications=[],
                    languages=[],
                    capacity=5,
                    hourly_rate=20.0,
                ),
                now=NOW,
            )
        statements: list[str] = []

        def count(*args: Any) -> None:
            statements.append(str(args[2]).split(None, 1)[0].upper())

        settings = router_settings.model_copy(update={"triage_threshold": 0.0})
        submission = job_submission()
        event.listen(engine.sync_engine, "before_cursor_execute", count)
        async with maker() as session, session.begin():
            flow = JobWorkflow(session, settings=settings, classifier=LexiconClassifier())
            job, created = await flow.submit(submission, now=NOW)
        event.remove(engine.sync_engine, "before_cursor_execute", count)
        assert created
        assert job.status == "queued"
        assert job.escalate_at is not None
        # On PostgreSQL the tenant's lock is a statement of its own, before the policy's read.
        policy = ["SELECT", "SELECT"] if engine.dialect.name == "postgresql" else ["SELECT"]
        assert statements == [
            "SELECT",
            "SELECT",
            *policy,
            "INSERT",
            "SELECT",
            "INSERT",
            "INSERT",
            "INSERT",
        ]
        async with maker() as session:
            events = (
                await session.scalars(
                    select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.seq)
                )
            ).all()
            stored = await session.get(Job, job.id)
        assert [(e.seq, e.type, e.from_status, e.to_status) for e in events] == [
            (1, "created", None, "pending"),
            (2, "routed", "pending", "queued"),
        ]
        assert stored is not None
        assert stored.event_seq == 2
        # The same id again: nothing written twice.
        async with maker() as session, session.begin():
            flow = JobWorkflow(session, settings=settings, classifier=LexiconClassifier())
            again, created = await flow.submit(submission, now=NOW)
        assert not created
        assert again.id == job.id
    finally:
        await engine.dispose()
