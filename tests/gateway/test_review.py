"""Four-eyes review through the public API, on the real router and vault (in process)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from services.gateway.db.models import WebhookDelivery
from services.gateway.domain.policy import DataPolicy, PolicyNarrowing, effective_policy
from shared.db import create_engine, create_sessionmaker
from tests.gateway.conftest import Platform
from tests.gateway.test_api import (
    BOOKKEEPING_JOB,
    BOOKKEEPING_TEAM,
    CANARY,
    RESULT_CANARY,
    assert_problem,
    bearer,
    create_tenant,
)


def test_a_job_may_turn_review_on_never_off():
    tenant = DataPolicy.from_parts(
        allowed_countries=None, require_review=True, review_team_id="t-1"
    )
    assert effective_policy(tenant, PolicyNarrowing(require_review=False)).require_review
    assert effective_policy(tenant, None).review_team_id == "t-1"
    plain = DataPolicy()
    assert effective_policy(plain, PolicyNarrowing(require_review=True)).require_review
    assert not effective_policy(plain, PolicyNarrowing()).require_review
    # Without review the stored JSON keeps its old shape.
    assert "require_review" not in plain.to_json()
    assert DataPolicy.from_json(tenant.to_json()) == tenant


async def _team(platform: Platform, **overrides: Any) -> dict[str, Any]:
    answer = await platform.client.post(
        "/v1/admin/teams", json={**BOOKKEEPING_TEAM, **overrides}, headers=platform.operator
    )
    assert answer.status_code == 201, answer.text
    team: dict[str, Any] = answer.json()
    return team


async def _member(platform: Platform, team: dict[str, Any], name: str) -> dict[str, str]:
    answer = await platform.client.post(
        f"/v1/admin/teams/{team['id']}/members", json={"name": name}, headers=platform.operator
    )
    assert answer.status_code == 201, answer.text
    return {**bearer(answer.json()["api_key"]), "X-Member-Id": answer.json()["id"]}


def _key(member: dict[str, str]) -> dict[str, str]:
    return {"Authorization": member["Authorization"]}


async def _events(platform: Platform) -> list[str]:
    engine = create_engine(platform.databases["gateway"])
    try:
        async with create_sessionmaker(engine)() as session:
            rows = await session.scalars(
                select(WebhookDelivery.event_type).order_by(WebhookDelivery.id)
            )
            return list(rows.all())
    finally:
        await engine.dispose()


async def test_tenant_policy_shows_review_fields_only_when_set(platform):
    plain = await create_tenant(platform, name="Plain Ltd")
    assert "require_review" not in plain["policy"]
    team_id = (await _team(platform, name="Policy QA"))["id"]
    reviewed = await create_tenant(
        platform,
        name="Careful Ltd",
        policy={"require_review": True, "review_team_id": team_id},
    )
    assert reviewed["policy"]["require_review"] is True
    assert reviewed["policy"]["review_team_id"] == team_id
    bad = await platform.client.post(
        "/v1/admin/tenants",
        json={"name": "Bad Ltd", "policy": {"review_team_id": "not-a-uuid"}},
        headers=platform.operator,
    )
    assert_problem(bad, 422)


async def test_a_reviewer_team_that_does_not_exist_is_refused_and_nothing_changes(platform):
    unknown = "0b7f6f1e-8d2a-4c1e-9a55-3c1d2e4f5a6b"
    refused = await platform.client.post(
        "/v1/admin/tenants",
        json={"name": "Ghost Review Ltd", "policy": {"review_team_id": unknown}},
        headers=platform.operator,
    )
    assert_problem(refused, 422)
    assert refused.json()["type"].endswith("review-team-unknown")
    tenants = await platform.client.get(
        "/v1/admin/tenants", params={"name": "Ghost Review"}, headers=platform.operator
    )
    assert tenants.json()["data"] == []
    tenant = await create_tenant(platform, name="Later Review Ltd")
    read = await platform.client.get(f"/v1/admin/tenants/{tenant['id']}", headers=platform.operator)
    kept = await platform.client.put(
        f"/v1/admin/tenants/{tenant['id']}/policy",
        json={"require_review": True, "review_team_id": unknown},
        headers={**platform.operator, "If-Match": read.headers["ETag"]},
    )
    assert_problem(kept, 422)
    again = await platform.client.get(
        f"/v1/admin/tenants/{tenant['id']}", headers=platform.operator
    )
    assert again.json()["policy"] == tenant["policy"]
    assert again.headers["ETag"] == read.headers["ETag"]


async def test_review_through_the_gateway(platform):
    gw = platform.client
    tenant = await create_tenant(platform, policy={"require_review": True})
    client = bearer(tenant["api_key"])
    endpoint = await gw.post(
        "/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/hooks"}, headers=client
    )
    assert endpoint.status_code == 201, endpoint.text
    team = await _team(platform)
    asha = await _member(platform, team, "Asha")
    ravi = await _member(platform, team, "Ravi")

    submitted = await gw.post(
        "/v1/jobs",
        json={**BOOKKEEPING_JOB, "confidential": {"ssn": CANARY}},
        headers=client,
    )
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert job["policy"]["require_review"] is True
    job_id = job["id"]

    assert (await gw.post(f"/v1/team/jobs/{job_id}/claim", headers=_key(asha))).status_code == 200
    done = await gw.post(
        f"/v1/team/jobs/{job_id}/complete",
        json={"result": {"balanced": True}, "confidential_result": {"iban": RESULT_CANARY}},
        headers=_key(asha),
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "in_review"
    # Held: the client sees the status but no result yet.
    assert (await gw.get(f"/v1/jobs/{job_id}", headers=client)).json()["status"] == "in_review"
    assert_problem(await gw.get(f"/v1/jobs/{job_id}/result", headers=client), 409)

    # Asha does not review her own work.
    mine = await gw.get("/v1/team/reviews", headers=_key(asha))
    assert mine.status_code == 200
    assert mine.json()["data"] == []
    own = await gw.post(f"/v1/team/jobs/{job_id}/approve", headers=_key(asha))
    assert_problem(own, 403)
    own_data = await gw.get(f"/v1/team/jobs/{job_id}/review/confidential", headers=_key(asha))
    assert_problem(own_data, 403)

    listed = await gw.get("/v1/team/reviews", headers=_key(ravi))
    assert listed.status_code == 200, listed.text
    [waiting] = listed.json()["data"]
    assert waiting["id"] == job_id
    assert "tenant_id" not in waiting
    assert "confidential_ref" not in waiting
    assert waiting["review"]["submitted_by"] == asha["X-Member-Id"]
    assert waiting["review"]["result"] == {"balanced": True}
    assert waiting["review"]["has_confidential_result"] is True

    # The reviewer reads the data and the confidential result under audited grants.
    data = await gw.get(f"/v1/team/jobs/{job_id}/review/confidential", headers=_key(ravi))
    assert data.status_code == 200, data.text
    assert data.json() == {"confidential": {"ssn": CANARY}}
    assert data.headers["Cache-Control"] == "no-store"
    result = await gw.get(f"/v1/team/jobs/{job_id}/review/confidential-result", headers=_key(ravi))
    assert result.status_code == 200, result.text
    assert result.json() == {"confidential": {"iban": RESULT_CANARY}}
    audit = await gw.get("/v1/admin/audit", params={"limit": 100}, headers=platform.operator)
    subjects = {record.get("subject") for record in audit.json()["data"]}
    assert f"member:{ravi['X-Member-Id']}" in subjects

    # Sent back without a comment: 422, nothing changes.
    assert_problem(
        await gw.post(f"/v1/team/jobs/{job_id}/send-back", json={}, headers=_key(ravi)), 422
    )
    sent = await gw.post(
        f"/v1/team/jobs/{job_id}/send-back",
        json={"comment": "Two entries are unreconciled."},
        headers=_key(ravi),
    )
    assert sent.status_code == 200, sent.text
    assert sent.json()["status"] == "in_progress"
    assert sent.json()["lease"]["member_id"] == asha["X-Member-Id"]
    timeline = (await gw.get(f"/v1/jobs/{job_id}/events", headers=client)).json()["data"]
    assert timeline[-1]["type"] == "sent_back"
    assert timeline[-1]["reason"] == "Two entries are unreconciled."
    assert timeline[-1]["actor"] == f"member:{ravi['X-Member-Id']}"

    again = await gw.post(
        f"/v1/team/jobs/{job_id}/complete",
        json={"result": {"balanced": True, "fixed": 2}},
        headers=_key(asha),
    )
    assert again.json()["status"] == "in_review"
    assert "job.completed" not in await _events(platform)
    approved = await gw.post(
        f"/v1/team/jobs/{job_id}/approve", json={"comment": "Good."}, headers=_key(ravi)
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "completed"
    final = await gw.get(f"/v1/jobs/{job_id}/result", headers=client)
    assert final.status_code == 200, final.text
    assert final.json()["result"] == {"balanced": True, "fixed": 2}
    assert final.json()["confidential_result"] == {"iban": RESULT_CANARY}
    events = await _events(platform)
    assert events.count("job.completed") == 1
    assert "job.in_progress" in events  # the send-back
    # Decided: a second decision is 409 and changes nothing.
    assert_problem(await gw.post(f"/v1/team/jobs/{job_id}/approve", headers=_key(ravi)), 409)


async def test_a_sent_back_job_takes_a_corrected_confidential_result(platform):
    """A send-back starts a new lease: the result sealed under it replaces the first one, for
    the reviewer and then for the client."""
    gw = platform.client
    tenant = await create_tenant(platform, policy={"require_review": True})
    client = bearer(tenant["api_key"])
    team = await _team(platform)
    asha = await _member(platform, team, "Asha")
    ravi = await _member(platform, team, "Ravi")
    submitted = await gw.post(
        "/v1/jobs", json={**BOOKKEEPING_JOB, "confidential": {"ssn": CANARY}}, headers=client
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    assert (await gw.post(f"/v1/team/jobs/{job_id}/claim", headers=_key(asha))).status_code == 200
    first = {"iban": "FIRST-" + RESULT_CANARY}
    corrected = {"iban": RESULT_CANARY, "reconciled": 2}
    done = await gw.post(
        f"/v1/team/jobs/{job_id}/complete",
        json={"result": {"balanced": False}, "confidential_result": first},
        headers=_key(asha),
    )
    assert done.json()["status"] == "in_review", done.text
    sent = await gw.post(
        f"/v1/team/jobs/{job_id}/send-back", json={"comment": "Reconcile."}, headers=_key(ravi)
    )
    assert sent.status_code == 200, sent.text

    again = await gw.post(
        f"/v1/team/jobs/{job_id}/complete",
        json={"result": {"balanced": True}, "confidential_result": corrected},
        headers=_key(asha),
    )
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "in_review"
    review = await gw.get(f"/v1/team/jobs/{job_id}/review/confidential-result", headers=_key(ravi))
    assert review.json() == {"confidential": corrected}
    approved = await gw.post(f"/v1/team/jobs/{job_id}/approve", headers=_key(ravi))
    assert approved.status_code == 200, approved.text
    final = await gw.get(f"/v1/jobs/{job_id}/result", headers=client)
    assert final.json() == {"result": {"balanced": True}, "confidential_result": corrected}


async def test_a_reviewer_team_of_another_country_never_sees_a_narrowed_job(platform):
    gw = platform.client
    workers = await _team(platform)
    qa = await _team(platform, name="Manila Ledger QA", country="PH")
    tenant = await create_tenant(
        platform, policy={"require_review": True, "review_team_id": qa["id"]}
    )
    client = bearer(tenant["api_key"])
    asha = await _member(platform, workers, "Asha")
    ravi = await _member(platform, workers, "Ravi")
    maria = await _member(platform, qa, "Maria")
    narrowed = await gw.post(
        "/v1/jobs",
        json={**BOOKKEEPING_JOB, "data_policy": {"allowed_countries": ["IN"]}},
        headers=client,
    )
    assert narrowed.status_code == 202, narrowed.text
    job_id = narrowed.json()["id"]
    await gw.post(f"/v1/team/jobs/{job_id}/claim", headers=_key(asha))
    done = await gw.post(
        f"/v1/team/jobs/{job_id}/complete", json={"result": {"ok": 1}}, headers=_key(asha)
    )
    assert done.json()["status"] == "in_review"
    assert (await gw.get("/v1/team/reviews", headers=_key(maria))).json()["data"] == []
    assert_problem(await gw.post(f"/v1/team/jobs/{job_id}/approve", headers=_key(maria)), 404)
    assert_problem(await gw.get(f"/v1/team/jobs/{job_id}/review", headers=_key(maria)), 404)
    # The working team's other member reviews instead.
    assert (await gw.get(f"/v1/team/jobs/{job_id}/review", headers=_key(ravi))).status_code == 200

    # A job the policy lets the reviewer team see goes to it.
    free = await gw.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=client)
    free_id = free.json()["id"]
    assert free.json()["assignment"]["team_id"] in (workers["id"], qa["id"])
    worker = asha if free.json()["assignment"]["team_id"] == workers["id"] else maria
    await gw.post(f"/v1/team/jobs/{free_id}/claim", headers=_key(worker))
    await gw.post(f"/v1/team/jobs/{free_id}/complete", json={"result": {}}, headers=_key(worker))
    if worker is asha:
        [listed] = (await gw.get("/v1/team/reviews", headers=_key(maria))).json()["data"]
        assert listed["id"] == free_id
        approved = await gw.post(f"/v1/team/jobs/{free_id}/approve", headers=_key(maria))
        assert approved.status_code == 200, approved.text


async def test_unknown_or_malformed_job_ids_are_404(platform):
    team = await _team(platform)
    ravi = await _member(platform, team, "Ravi")
    for job_id in ("nope", "0b7f6f1e-8d2a-4c1e-9a55-3c1d2e4f5a6b"):
        assert_problem(
            await platform.client.post(f"/v1/team/jobs/{job_id}/approve", headers=_key(ravi)), 404
        )
    extra = await platform.client.post(
        "/v1/team/jobs/0b7f6f1e-8d2a-4c1e-9a55-3c1d2e4f5a6b/send-back",
        json={"comment": "x", "member_id": "someone"},
        headers=_key(ravi),
    )
    assert_problem(extra, 422)
