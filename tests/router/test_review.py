"""Four-eyes review before ``completed`` (issue 4 item 5), on the run's real databases, with the
router's clock moved by hand (never a sleep)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.router.app import create_app
from services.router.db.models import Job
from services.router.db.repository import TenantPolicyRepository
from services.router.domain.lifecycle import JobStatus, can_transition
from services.router.domain.review import reviewer_refusals
from services.router.domain.routing import DataPolicy
from services.router.settings import RouterSettings
from services.router.workflow import JobWorkflow
from tests.conftest import running
from tests.router.factories import create_team, new_uuid, result_receipt, submit_job
from tests.router.test_api import decode_grant

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
REVIEW: dict[str, Any] = {
    "allowed_countries": None,
    "required_certifications": [],
    "require_e2e": False,
    "require_review": True,
}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Router:
    app: FastAPI
    http: httpx.AsyncClient
    clock: Clock

    async def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return await self.http.post(path, json=body)

    async def claim(self, job: dict[str, Any], member: str) -> dict[str, Any]:
        team = job["assignment"]["team_id"]
        claimed = await self.post(
            f"/internal/v1/teams/{team}/jobs/{job['id']}/claim", {"member_id": member}
        )
        assert claimed.status_code == 200, claimed.text
        leased: dict[str, Any] = claimed.json()
        return leased

    async def claim_and_complete(
        self, job: dict[str, Any], member: str, **extra: Any
    ) -> httpx.Response:
        await self.claim(job, member)
        return await self.complete(job, member, **extra)

    async def complete(self, job: dict[str, Any], member: str, **extra: Any) -> httpx.Response:
        team = job["assignment"]["team_id"]
        return await self.post(
            f"/internal/v1/teams/{team}/jobs/{job['id']}/complete",
            {"member_id": member, "result": {"coded": 3}, **extra},
        )

    async def reviews(self, team_id: str, member: str) -> list[dict[str, Any]]:
        answer = await self.http.get(
            f"/internal/v1/teams/{team_id}/reviews", params={"member_id": member}
        )
        assert answer.status_code == 200, answer.text
        data: list[dict[str, Any]] = answer.json()["data"]
        return data

    async def decide(
        self, team_id: str, job_id: str, action: str, member: str, **body: Any
    ) -> httpx.Response:
        return await self.post(
            f"/internal/v1/teams/{team_id}/reviews/{job_id}/{action}", {"member_id": member, **body}
        )

    async def job(self, job_id: str) -> dict[str, Any]:
        answer = await self.http.get(f"/internal/v1/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        job: dict[str, Any] = answer.json()
        return job

    async def events(self, job_id: str) -> list[dict[str, Any]]:
        answer = await self.http.get(f"/internal/v1/jobs/{job_id}/events")
        events: list[dict[str, Any]] = answer.json()["data"]
        return events


@pytest.fixture
async def router(
    router_settings: RouterSettings, gateway_headers: dict[str, str]
) -> AsyncIterator[Router]:
    app = create_app(router_settings)
    async with running(app) as http:
        clock = Clock()
        app.state.clock = clock
        http.headers.update(gateway_headers)
        yield Router(app, http, clock)


ALICE, BOB, CAROL = new_uuid(), new_uuid(), new_uuid()


# ----------------------------------------------------------------------------- pure rules


def test_review_statuses_in_the_lifecycle():
    assert can_transition(JobStatus.IN_PROGRESS, JobStatus.IN_REVIEW)
    assert can_transition(JobStatus.IN_REVIEW, JobStatus.COMPLETED)
    assert can_transition(JobStatus.IN_REVIEW, JobStatus.IN_PROGRESS)
    assert can_transition(JobStatus.IN_REVIEW, JobStatus.CANCELLED)
    assert not can_transition(JobStatus.QUEUED, JobStatus.IN_REVIEW)
    # Only when no team the policy allows may review the work (it is routed to be redone).
    assert can_transition(JobStatus.IN_REVIEW, JobStatus.QUEUED)


def test_a_reviewer_team_meets_the_data_policy():
    policy = DataPolicy(
        allowed_countries=frozenset({"IE"}), required_certifications=frozenset({"GDPR"})
    )
    assert (
        reviewer_refusals(active=True, country="IE", certifications=["GDPR"], policy=policy) == []
    )
    refusals = reviewer_refusals(active=False, country="IN", certifications=[], policy=policy)
    assert len(refusals) == 3


def test_review_fields_only_when_set_in_the_policy_json():
    assert "require_review" not in DataPolicy().to_json()
    team = new_uuid()
    policy = DataPolicy.from_json({"require_review": True, "review_team_id": team})
    assert policy.to_json()["require_review"] is True
    assert DataPolicy.from_json(policy.to_json()) == policy


# ----------------------------------------------------------------------------- the flow


async def test_review_by_another_member_of_the_team(router):
    team = await create_team(router.http)
    job = await submit_job(router.http, policy=REVIEW)
    done = await router.claim_and_complete(job, ALICE)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "in_review"
    assert done.json()["lease"] is None
    assert done.json()["completed_at"] is None
    # The result is held from the client until a reviewer approves.
    held = await router.http.get(
        f"/internal/v1/jobs/{job['id']}/result", params={"tenant_id": job["tenant_id"]}
    )
    assert held.status_code == 409
    submitted = (await router.events(job["id"]))[-1]
    assert (submitted["type"], submitted["from_status"], submitted["to_status"]) == (
        "submitted_for_review",
        "in_progress",
        "in_review",
    )
    assert submitted["actor"] == f"member:{ALICE}"
    assert "another member of" in submitted["reason"]

    # The author does not see it among the reviews, nor may decide it.
    assert await router.reviews(team["id"], ALICE) == []
    own = await router.decide(team["id"], job["id"], "approve", ALICE)
    assert own.status_code == 403
    assert own.headers["content-type"].startswith("application/problem+json")
    assert own.json()["type"].endswith("own-work-review")
    assert (await router.job(job["id"]))["status"] == "in_review"

    [waiting] = await router.reviews(team["id"], BOB)
    assert waiting["id"] == job["id"]
    assert waiting["review"]["submitted_by"] == ALICE
    assert waiting["review"]["result"] == {"coded": 3}

    router.clock.now = T0 + timedelta(minutes=5)
    approved = await router.decide(team["id"], job["id"], "approve", BOB, comment="looks right")
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "completed"
    assert approved.json()["completed_at"].startswith("2026-11-23T09:05")
    last = (await router.events(job["id"]))[-1]
    assert (last["type"], last["actor"], last["reason"]) == (
        "approved",
        f"member:{BOB}",
        "looks right",
    )
    result = await router.http.get(
        f"/internal/v1/jobs/{job['id']}/result", params={"tenant_id": job["tenant_id"]}
    )
    assert result.status_code == 200
    assert result.json()["result"] == {"coded": 3}
    # Decided: a second decision is a conflict and changes nothing.
    again = await router.decide(team["id"], job["id"], "send-back", CAROL, comment="late")
    assert again.status_code == 409
    assert (await router.job(job["id"]))["status"] == "completed"


async def test_send_back_returns_the_work_to_its_author_with_the_comment(router):
    team = await create_team(router.http)
    job = await submit_job(router.http, policy=REVIEW)
    assert (await router.claim_and_complete(job, ALICE)).status_code == 200

    for bad in ({}, {"comment": ""}, {"comment": "   "}, {"comment": "x" * 2001}):
        refused = await router.decide(team["id"], job["id"], "send-back", BOB, **bad)
        assert refused.status_code == 422, bad
    assert (await router.job(job["id"]))["status"] == "in_review"

    router.clock.now = T0 + timedelta(minutes=10)
    sent = await router.decide(
        team["id"], job["id"], "send-back", BOB, comment="Event 4 is serious; recode it."
    )
    assert sent.status_code == 200, sent.text
    body = sent.json()
    assert body["status"] == "in_progress"
    assert body["lease"]["member_id"] == ALICE
    assert body["lease"]["expires_at"].startswith("2026-11-23T09:25")  # 900 s lease
    last = (await router.events(job["id"]))[-1]
    assert (last["type"], last["from_status"], last["to_status"], last["actor"]) == (
        "sent_back",
        "in_review",
        "in_progress",
        f"member:{BOB}",
    )
    assert last["reason"] == "Event 4 is serious; recode it."
    # Nobody else holds it now, and the reviewer cannot complete it.
    assert (await router.complete(job, BOB)).status_code == 409
    assert await router.reviews(team["id"], BOB) == []

    # The author fixes it and submits again; the reviewer approves.
    again = await router.complete(job, ALICE, result={"coded": 4})
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "in_review"
    [waiting] = await router.reviews(team["id"], BOB)
    assert waiting["review"]["result"] == {"coded": 4}
    assert (await router.decide(team["id"], job["id"], "approve", BOB)).status_code == 200


async def test_a_sent_back_job_whose_author_never_returns_goes_back_to_the_queue(router):
    from services.router.sweeper import sweep_once

    team = await create_team(router.http)
    job = await submit_job(router.http, policy=REVIEW)
    assert (await router.claim_and_complete(job, ALICE)).status_code == 200
    sent = await router.decide(team["id"], job["id"], "send-back", BOB, comment="redo")
    assert sent.status_code == 200
    await sweep_once(
        router.app.state.sessionmaker,
        settings=router.app.state.settings,
        classifier=router.app.state.classifier,
        now=T0 + timedelta(seconds=901),
    )
    assert (await router.job(job["id"]))["status"] == "queued"


async def test_jobs_without_review_complete_directly(router):
    await create_team(router.http)
    job = await submit_job(router.http)
    done = await router.claim_and_complete(job, ALICE)
    assert done.json()["status"] == "completed"


async def test_a_reviewer_team_reviews_and_the_working_team_does_not(router):
    workers = await create_team(router.http, name="Pune Clinical")
    reviewers = await create_team(
        router.http, name="Dublin QA", country="IE", skills=["research"], capacity=1
    )
    policy = {**REVIEW, "review_team_id": reviewers["id"]}
    job = await submit_job(router.http, policy=policy)
    assert job["assignment"]["team_id"] == workers["id"]
    done = await router.claim_and_complete(job, ALICE)
    assert done.json()["status"] == "in_review"
    assert "reviewed by team Dublin QA" in (await router.events(job["id"]))[-1]["reason"]

    # Another member of the working team is not the reviewer: the job is not theirs to see.
    assert await router.reviews(workers["id"], BOB) == []
    refused = await router.decide(workers["id"], job["id"], "approve", BOB)
    assert refused.status_code == 404
    [waiting] = await router.reviews(reviewers["id"], CAROL)
    assert waiting["review"]["team_id"] == reviewers["id"]
    approved = await router.decide(reviewers["id"], job["id"], "approve", CAROL)
    assert approved.status_code == 200
    # A reviewer team's review does not take its capacity, nor did the job occupy it.
    assert approved.json()["assignment"]["team_id"] == workers["id"]


async def test_a_reviewer_team_in_a_forbidden_country_never_sees_the_job(router):
    workers = await create_team(router.http, name="Dublin Clinical", country="IE")
    offshore = await create_team(router.http, name="Manila QA", country="PH", skills=["research"])
    policy = {**REVIEW, "allowed_countries": ["IE"], "review_team_id": offshore["id"]}
    job = await submit_job(router.http, policy=policy)
    assert job["assignment"]["team_id"] == workers["id"]
    done = await router.claim_and_complete(job, ALICE)
    assert done.json()["status"] == "in_review"
    reason = (await router.events(job["id"]))[-1]["reason"]
    assert "another member of Dublin Clinical" in reason
    assert "country PH is not allowed" in reason
    assert await router.reviews(offshore["id"], CAROL) == []
    for action in ("approve", "grant"):
        body = {"purpose": "job"} if action == "grant" else {}
        answer = await router.decide(offshore["id"], job["id"], action, CAROL, **body)
        assert answer.status_code == 404, action
    assert (
        await router.http.get(
            f"/internal/v1/teams/{offshore['id']}/reviews/{job['id']}", params={"member_id": CAROL}
        )
    ).status_code == 404
    # The working team's other members review instead.
    assert len(await router.reviews(workers["id"], BOB)) == 1


async def test_a_reviewer_team_that_later_leaves_the_policy_loses_the_job(router):
    await create_team(router.http, name="Dublin Clinical", country="IE")
    qa = await create_team(router.http, name="Cork QA", country="IE", skills=["research"])
    policy = {**REVIEW, "allowed_countries": ["IE"], "review_team_id": qa["id"]}
    job = await submit_job(router.http, policy=policy)
    assert (await router.claim_and_complete(job, ALICE)).json()["status"] == "in_review"
    assert len(await router.reviews(qa["id"], CAROL)) == 1
    moved = await router.http.patch(f"/internal/v1/teams/{qa['id']}", json={"country": "IN"})
    assert moved.status_code == 200, moved.text
    assert await router.reviews(qa["id"], CAROL) == []
    assert (await router.decide(qa["id"], job["id"], "approve", CAROL)).status_code == 404
    # The review is not left without a team: it moves to the working team's other members.
    event = (await router.events(job["id"]))[-1]
    assert (event["type"], event["actor"]) == ("review_moved", "system")
    assert "Cork QA may no longer review it (country IN is not allowed" in event["reason"]
    assert "reviewed by another member of Dublin Clinical" in event["reason"]
    workers = (await router.job(job["id"]))["assignment"]["team_id"]
    [waiting] = await router.reviews(workers, BOB)
    assert waiting["id"] == job["id"]
    assert (await router.decide(workers, job["id"], "approve", BOB)).status_code == 200


async def test_work_in_review_nobody_allowed_may_review_is_done_anew(router):
    """A tenant's change excludes both the working team and its reviewer team: nobody the
    policy allows could approve the work, so the job is routed to be done again."""
    pune = await create_team(router.http, name="Pune Clinical", quality=0.95)
    await create_team(router.http, name="Dublin Clinical", country="IE", quality=0.5)
    job = await submit_job(router.http, policy=REVIEW)
    assert job["assignment"]["team_id"] == pune["id"]
    assert (await router.claim_and_complete(job, ALICE)).json()["status"] == "in_review"

    pushed = await router.http.put(
        f"/internal/v1/tenants/{job['tenant_id']}/policy",
        json={"version": 2, "policy": {"allowed_countries": ["IE"], "require_review": True}},
    )
    assert pushed.status_code == 200, pushed.text
    again = await router.job(job["id"])
    assert again["status"] == "queued"
    assert again["assignment"]["team_name"] == "Dublin Clinical"
    async with router.app.state.sessionmaker() as session:
        stored = await session.get(Job, job["id"])
    assert stored is not None
    # The work under review is gone with it: nobody allowed approved it.
    assert (stored.result, stored.review_team_id, stored.review_submitted_by) == (None, None, None)
    event = (await router.events(job["id"]))[-1]
    assert (event["type"], event["from_status"]) == ("rerouted", "in_review")
    assert "Pune Clinical, which did the work, no longer meets" in event["reason"]
    assert await router.reviews(pune["id"], BOB) == []


async def test_work_by_a_team_the_policy_now_excludes_is_redone_whoever_reviews_it(router):
    """The reviewer team still qualifies, but the team that did the work no longer does:
    approving the work, or sending it back there, would go against the policy, so the job is
    routed to be done anew; a send-back racing the change is refused."""
    pune = await create_team(router.http, name="Pune Clinical", quality=0.95)
    await create_team(router.http, name="Cork Clinical", country="IE", quality=0.5)
    qa = await create_team(router.http, name="Dublin QA", country="IE", skills=["research"])
    job = await submit_job(router.http, policy={**REVIEW, "review_team_id": qa["id"]})
    assert job["assignment"]["team_id"] == pune["id"]
    assert (await router.claim_and_complete(job, ALICE)).json()["status"] == "in_review"

    # A change the job has not been held to yet (stored, no pass over the jobs): the
    # reviewer may not send the work back to Pune.
    async with router.app.state.sessionmaker() as session, session.begin():
        await TenantPolicyRepository(session).put_if_newer(
            job["tenant_id"],
            version=2,
            policy={
                "allowed_countries": ["IE"],
                "require_review": True,
                "review_team_id": qa["id"],
            },
            now=T0,
        )
    refused = await router.decide(qa["id"], job["id"], "send-back", CAROL, comment="Redo row 3")
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"].endswith("/team-not-eligible")

    pushed = await router.http.put(
        f"/internal/v1/tenants/{job['tenant_id']}/policy",
        json={
            "version": 3,
            "policy": {
                "allowed_countries": ["IE"],
                "require_review": True,
                "review_team_id": qa["id"],
            },
        },
    )
    assert pushed.json()["moved"] == 1, pushed.text
    again = await router.job(job["id"])
    assert (again["status"], again["assignment"]["team_name"]) == ("queued", "Cork Clinical")
    event = (await router.events(job["id"]))[-1]
    assert (event["type"], event["from_status"]) == ("rerouted", "in_review")
    assert "Pune Clinical, which did the work, no longer meets" in event["reason"]
    assert await router.reviews(qa["id"], CAROL) == []


async def test_reviewer_grants_open_the_job_data_and_the_result(router, keys_dir):
    team = await create_team(router.http)
    job = await submit_job(router.http, policy={**REVIEW, "require_e2e": True})
    result_ref, receipt = result_receipt(keys_dir, await router.claim(job, ALICE))
    done = await router.complete(job, ALICE, confidential_result_receipt=receipt)
    assert done.json()["status"] == "in_review"
    path = f"/internal/v1/teams/{team['id']}/reviews/{job['id']}/grant"
    own = await router.post(path, {"member_id": ALICE, "purpose": "result"})
    assert own.status_code == 403
    for purpose, ref in (("job", job["confidential_ref"]), ("result", result_ref)):
        answer = await router.post(path, {"member_id": BOB, "purpose": purpose})
        assert answer.status_code == 200, answer.text
        assert answer.json()["require_e2e"] is True
        claims = decode_grant(answer.json()["grant"], keys_dir)
        assert claims["action"] == "open"
        assert claims["purpose"] == purpose
        assert claims["ref"] == ref
        assert claims["subject"] == f"member:{BOB}"
        assert claims["job_id"] == job["id"]
    bad = await router.post(path, {"member_id": BOB, "purpose": "seal"})
    assert bad.status_code == 422
    # Approved: the review is over, and so is the reviewer's access.
    assert (await router.decide(team["id"], job["id"], "approve", BOB)).status_code == 200
    late = await router.post(path, {"member_id": BOB, "purpose": "job"})
    assert late.status_code == 409


async def test_a_resubmission_keeps_the_sealed_result_unless_a_new_one_comes(router, keys_dir):
    team = await create_team(router.http)
    kept, replaced = [await submit_job(router.http, policy=REVIEW) for _ in range(2)]
    for job in (kept, replaced):
        first_ref, receipt = result_receipt(keys_dir, await router.claim(job, ALICE))
        await router.complete(job, ALICE, confidential_result_receipt=receipt)
        router.clock.now += timedelta(minutes=5)
        sent_back = await router.decide(team["id"], job["id"], "send-back", BOB, comment="redo")
        if job is kept:
            done = await router.complete(job, ALICE)
            expected = first_ref
        else:  # a result sealed under the send-back's lease replaces the first
            expected, receipt = result_receipt(keys_dir, sent_back.json())
            done = await router.complete(job, ALICE, confidential_result_receipt=receipt)
        assert done.json()["status"] == "in_review", done.text
        await router.decide(team["id"], job["id"], "approve", BOB)
        assert (await result_of(router, job))["confidential_result_ref"] == expected


async def test_a_sealed_result_stays_with_its_author_not_the_next_holder(router, keys_dir):
    """A result sent back and then given up (released here; an expired lease ends the same way,
    through a new claim) is its author's: the next holder's submission goes to review without it,
    so its author cannot approve it under another member's name."""
    team = await create_team(router.http)
    job = await submit_job(router.http, policy=REVIEW)
    _, receipt = result_receipt(keys_dir, await router.claim(job, ALICE))
    await router.complete(job, ALICE, confidential_result_receipt=receipt)
    router.clock.now += timedelta(minutes=5)
    await router.decide(team["id"], job["id"], "send-back", BOB, comment="wrong; redo")
    released = await router.post(
        f"/internal/v1/teams/{team['id']}/jobs/{job['id']}/release", {"member_id": ALICE}
    )
    assert released.status_code == 200, released.text
    submitted = await router.claim_and_complete(job, CAROL)
    assert submitted.json()["status"] == "in_review", submitted.text
    grant = await router.post(
        f"/internal/v1/teams/{team['id']}/reviews/{job['id']}/grant",
        {"member_id": ALICE, "purpose": "result"},
    )
    assert grant.status_code == 404, grant.text  # Carol's submission has no sealed result
    assert (await router.decide(team["id"], job["id"], "approve", ALICE)).status_code == 200
    assert (await result_of(router, job))["confidential_result_ref"] is None


