"""A keyed member action (claim, release, reject, complete) whose first attempt the router
applied but whose answer was lost, retried with the same Idempotency-Key, replays the job
instead of the router's refusal ("not queued", "no lease", "not your team's job").

The answer is lost after the router applied the action: the ``gateway.member_action.after_router``
failpoint fails the request (a 500, so the key's claim is released for the retry), or the line
to the router drops it. The router stores the id the gateway reserved with the key on the event
the action makes; a retry whose earlier attempt never reached the router finds none and is
refused like any other request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.failpoints import FAILPOINTS_FILE_VARIABLE
from tests.gateway.conftest import Platform
from tests.gateway.test_api import (
    BOOKKEEPING_JOB,
    BOOKKEEPING_TEAM,
    RESULT_CANARY,
    assert_problem,
    bearer,
    create_tenant,
)
from tests.gateway.test_cancel_retry import LossyRouterLine, lossy

LOSE_ANSWERS = "gateway.member_action.after_router=error\n"
__all__ = ["lossy"]  # the fixture, imported for this module's tests


async def _team_with_member(platform: Platform, name: str) -> tuple[str, dict[str, str]]:
    team = await platform.client.post(
        "/v1/admin/teams", json={**BOOKKEEPING_TEAM, "name": name}, headers=platform.operator
    )
    assert team.status_code == 201, team.text
    member = await platform.client.post(
        f"/v1/admin/teams/{team.json()['id']}/members",
        json={"name": f"{name} member"},
        headers=platform.operator,
    )
    assert member.status_code == 201, member.text
    return team.json()["id"], bearer(member.json()["api_key"])


async def _job(platform: Platform) -> tuple[dict[str, str], str, str]:
    tenant = await create_tenant(platform, "Acme Member Retry")
    client = bearer(tenant["api_key"])
    job = await platform.client.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=client)
    assert job.status_code == 202, job.text
    assert job.json()["status"] == "queued"
    return client, job.json()["id"], job.json()["assignment"]["team_id"]


@pytest.fixture
def lose_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    failpoints = tmp_path / "failpoints"
    failpoints.write_text("")
    monkeypatch.setenv(FAILPOINTS_FILE_VARIABLE, str(failpoints))
    return failpoints


async def _lost(platform: Platform, failpoints: Path, path: str, member: dict[str, str],
                key: str, body: dict[str, Any] | None = None) -> None:  # fmt: skip
    failpoints.write_text(LOSE_ANSWERS)
    first = await platform.client.post(path, json=body, headers={**member, "Idempotency-Key": key})
    failpoints.write_text("")
    assert first.status_code == 500, first.text  # applied at the router; the answer was lost


async def _retry_replays(
    platform: Platform, path: str, member: dict[str, str], key: str, body: dict[str, Any] | None
) -> dict[str, Any]:
    keyed = {**member, "Idempotency-Key": key}
    retry = await platform.client.post(path, json=body, headers=keyed)
    assert retry.status_code == 200, retry.text
    again = await platform.client.post(path, json=body, headers=keyed)
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == retry.json()
    # Without the key, or under a fresh key, the action is simply refused now.
    assert (await platform.client.post(path, json=body, headers=member)).status_code in (404, 409)
    fresh = {**member, "Idempotency-Key": key + "-fresh"}
    assert (await platform.client.post(path, json=body, headers=fresh)).status_code in (404, 409)
    result: dict[str, Any] = retry.json()
    return result


async def _events(platform: Platform, client: dict[str, str], job_id: str) -> list[str]:
    events = await platform.client.get(f"/v1/jobs/{job_id}/events", headers=client)
    assert events.status_code == 200, events.text
    return [event["type"] for event in events.json()["data"]]


async def test_a_claim_whose_answer_was_lost_replays_the_claimed_job(
    platform: Platform, lose_answers: Path
) -> None:
    _team, member = await _team_with_member(platform, "Pune Ledger Ops")
    client, job_id, _ = await _job(platform)
    path = f"/v1/team/jobs/{job_id}/claim"
    await _lost(platform, lose_answers, path, member, "claim-1")
    job = await _retry_replays(platform, path, member, "claim-1", None)
    assert job["id"] == job_id
    assert job["status"] == "in_progress"
    assert (await _events(platform, client, job_id)).count("claimed") == 1


async def test_a_lost_claim_replays_after_a_heartbeat_too(
    platform: Platform, lose_answers: Path
) -> None:
    """A heartbeat changes the lease's expiry, not the job's state, and makes no event: the
    job still stands as the claim left it."""
    _team, member = await _team_with_member(platform, "Pune Ledger Ops")
    _client, job_id, _ = await _job(platform)
    path = f"/v1/team/jobs/{job_id}/claim"
    await _lost(platform, lose_answers, path, member, "claim-beat")
    beat = await platform.client.post(f"/v1/team/jobs/{job_id}/heartbeat", headers=member)
    assert beat.status_code == 200, beat.text
    retry = await platform.client.post(path, headers={**member, "Idempotency-Key": "claim-beat"})
    assert retry.status_code == 200, retry.text
    assert retry.json()["status"] == "in_progress"
    assert "event_seq" not in retry.json()  # the router's, not part of the public answer


async def test_a_keyed_heartbeat_is_answered_as_any_heartbeat(platform: Platform) -> None:
    """Clients (the SDK among them) may key every POST; a heartbeat makes no event to find."""
    _team, member = await _team_with_member(platform, "Pune Ledger Ops")
    _client, job_id, _ = await _job(platform)
    claimed = await platform.client.post(f"/v1/team/jobs/{job_id}/claim", headers=member)
    assert claimed.status_code == 200, claimed.text
    beat = await platform.client.post(
        f"/v1/team/jobs/{job_id}/heartbeat", headers={**member, "Idempotency-Key": "beat-1"}
    )
    assert beat.status_code == 200, beat.text
    assert beat.json()["lease"]["expires_at"] >= claimed.json()["lease"]["expires_at"]


async def test_release_and_complete_whose_answers_were_lost_replay(
    platform: Platform, lose_answers: Path
) -> None:
    _team, member = await _team_with_member(platform, "Pune Ledger Ops")
    client, job_id, _ = await _job(platform)
    claimed = await platform.client.post(f"/v1/team/jobs/{job_id}/claim", headers=member)
    assert claimed.status_code == 200, claimed.text
    release = f"/v1/team/jobs/{job_id}/release"
    body = {"reason": "shift over"}
    await _lost(platform, lose_answers, release, member, "release-1", body)
    released = await _retry_replays(platform, release, member, "release-1", body)
    assert released["status"] == "queued"
    assert released["lease"] is None

    claimed = await platform.client.post(f"/v1/team/jobs/{job_id}/claim", headers=member)
    assert claimed.status_code == 200, claimed.text
    complete = f"/v1/team/jobs/{job_id}/complete"
    result = {"result": {"summary": "reconciled"}, "confidential_result": {"iban": RESULT_CANARY}}
    await _lost(platform, lose_answers, complete, member, "complete-1", result)
    completed = await _retry_replays(platform, complete, member, "complete-1", result)
    assert completed["status"] == "completed"
    assert (await _events(platform, client, job_id)).count("completed") == 1
    read = await platform.client.get(f"/v1/jobs/{job_id}/result", headers=client)
    assert read.status_code == 200, read.text
    assert read.json()["confidential_result"] == {"iban": RESULT_CANARY}


async def test_a_reject_whose_answer_was_lost_replays_until_the_job_moves_on(
    platform: Platform, lose_answers: Path
) -> None:
    first_team, first_member = await _team_with_member(platform, "Pune Ledger Ops")
    other_team, other_member = await _team_with_member(platform, "Manila Ledger Ops")
    client, job_id, team_id = await _job(platform)
    member = first_member if team_id == first_team else other_member
    next_member, next_team = (
        (other_member, other_team) if team_id == first_team else (first_member, first_team)
    )
    path = f"/v1/team/jobs/{job_id}/reject"
    body = {"reason": "outside our hours"}
    await _lost(platform, lose_answers, path, member, "reject-1", body)
    rejected = await _retry_replays(platform, path, member, "reject-1", body)
    assert rejected["status"] == "queued"
    assert rejected["assignment"]["team_id"] == next_team

    # Once the next team has claimed it, a retry of a second lost reject no longer shows
    # the job: it is not this team's, and its state is not the one the reject left.
    client_2, job_2, team_2 = await _job(platform)
    assert team_2 == team_id  # the same ranking as the first job
    path_2 = f"/v1/team/jobs/{job_2}/reject"
    await _lost(platform, lose_answers, path_2, member, "reject-2", body)
    taken = await platform.client.post(f"/v1/team/jobs/{job_2}/claim", headers=next_member)
    assert taken.status_code == 200, taken.text
    late = await platform.client.post(
        path_2, json=body, headers={**member, "Idempotency-Key": "reject-2"}
    )
    assert_problem(late, 404)
    assert (await _events(platform, client_2, job_2)).count("rejected") == 1


async def test_a_refusal_on_the_first_attempt_stands_on_retry(
    platform: Platform, lose_answers: Path
) -> None:
    _team, member = await _team_with_member(platform, "Pune Ledger Ops")
    _client, job_id, team_id = await _job(platform)
    colleague = await platform.client.post(
        f"/v1/admin/teams/{team_id}/members", json={"name": "Ravi"}, headers=platform.operator
    )
    assert colleague.status_code == 201, colleague.text
    path = f"/v1/team/jobs/{job_id}/claim"
    # The colleague's claim is lost; the member's keyed claim is refused (first attempt).
    await _lost(platform, lose_answers, path, bearer(colleague.json()["api_key"]), "claim-c")
    keyed = {**member, "Idempotency-Key": "claim-m"}
    assert_problem(await platform.client.post(path, headers=keyed), 409)
    assert_problem(await platform.client.post(path, headers=keyed), 409)


async def test_a_claim_whose_answer_the_line_dropped_replays(
    lossy: tuple[Platform, LossyRouterLine],
) -> None:
    platform, line = lossy
    _team, member = await _team_with_member(platform, "Pune Ledger Ops")
    _client, job_id, _ = await _job(platform)
    path = f"/v1/team/jobs/{job_id}/claim"
    keyed = {**member, "Idempotency-Key": "claim-dropped"}
    line.drop_answers_to = "/claim"
    assert_problem(await platform.client.post(path, headers=keyed), 503)
    line.drop_answers_to = None
    retry = await platform.client.post(path, headers=keyed)
    assert retry.status_code == 200, retry.text
    assert retry.json()["status"] == "in_progress"


async def test_a_retry_whose_first_attempt_never_reached_the_router_is_not_replayed(
    lossy: tuple[Platform, LossyRouterLine],
) -> None:
    """The first keyed completion is refused on the way to the router; the member then
    completes the job without a key and another result. The keyed retry must not answer 200
    as if its own result had been stored: it is refused, the job is completed already."""
    platform, line = lossy
    _team, member = await _team_with_member(platform, "Pune Ledger Ops")
    client, job_id, _ = await _job(platform)
    claimed = await platform.client.post(f"/v1/team/jobs/{job_id}/claim", headers=member)
    assert claimed.status_code == 200, claimed.text
    path = f"/v1/team/jobs/{job_id}/complete"
    keyed = {**member, "Idempotency-Key": "complete-never-sent"}
    line.refuse_calls_to = "/complete"
    first = await platform.client.post(path, json={"result": {"v": "keyed"}}, headers=keyed)
    assert_problem(first, 503)
    line.refuse_calls_to = None
    other = await platform.client.post(path, json={"result": {"v": "other"}}, headers=member)
    assert other.status_code == 200, other.text
    retry = await platform.client.post(path, json={"result": {"v": "keyed"}}, headers=keyed)
    assert_problem(retry, 409)
    result = await platform.client.get(f"/v1/jobs/{job_id}/result", headers=client)
    assert result.json()["result"] == {"v": "other"}
