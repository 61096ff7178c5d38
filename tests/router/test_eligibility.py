"""A team that stops meeting a job's data policy (its country or certifications changed after
the job was routed there) loses the job: the team change moves its queued and leased jobs on,
and every claim and read of the data checks the policy again. On the run's real databases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import update

from services.router.db.models import Job, Team
from services.router.db.repository import TenantPolicyRepository
from tests.router.factories import (
    OTHER_TENANT,
    TENANT,
    claim,
    create_team,
    new_uuid,
    submit_job,
)
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
            update(Team)
            .where(Team.id == pune["id"])
            .values(certifications=["GDPR"], updated_at=router.clock())
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
    # The sweeper's recheck of recently changed teams moves them on (no other team: parked).
    assert (await router.sweep()).policed == 2
    for job_id in (waiting["id"], leased["id"]):
        parked = await router.job(job_id)
        assert (parked["status"], parked["lease"]) == ("unroutable", None)


async def test_a_paused_team_hands_on_its_queue_and_works_its_leases_to_the_end(router: Router):
    """Pausing a team (``active`` false) stops new work reaching it: routing skips it, its
    queued jobs move on now, and its members claim nothing more; a lease already held runs to
    its end (the holder still reads the data and completes)."""
    pune = await create_team(router.http, name="Pune Clinical", quality=0.95)
    dublin = await create_team(router.http, name="Dublin Clinical", country="IE", quality=0.6)
    queued = await submit_job(router.http)
    leased = await submit_job(router.http)
    member = new_uuid()
    assert (await claim(router.http, leased, member)).status_code == 200

    await _patch_team(router, pune["id"], active=False)

    moved = await router.job(queued["id"])
    assert (moved["status"], moved["assignment"]["team_id"]) == ("queued", dublin["id"])
    event = (await router.events(queued["id"]))[-1]
    assert (event["type"], event["actor"]) == ("rerouted", "system")
    assert "Pune Clinical is paused and takes no new jobs" in event["reason"]
    kept = await router.job(leased["id"])
    assert (kept["status"], kept["lease"]["member_id"]) == ("in_progress", member)
    assert (await _grant(router, leased, member)).status_code == 200
    # A queued job the move has not reached (the team paused outside the update route) is
    # not claimed, and the sweeper's recheck hands it on.
    straggler = await submit_job(router.http)
    assert straggler["assignment"]["team_id"] == dublin["id"]  # routing skips a paused team
    async with router.app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(Job).where(Job.id == straggler["id"]).values(team_id=pune["id"], status="queued")
        )
    refused = await claim(router.http, straggler | {"assignment": {"team_id": pune["id"]}}, member)
    assert refused.status_code == 409, refused.text
    assert "paused" in refused.json()["detail"]
    assert (await router.sweep()).policed == 1
    assert (await router.job(straggler["id"]))["assignment"]["team_id"] == dublin["id"]
    # The lease held through the pause ends long after (expiry puts its job back in the
    # paused team's queue): the sweep hands it on as well, not the escalation hours later.
    router.clock.set(seconds=router.settings.lease_seconds + 3600)
    report = await router.sweep()
    assert (report.requeued, report.policed) == (1, 1)
    expired = await router.job(leased["id"])
    assert (expired["status"], expired["assignment"]["team_id"]) == ("queued", dublin["id"])


# ----------------------------------------------------------------------------- tenant policy


async def _push_policy(router: Router, tenant_id: str, version: int, **policy: Any) -> Any:
    response = await router.http.put(
        f"/internal/v1/tenants/{tenant_id}/policy", json={"version": version, "policy": policy}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_tightened_tenant_policy_holds_the_tenant_s_jobs_to_it(router: Router):
    pune = await create_team(router.http, name="Pune Clinical", quality=0.95)
    dublin = await create_team(router.http, name="Dublin Clinical", country="IE", quality=0.6)
    queued = await submit_job(router.http)
    leased = await submit_job(router.http)
    elsewhere = await submit_job(router.http, tenant_id=OTHER_TENANT)
    assert (await claim(router.http, leased, new_uuid())).status_code == 200

    change = await _push_policy(router, TENANT, 2, allowed_countries=["IE"])
    assert (change["applied"], change["tightened"], change["moved"]) == (True, 2, 2)

    for job_id in (queued["id"], leased["id"]):
        moved = await router.job(job_id)
        assert (moved["status"], moved["assignment"]["team_id"]) == ("queued", dublin["id"])
        assert moved["policy"]["allowed_countries"] == ["IE"]
        event = (await router.events(job_id))[-1]
        assert event["type"] == "rerouted"
        assert "country IN is not allowed by the job's policy" in event["reason"]
    # Another tenant's job is not touched.
    other = await router.job(elsewhere["id"])
    assert (other["assignment"]["team_id"], other["policy"]["allowed_countries"]) == (
        pune["id"],
        None,
    )
    # A repeated or older push changes nothing; a submission made with the old policy (it left
    # the gateway before the change) is held to the new one.
    for version in (2, 1):
        repeated = await _push_policy(router, TENANT, version)
        assert (repeated["applied"], repeated["tightened"]) == (False, 0)
    late = await submit_job(router.http)
    assert late["policy"]["allowed_countries"] == ["IE"]
    assert late["assignment"]["team_id"] == dublin["id"]


async def test_a_loosened_policy_reaches_new_jobs_and_no_country_left_parks_a_job(router: Router):
    await create_team(router.http, name="Pune Clinical", quality=0.95)
    await create_team(router.http, name="Dublin Clinical", country="IE", quality=0.6)
    narrowed = await submit_job(
        router.http, policy=INDIA_OR_IRELAND | {"allowed_countries": ["IN"]}
    )
    await _push_policy(router, TENANT, 2, allowed_countries=["IE", "IN"])
    assert (await router.job(narrowed["id"]))["policy"]["allowed_countries"] == ["IN"]

    # Ireland only: the job asked for India only, so no team may take it now.
    await _push_policy(router, TENANT, 3, allowed_countries=["IE"])
    parked = await router.job(narrowed["id"])
    assert (parked["status"], parked["policy"]["allowed_countries"]) == ("unroutable", [])
    # Loosened again: the parked job keeps what it had; a new job gets the looser policy.
    await _push_policy(router, TENANT, 4)
    assert (await router.job(narrowed["id"]))["policy"]["allowed_countries"] == []
    assert (await submit_job(router.http))["policy"]["allowed_countries"] is None


async def test_a_submission_that_crossed_a_policy_change_is_held_to_it(router: Router):
    """A submission that read the old policy just before a change and was stored after the
    change's pass: its team may not claim it or read its data, and the sweeper moves it."""
    await create_team(router.http, name="Pune Clinical", quality=0.95)
    dublin = await create_team(router.http, name="Dublin Clinical", country="IE", quality=0.6)
    crossed = await submit_job(router.http)
    async with router.app.state.sessionmaker() as session, session.begin():
        stored = await TenantPolicyRepository(session).put_if_newer(
            TENANT, version=2, policy={"allowed_countries": ["IE"]}, now=router.clock()
        )
        assert stored  # the change, without the pass over the jobs that raced it

    refused = await claim(router.http, crossed, new_uuid())
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"].endswith("/team-not-eligible")

    assert (await router.sweep()).policed == 2  # tightened, and moved
    moved = await router.job(crossed["id"])
    assert moved["assignment"]["team_id"] == dublin["id"]
    assert (await claim(router.http, moved, new_uuid())).status_code == 200
    # Past the recheck window the sweeper leaves the tenant alone.
    router.clock.set(seconds=router.settings.policy_recheck_seconds + 1)
    assert (await router.sweep()).policed == 0


