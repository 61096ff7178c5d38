"""Operator tools: the triage queue, manual routing, the classification dry run, statistics."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from services.router.api.deps import JobsDep, NowDep, require_gateway
from services.router.api.schemas import (
    ClassifyCreate,
    ClassifyRead,
    ClassifyResult,
    EventCountRead,
    JobList,
    JobRead,
    QueueAge,
    QueueDepth,
    RouteCreate,
    SlaStats,
    StatsRead,
    TeamRef,
    WaitStats,
    job_read,
)
from services.router.db.repository import JobFilters, StatsRepository
from services.router.domain.lifecycle import JobStatus
from services.router.domain.routing import DataPolicy
from services.router.domain.stats import WAIT_SAMPLE, summarise_waits
from services.router.domain.taxonomy import Domain, Priority, Tier
from shared.list_filters import as_utc

router = APIRouter(
    prefix="/internal/v1", tags=["operators"], dependencies=[Depends(require_gateway)]
)


@router.get("/triage")
async def list_triage(
    jobs: JobsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    tenant_id: Annotated[str | None, Query(max_length=64)] = None,
    tier: Tier | None = None,
    domain: Annotated[list[Domain] | None, Query(max_length=17)] = None,
    priority: Annotated[list[Priority] | None, Query(max_length=3)] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> JobList:
    """Jobs waiting for an operator's decision, oldest first, narrowed by the filters."""
    filters = JobFilters(
        priorities=tuple(sorted({p.value for p in priority or ()})),
        tiers=(tier.value,) if tier else (),
        domains=tuple(sorted({d.value for d in domain or ()})),
        created_after=as_utc(created_after),
        created_before=as_utc(created_before, name="created_before"),
        tenant_id=tenant_id,
    )
    page = await jobs.jobs.by_status(
        status=JobStatus.TRIAGE.value, limit=limit, cursor=cursor, filters=filters
    )
    return JobList(
        data=[job_read(job) for job in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.post("/jobs/{job_id}/route")
async def route_job(job_id: str, body: RouteCreate, jobs: JobsDep, now: NowDep) -> JobRead:
    """Route a job by hand (triage, unroutable or queued); kept as a labelled example."""
    job = await jobs.route_manually(
        job_id, team_id=body.team_id, actor=body.actor, domain=body.domain, now=now
    )
    return job_read(job)


@router.post("/classify")
async def classify(body: ClassifyCreate, jobs: JobsDep, now: NowDep) -> ClassifyRead:
    """Dry run: how each text would classify and which team it would go to. Stores nothing."""
    policy = DataPolicy.from_json(body.policy.model_dump() if body.policy else None)
    profiles = await jobs.profiles()
    results: list[ClassifyResult] = []
    for item in body.items:
        classification = jobs.classifier.classify(
            title=item.title,
            description=item.description,
            service_hint=item.service.value if item.service else None,
        )
        team: TeamRef | None = None
        outcome: Literal["queued", "triage", "unroutable"]
        if not jobs.is_confident(classification):
            outcome = "triage"
        else:
            decision = jobs.decide(
                classification=classification,
                policy=policy,
                due_at=None,
                rejected_by=(),
                teams=profiles,
                now=now,
            )
            chosen = decision.chosen
            if chosen is None:
                outcome = "unroutable"
            else:
                outcome = "queued"
                team = TeamRef(id=chosen.team.id, name=chosen.team.name)
        results.append(
            ClassifyResult(
                tier=classification.tier,
                domain=classification.domain,
                confidence=classification.confidence,
                reasons=classification.reasons,
                team=team,
                status=outcome,
            )
        )
    return ClassifyRead(results=results)


# The default window of the recent figures (wait times, lease expiries): one day covers every
# shift of a follow-the-sun roster once.
STATS_WINDOW_SECONDS = 86_400


@router.get("/stats")
async def stats(
    jobs: JobsDep,
    now: NowDep,
    window_seconds: Annotated[int, Query(ge=60, le=30 * 86_400)] = STATS_WINDOW_SECONDS,
) -> StatsRead:
    """Queue depth by team, tier and domain; wait times; lease expiries; SLA breaches; counts.

    Every figure is an aggregate query; wait-time percentiles come from a bounded sample of the
    window's latest claims (see services/router/domain/stats.py).
    """
    repository = StatsRepository(jobs.session)
    since = now - timedelta(seconds=window_seconds)
    team_rows = await repository.team_queues()
    teams = await jobs.teams.all()
    queues = [
        QueueDepth(
            team_id=team.id,
            team_name=team.name,
            queued=team_rows[team.id].queued if team.id in team_rows else 0,
            in_progress=team_rows[team.id].in_progress if team.id in team_rows else 0,
            capacity=team.capacity,
        )
        for team in teams
    ]
    names = {team.id: team.name for team in teams}
    queue_ages = sorted(
        (
            QueueAge(
                team_id=row.team_id,
                team_name=names.get(row.team_id, row.team_id),
                queued=row.queued,
                oldest_queued_since=row.oldest_queued_since,
                oldest_queued_age_seconds=max(0.0, (now - row.oldest_queued_since).total_seconds()),
            )
            for row in team_rows.values()
            if row.oldest_queued_since is not None
        ),
        key=lambda age: (-age.oldest_queued_age_seconds, age.team_name, age.team_id),
    )
    queued_by_tier: dict[str, int] = {}
    queued_by_domain: dict[str, int] = {}
    for tier, domain, count in await repository.queued_by_tier_and_domain():
        queued_by_tier[tier] = queued_by_tier.get(tier, 0) + count
        queued_by_domain[domain] = queued_by_domain.get(domain, 0) + count
    waits = summarise_waits(
        await repository.recent_waits(since=since, until=now, limit=WAIT_SAMPLE),
        count=await repository.claim_count(since=since, until=now),
    )
    expiries = await repository.event_counts("lease_expired", since=since)
    sla = await repository.sla_counts(now=now)
    by_status = await jobs.jobs.count_by("status")
    return StatsRead(
        by_status=by_status,
        by_tier=await jobs.jobs.count_by("tier"),
        by_domain=await jobs.jobs.count_by("domain"),
        queues=queues,
        generated_at=now,
        window_seconds=window_seconds,
        queued_by_tier=queued_by_tier,
        queued_by_domain=queued_by_domain,
        queue_ages=queue_ages,
        waits=WaitStats(
            window_seconds=window_seconds,
            count=waits.count,
            sampled=waits.sampled,
            p50_seconds=waits.p50_seconds,
            p95_seconds=waits.p95_seconds,
            max_seconds=waits.max_seconds,
        ),
        lease_expiries=EventCountRead(total=expiries.total, in_window=expiries.in_window),
        sla=SlaStats(
            completed_late=sla.completed_late,
            completed_on_time=sla.completed_on_time,
            open_overdue=sla.open_overdue,
        ),
        triage=by_status.get(JobStatus.TRIAGE.value, 0),
        unroutable=by_status.get(JobStatus.UNROUTABLE.value, 0),
    )