async def result_of(router: Router, job: dict[str, Any]) -> dict[str, Any]:
    answer = await router.http.get(
        f"/internal/v1/jobs/{job['id']}/result", params={"tenant_id": job["tenant_id"]}
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def test_a_result_is_adopted_only_on_the_vault_s_receipt_for_this_lease(router, keys_dir):
    """The gateway carries the vault's answer to the router: it must not be able to name a
    result the vault never stored for this job's current lease. A kept grant's result of the
    first lease, another job's result, a receipt it signed itself, an expired one, or a bare
    ref are all refused, and change nothing."""
    team = await create_team(router.http)
    job, other_job = [await submit_job(router.http, policy=REVIEW) for _ in range(2)]
    first_lease = await router.claim(job, ALICE)
    _, first_receipt = result_receipt(keys_dir, first_lease)
    await router.complete(job, ALICE, confidential_result_receipt=first_receipt)
    router.clock.now = T0 + timedelta(minutes=5)
    sent_back = await router.decide(team["id"], job["id"], "send-back", BOB, comment="redo")
    assert sent_back.status_code == 200, sent_back.text
    lease = sent_back.json()
    before = await router.job(job["id"])
    refusals = {
        "ended lease": (first_receipt, 409, "stale-result"),
        "another job": (result_receipt(keys_dir, {**lease, "id": other_job["id"]})[1], 409, None),
        "another tenant": (
            result_receipt(keys_dir, {**lease, "tenant_id": new_uuid()})[1],
            409,
            "stale-result",
        ),
        "not a receipt": (result_receipt(keys_dir, lease, typ="service")[1], 422, None),
        "not the vault's": (result_receipt(keys_dir, lease, signer="gateway")[1], 422, None),
        "expired": (result_receipt(keys_dir, lease, ttl_seconds=-600)[1], 422, None),
        "not a token": ("not-a-receipt", 422, "invalid-receipt"),
    }
    for case, (receipt, status, problem) in refusals.items():
        refused = await router.complete(job, ALICE, confidential_result_receipt=receipt)
        assert refused.status_code == status, (case, refused.text)
        if problem:
            assert refused.json()["type"].endswith(f"/{problem}"), case
        assert await router.job(job["id"]) == before, case  # still in progress, unchanged
    bare = await router.complete(job, ALICE, confidential_result_ref=new_uuid())
    assert bare.status_code == 422  # a ref alone is no longer accepted
    assert await router.job(job["id"]) == before

    fresh_ref, receipt = result_receipt(keys_dir, lease)
    done = await router.complete(job, ALICE, confidential_result_receipt=receipt)
    assert done.status_code == 200, done.text
    await router.decide(team["id"], job["id"], "approve", BOB)
    assert (await result_of(router, job))["confidential_result_ref"] == fresh_ref


async def test_each_lease_of_a_job_has_its_own_name_even_under_a_still_clock(router, keys_dir):
    """A receipt names the lease: a claim after a release, and a send-back, must each make a
    lease an ended lease's receipt cannot pass for. The router's clock stands still at T0
    here, so the three leases start at the same instant."""
    team = await create_team(router.http)
    job = await submit_job(router.http, policy=REVIEW)
    first = await router.claim(job, ALICE)
    released = await router.post(
        f"/internal/v1/teams/{team['id']}/jobs/{job['id']}/release", {"member_id": ALICE}
    )
    assert released.status_code == 200, released.text
    second = await router.claim(job, ALICE)
    _, receipt = result_receipt(keys_dir, second)
    await router.complete(job, ALICE, confidential_result_receipt=receipt)
    sent_back = await router.decide(team["id"], job["id"], "send-back", BOB, comment="redo")
    leases = [first, second, sent_back.json()]
    assert len({leased["lease"]["claimed_at"] for leased in leases}) == 1  # the still clock
    for ended in (first, second):
        stale = await router.complete(
            job, ALICE, confidential_result_receipt=result_receipt(keys_dir, ended)[1]
        )
        assert stale.status_code == 409, stale.text
    _, current = result_receipt(keys_dir, sent_back.json())
    heartbeat = await router.post(
        f"/internal/v1/teams/{team['id']}/jobs/{job['id']}/heartbeat", {"member_id": ALICE}
    )
    assert heartbeat.status_code == 200, heartbeat.text  # renews the lease, keeps its name
    done = await router.complete(job, ALICE, confidential_result_receipt=current)
    assert done.status_code == 200, done.text


async def test_a_completion_is_refused_if_its_lease_ends_while_it_runs(
    router, keys_dir, monkeypatch
):
    """The receipt is checked against the lease the completion read. A release and re-claim
    by the same member, at the same instant, landing before its UPDATE must not let the
    ended lease's receipt through."""
    team = await create_team(router.http)
    job = await submit_job(router.http, policy=REVIEW)
    _, ended_receipt = result_receipt(keys_dir, await router.claim(job, ALICE))
    review_team = JobWorkflow._review_team  # runs after the receipt check, before the UPDATE
    interleaved: list[dict[str, Any]] = []

    async def release_and_claim_first(self: JobWorkflow, *args: Any) -> Any:
        if not interleaved:
            released = await router.post(
                f"/internal/v1/teams/{team['id']}/jobs/{job['id']}/release", {"member_id": ALICE}
            )
            assert released.status_code == 200, released.text
            interleaved.append(await router.claim(job, ALICE))
        return await review_team(self, *args)

    monkeypatch.setattr(JobWorkflow, "_review_team", release_and_claim_first)
    done = await router.complete(job, ALICE, confidential_result_receipt=ended_receipt)
    assert interleaved  # the race was formed
    assert done.status_code == 409, done.text
    now = await router.job(job["id"])
    assert now["status"] == "in_progress"
    assert now["event_seq"] == interleaved[0]["event_seq"]  # the new lease, untouched


async def test_review_errors_change_nothing(router):
    team = await create_team(router.http)
    job = await submit_job(router.http, policy=REVIEW)
    # Never submitted for review: nobody's to review yet.
    early = await router.decide(team["id"], job["id"], "approve", BOB)
    assert early.status_code == 404
    unknown_team = await router.decide(new_uuid(), job["id"], "approve", BOB)
    assert unknown_team.status_code == 404
    unknown_job = await router.decide(team["id"], new_uuid(), "approve", BOB)
    assert unknown_job.status_code == 404
    not_uuid = await router.decide(team["id"], job["id"], "approve", "bob")
    assert not_uuid.status_code == 422
    extra = await router.decide(team["id"], job["id"], "approve", BOB, confidential={"x": 1})
    assert extra.status_code == 422
    bad_cursor = await router.http.get(
        f"/internal/v1/teams/{team['id']}/reviews", params={"member_id": BOB, "cursor": "nope"}
    )
    assert bad_cursor.status_code == 400
    assert (await router.job(job["id"]))["status"] == "queued"
    # The client may cancel a job in review.
    await router.claim_and_complete(job, ALICE)
    cancelled = await router.post(
        f"/internal/v1/jobs/{job['id']}/cancel", {"tenant_id": job["tenant_id"]}
    )
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert await router.reviews(team["id"], BOB) == []


async def test_the_review_queue_pages_oldest_first(router):
    team = await create_team(router.http)
    ids = []
    for minute in range(5):
        router.clock.now = T0 + timedelta(minutes=minute)
        job = await submit_job(router.http, policy=REVIEW)
        await router.claim_and_complete(job, ALICE)
        ids.append(job["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"member_id": BOB, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (
            await router.http.get(f"/internal/v1/teams/{team['id']}/reviews", params=params)
        ).json()
        seen += [job["id"] for job in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert seen == ids


# ----------------------------------------------------------------------------- races


@pytest.mark.postgres_only
@pytest.mark.parametrize("second", ["approve", "send-back"])
async def test_two_reviewers_deciding_at_once_one_wins(router, second):
    team = await create_team(router.http)
    jobs = []
    for _ in range(10):
        job = await submit_job(router.http, policy=REVIEW)
        await router.claim_and_complete(job, ALICE)
        jobs.append(job)
    for job in jobs:
        answers = await asyncio.gather(
            router.decide(team["id"], job["id"], "approve", BOB),
            router.decide(team["id"], job["id"], second, CAROL, comment="no"),
        )
        codes = sorted(answer.status_code for answer in answers)
        assert codes == [200, 409], [a.text for a in answers]
        events = await router.events(job["id"])
        decisions = [e for e in events if e["type"] in ("approved", "sent_back")]
        assert len(decisions) == 1
        winner = next(a for a in answers if a.status_code == 200).json()
        assert (await router.job(job["id"]))["status"] == winner["status"]
