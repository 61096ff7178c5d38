"""A recheck decides jobs that stand alike together and loads only the stances it has something
to do with (JobWorkflow.enforce_tenant_policy, reroute_ineligible): it must leave nothing that
going through every job one by one would still change.

Random scenarios, on the run's real databases: teams that changed behind the passes' back
(country, certifications, paused), jobs in every status, policies and versions as races leave
them, the same policy stored as differently written JSON, reviews moved between teams. After
the grouped pass, the per-job pass over every job, as the recheck was before it grouped, must
change nothing.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import and_, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.router.db.models import Job, Team
from services.router.db.repository import TenantPolicyRepository
from services.router.domain.lifecycle import JobStatus
from services.router.domain.routing import DataPolicy
from services.router.workflow import JobWorkflow
from tests.router.factories import TENANT, claim, create_team, new_uuid, submit_job
from tests.router.test_lifecycle import Router, router_at

COUNTRIES = [None, ["IN"], ["IE", "IN"], ["IE"], ["PH", "IN"], ["PH"], ["US"]]
CERTIFICATIONS = [[], ["HIPAA"], ["HIPAA", "SOC2"]]
GOVERNED = [s.value for s in JobStatus if s not in (JobStatus.COMPLETED, JobStatus.CANCELLED)]


@pytest.fixture
async def router(router_settings, gateway_headers) -> AsyncIterator[Router]:
    async with router_at(router_settings, gateway_headers) as running_router:
        yield running_router


def _workflow(session: AsyncSession, router: Router) -> JobWorkflow:
    return JobWorkflow(session, settings=router.settings, classifier=router.app.state.classifier)


async def _every_job_of_the_tenant(router: Router, version: int, policy: DataPolicy) -> int:
    """The tenant recheck job by job; how many jobs it would change (rolled back)."""
    async with router.app.state.sessionmaker() as session, session.begin():
        workflow = _workflow(session, router)
        teams = {team.id: team for team in await workflow.teams.all()}
        query = (
            select(Job)
            .where(Job.tenant_id == TENANT, Job.status.in_(GOVERNED))
            .execution_options(populate_existing=True)
        )
        changed = 0
        for job in (await session.scalars(query)).all():
            tightened, moved = await workflow._enforce_on_job(
                job, version, policy, teams, now=router.clock()
            )
            changed += tightened or moved
        await session.rollback()
        return changed


async def _every_job_of_every_team(router: Router) -> int:
    """Each team's recheck job by job; how many jobs it would move (rolled back)."""
    async with router.app.state.sessionmaker() as session, session.begin():
        workflow = _workflow(session, router)
        moved = 0
        for team in await workflow.teams.all():
            held = or_(
                and_(
                    Job.team_id == team.id,
                    Job.status.in_((JobStatus.QUEUED.value, JobStatus.IN_PROGRESS.value)),
                ),
                and_(
                    or_(Job.review_team_id == team.id, Job.team_id == team.id),
                    Job.status == JobStatus.IN_REVIEW.value,
                ),
            )
            query = select(Job).where(held).execution_options(populate_existing=True)
            for job in (await session.scalars(query)).all():
                moved += await workflow._move_if_ineligible(
                    job, team, DataPolicy.from_json(job.policy), now=router.clock()
                )
        await session.rollback()
        return moved


def _random_policy(rng: random.Random, reviewers: list[str]) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "allowed_countries": rng.choice(COUNTRIES),
        "required_certifications": rng.choice(CERTIFICATIONS),
        "require_e2e": False,
    }
    if rng.random() < 0.3:
        policy["require_review"] = True
        if rng.random() < 0.6:
            policy["review_team_id"] = rng.choice(reviewers)
    return policy


def _written_otherwise(rng: random.Random, policy: dict[str, Any]) -> str:
    """The same policy as JSON text in another key order and spacing."""
    items = list(policy.items())
    rng.shuffle(items)
    separators = rng.choice([(",", ":"), (", ", ": "), (" ,", " :  ")])
    return json.dumps(dict(items), indent=rng.choice([None, 1]), separators=separators)