async def test_a_submission_that_read_the_old_policy_waits_for_the_change(
    router: Router, backend: str
):
    """A policy change in flight (stored, not yet committed) and a submission at once: on
    PostgreSQL the submission waits for the change and is decided under it; on SQLite, where
    it may read the old policy first, the sweeper's recheck holds it to the change."""
    await create_team(router.http, name="Pune Clinical", quality=0.95)
    await create_team(router.http, name="Dublin Clinical", country="IE")
    async with router.app.state.sessionmaker() as session:
        await session.begin()
        stored = await TenantPolicyRepository(session).put_if_newer(
            TENANT, version=2, policy={"allowed_countries": ["IE"]}, now=router.clock()
        )
        assert stored
        submitting = asyncio.create_task(submit_job(router.http))
        await asyncio.sleep(0.5)
        # It waits for the change (PostgreSQL: the tenant's lock; SQLite: the write lock).
        assert not submitting.done()
        await session.commit()
    job = await submitting
    if backend == "sqlite":
        await router.sweep()
    stored_job = await router.job(job["id"])
    assert stored_job["policy"]["allowed_countries"] == ["IE"]
    assert stored_job["assignment"]["team_name"] == "Dublin Clinical"


async def test_a_job_made_under_a_newer_policy_is_not_narrowed_by_an_older_one(router: Router):
    """The gateway may submit under a policy the router has not been pushed yet (a loosening,
    version 3, while the router holds version 2): the job keeps its policy, and its team may
    claim it."""
    await create_team(router.http, name="Pune Clinical", quality=0.95)
    manila = await create_team(router.http, name="Manila Clinical", country="PH")
    await _push_policy(router, TENANT, 2, allowed_countries=["IN"])
    job = await submit_job(router.http, policy={"allowed_countries": ["PH"]}, policy_version=3)
    assert job["policy"]["allowed_countries"] == ["PH"]
    assert job["assignment"]["team_id"] == manila["id"]
    assert (await claim(router.http, job, new_uuid())).status_code == 200
    # Version 3 arrives: nothing to do for a job made under it.
    change = await _push_policy(router, TENANT, 3, allowed_countries=["IN", "PH"])
    assert (change["tightened"], change["moved"]) == (0, 0)


