"""Operator tools: the triage queue, manual routing, the classification dry run, statistics."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from services.router.api.deps import JobsDep, NowDep, require_gateway
from services.router.api.schemas import (
    ClassifyCreate,
    ClassifyRead,
    ClassifyResult,
    JobList,
    JobRead,
    QueueDepth,
    RouteCreate,
    StatsRead,
    TeamRef,
    job_read,
)
from services.router.domain.lifecycle import JobStatus
from services.router.domain.routing import DataPolicy

router = APIRouter(
    prefix="/internal/v1", tags=["operators"], dependencies=[Depends(require_gateway)]
)


@router.get("/triage")
async def list_triage(
    jobs: JobsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> JobList:
    """Jobs waiting for an operator's decision, oldest first."""
    page = await jobs.jobs.by_status(status=JobStatus.TRIAGE.value, limit=limit, cursor=cursor)
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


@router.get("/stats")
async def stats(jobs: JobsDep) -> StatsRead:
    """Job counts by status, tier and domain, and every team's queue depth (grouped queries)."""
    depths: dict[str, dict[str, int]] = {}
    for team_id, job_status, count in await jobs.jobs.queue_depths():
        depths.setdefault(team_id, {})[job_status] = count
    queues = [
        QueueDepth(
            team_id=team.id,
            team_name=team.name,
            queued=depths.get(team.id, {}).get(JobStatus.QUEUED.value, 0),
            in_progress=depths.get(team.id, {}).get(JobStatus.IN_PROGRESS.value, 0),
            capacity=team.capacity,
        )
        for team in await jobs.teams.all()
    ]
    return StatsRead(
        by_status=await jobs.jobs.count_by("status"),
        by_tier=await jobs.jobs.count_by("tier"),
        by_domain=await jobs.jobs.count_by("domain"),
        queues=queues,
    )