async def _scenario(router: Router, seed: int) -> tuple[int, DataPolicy]:
    """Teams, 40 jobs in every status, changes behind the passes' back, and a tenant policy
    stored without its pass; the new version and policy."""
    rng = random.Random(seed)
    both = ["clinical", "research"]
    teams = [
        await create_team(router.http, country="IN", certifications=["HIPAA", "SOC2"], skills=both),
        await create_team(router.http, country="IE", certifications=["HIPAA"], skills=both),
        await create_team(router.http, country="PH", certifications=[], skills=both),
        await create_team(router.http, country="IN", skills=["research"]),
    ]
    team_ids = [team["id"] for team in teams]
    for number in range(40):
        # Every tenth is text no team's skills match: triage or unroutable.
        vague = {"title": "zz", "description": "qwerty asdf zxcv"} if number % 10 == 0 else {}
        job = await submit_job(router.http, policy=_random_policy(rng, team_ids), **vague)
        if job["status"] != "queued" or rng.random() >= 0.5:
            continue
        member = new_uuid()
        if (await claim(router.http, job, member)).status_code == 200 and rng.random() < 0.6:
            await router.http.post(
                f"/internal/v1/teams/{job['assignment']['team_id']}/jobs/{job['id']}/complete",
                json={"member_id": member, "result": {"coded": 1}},
            )
    async with router.app.state.sessionmaker() as session, session.begin():
        postgres = session.get_bind().dialect.name == "postgresql"
        for team_id in team_ids:
            values: dict[str, Any] = {}
            if rng.random() < 0.4:
                values["country"] = rng.choice(["IN", "IE", "PH", "US"])
            if rng.random() < 0.4:
                values["certifications"] = rng.choice(CERTIFICATIONS)
            if rng.random() < 0.3:
                values["active"] = False
            if values:
                await session.execute(update(Team).where(Team.id == team_id).values(**values))
        for job in (await session.scalars(select(Job).where(Job.tenant_id == TENANT))).all():
            draw = rng.random()
            if draw < 0.3:
                await session.execute(
                    update(Job)
                    .where(Job.id == job.id)
                    .values(
                        policy=_random_policy(rng, team_ids),
                        policy_version=rng.choice([None, 1, 2, 3]),
                    )
                )
            elif draw < 0.5:
                stored = "CAST(:policy AS json)" if postgres else ":policy"
                await session.execute(
                    text(f"UPDATE jobs SET policy = {stored}, policy_version = :v WHERE id = :id"),
                    {
                        "policy": _written_otherwise(rng, job.policy),
                        "v": rng.choice([None, 1, 2, 3]),
                        "id": job.id,
                    },
                )
            if job.status == JobStatus.IN_REVIEW.value and rng.random() < 0.3:
                await session.execute(
                    update(Job).where(Job.id == job.id).values(review_team_id=rng.choice(team_ids))
                )
    version = rng.choice([2, 3])
    tenant_policy = _random_policy(rng, team_ids)
    # Past the teams' own recheck window, as in test_eligibility.
    router.clock.set(seconds=router.settings.policy_recheck_seconds + 1)
    async with router.app.state.sessionmaker() as session, session.begin():
        stored_policy = await TenantPolicyRepository(session).put_if_newer(
            TENANT, version=version, policy=tenant_policy, now=router.clock()
        )
        assert stored_policy
    return version, DataPolicy.from_json(tenant_policy)


@pytest.mark.parametrize("seed", range(4))
async def test_after_the_grouped_passes_going_job_by_job_changes_nothing(router: Router, seed: int):
    version, policy = await _scenario(router, seed)
    assert await _every_job_of_the_tenant(router, version, policy) > 0  # there is work to do
    async with router.app.state.sessionmaker() as session, session.begin():
        change = await _workflow(session, router).enforce_tenant_policy(
            TENANT, version, policy, now=router.clock()
        )
    assert change.tightened + change.moved > 0
    assert await _every_job_of_the_tenant(router, version, policy) == 0
    async with router.app.state.sessionmaker() as session, session.begin():
        workflow = _workflow(session, router)
        for team in await workflow.teams.all():
            await workflow.reroute_ineligible(team, now=router.clock())
    assert await _every_job_of_every_team(router) == 0


@pytest.mark.parametrize("seed", range(4))
async def test_after_the_grouped_team_passes_going_job_by_job_moves_nothing(
    router: Router, seed: int
):
    await _scenario(router, seed)
    assert await _every_job_of_every_team(router) > 0  # there is work to do
    async with router.app.state.sessionmaker() as session, session.begin():
        workflow = _workflow(session, router)
        for team in await workflow.teams.all():
            await workflow.reroute_ineligible(team, now=router.clock())
    assert await _every_job_of_every_team(router) == 0