async def test_a_change_not_yet_applied_to_a_job_still_asks_for_review_and_e2e(router: Router):
    """A pushed change the job has not been held to yet (on SQLite, until the sweeper's
    recheck) counts for what the job's holder does now: an open grant asks for end-to-end
    delivery, and completing goes to review."""
    await create_team(router.http, name="Pune Clinical")
    job = await submit_job(router.http)
    member = new_uuid()
    leased = await claim(router.http, job, member)
    assert leased.status_code == 200, leased.text
    async with router.app.state.sessionmaker() as session, session.begin():
        stored = await TenantPolicyRepository(session).put_if_newer(
            TENANT,
            version=2,
            policy={"require_e2e": True, "require_review": True},
            now=router.clock(),
        )
        assert stored  # the change, without the pass over the jobs
    granted = await _grant(router, job, member)
    assert granted.status_code == 200, granted.text
    assert granted.json()["require_e2e"] is True
    team_id = job["assignment"]["team_id"]
    done = await router.http.post(
        f"/internal/v1/teams/{team_id}/jobs/{job['id']}/complete",
        json={"member_id": member, "result": {"coded": 3}},
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "in_review"


async def _store_policy_without_a_pass(router: Router, version: int, policy: dict[str, Any]):
    # Later than the teams' own recheck window: only the tenant's change is rechecked.
    router.clock.set(seconds=router.settings.policy_recheck_seconds + 1)
    async with router.app.state.sessionmaker() as session, session.begin():
        stored = await TenantPolicyRepository(session).put_if_newer(
            TENANT, version=version, policy=policy, now=router.clock()
        )
        assert stored


async def _tightened_but_not_moved(
    router: Router, job_id: str, version: int, policy: dict[str, Any]
) -> None:
    """As a pass leaves a job whose tightening committed while its move lost a race."""
    async with router.app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(Job).where(Job.id == job_id).values(policy=policy, policy_version=version)
        )


async def test_a_job_already_under_the_change_still_leaves_a_team_that_does_not_meet_it(
    router: Router,
):
    """The recheck decides jobs that stand alike together and loads only those with something
    to do: a job already under the new version, at a team the version excludes, is one."""
    await create_team(router.http, name="Pune Clinical", quality=0.95)
    dublin = await create_team(router.http, name="Dublin Clinical", country="IE", quality=0.6)
    stranded = await submit_job(router.http)
    settled = [await submit_job(router.http, policy=INDIA_OR_IRELAND) for _ in range(3)]
    ireland = {**INDIA_OR_IRELAND, "allowed_countries": ["IE"]}
    await _store_policy_without_a_pass(router, 2, {"allowed_countries": ["IE"]})
    await _tightened_but_not_moved(router, stranded["id"], 2, ireland)
    for job in settled:
        await _tightened_but_not_moved(router, job["id"], 2, INDIA_OR_IRELAND)

    assert (await router.sweep()).policed == 1
    moved = await router.job(stranded["id"])
    assert (moved["assignment"]["team_id"], moved["policy"]["allowed_countries"]) == (
        dublin["id"],
        ["IE"],
    )
    # Made under the new version with a policy their team meets: left where they are.
    for job in settled:
        assert (await router.job(job["id"]))["assignment"]["team_name"] == "Pune Clinical"


async def test_a_review_already_under_the_change_still_leaves_a_reviewer_it_excludes(
    router: Router,
):
    dublin = await create_team(router.http, name="Dublin Clinical", country="IE")
    pune_qa = await create_team(router.http, name="Pune QA", skills=["research"])
    review = {"require_review": True, "review_team_id": pune_qa["id"]}
    job = await submit_job(router.http, policy=INDIA_OR_IRELAND | review)
    member = new_uuid()
    assert (await claim(router.http, job, member)).status_code == 200
    completed = await router.http.post(
        f"/internal/v1/teams/{dublin['id']}/jobs/{job['id']}/complete",
        json={"member_id": member, "result": {"coded": 3}},
    )
    assert completed.json()["status"] == "in_review", completed.text
    await _store_policy_without_a_pass(router, 2, {"allowed_countries": ["IE"], **review})
    ireland = {**INDIA_OR_IRELAND, "allowed_countries": ["IE"], **review}
    await _tightened_but_not_moved(router, job["id"], 2, ireland)

    assert (await router.sweep()).policed == 1
    event = (await router.events(job["id"]))[-1]
    assert event["type"] == "review_moved"
    assert "Pune QA may no longer review it (country IN is not allowed" in event["reason"]
