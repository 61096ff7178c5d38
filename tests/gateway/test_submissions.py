"""The submission outbox: jobs accepted while the router is away, dead submissions undone."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from services.gateway.app import create_app
from services.gateway.clients.resilience import CircuitBreaker, install_breaker
from services.gateway.clients.router import RouterClient
from services.gateway.clients.vault import VaultClient
from services.gateway.db.models import JobSubmission
from services.gateway.db.repository import SubmissionRepository
from services.gateway.metrics import PENDING_SUBMISSIONS
from services.gateway.submissions import begin_sealing, create_sweeper
from services.router.app import create_app as create_router_app
from services.router.settings import RouterSettings
from services.vault.app import create_app as create_vault_app
from services.vault.settings import VaultSettings
from shared.db import utcnow
from shared.failpoints import FAILPOINTS_FILE_VARIABLE
from shared.metrics import sample_value
from tests.conftest import running
from tests.gateway.conftest import OPERATOR_KEY, Platform, gateway_settings
from tests.gateway.test_api import BOOKKEEPING_JOB, BOOKKEEPING_TEAM, CANARY, bearer

SUBMIT_PATH = "/internal/v1/jobs"


class RouterLink(httpx.AsyncBaseTransport):
    """The gateway's line to the real router app, which a test can cut and restore, slow
    down, or make fail a submit the way a router with a bug does (500)."""

    def __init__(self, app: Any) -> None:
        self.up = True
        self.refused: list[str] = []  # the paths called while it was down
        self.submits = 0  # submits that reached the router (or its failure) while up
        self.submit_delay = 0.0
        self.submit_fails = False
        # The router takes the submit but its answer never arrives (a connection cut on the
        # way back, or a router that took it after the gateway gave up).
        self.submit_answer_lost = False
        self._router = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            # The event feed's background poll (its own breaker) is not what these tests
            # count: only the calls of requests and of the submission sweeper.
            if not request.url.path.startswith("/internal/v1/events/"):
                self.refused.append(request.url.path)
            raise httpx.ConnectError("router unreachable", request=request)
        if request.method == "POST" and request.url.path == SUBMIT_PATH:
            self.submits += 1
            if self.submit_fails:
                return httpx.Response(
                    500,
                    json={"type": "about:blank", "title": "Internal error", "status": 500},
                    headers={"Content-Type": "application/problem+json"},
                )
            await asyncio.sleep(self.submit_delay)
            if self.submit_answer_lost:
                await self._router.handle_async_request(request)
                raise httpx.ReadError("connection reset", request=request)
        return await self._router.handle_async_request(request)


@pytest.fixture
async def outage(databases, keys_dir, tmp_path) -> AsyncIterator[tuple[Platform, RouterLink]]:
    router_app = create_router_app(
        RouterSettings(
            database_url=databases["router"], data_dir=tmp_path, service_keys_dir=keys_dir
        )
    )
    vault_app = create_vault_app(
        VaultSettings(database_url=databases["vault"], data_dir=tmp_path, service_keys_dir=keys_dir)
    )
    async with running(router_app), running(vault_app):
        link = RouterLink(router_app)
        transports = {"router": link, "vault": httpx.ASGITransport(app=vault_app)}
        settings = gateway_settings(databases, keys_dir, tmp_path)
        # The sweeper is driven by the test (sweep_once), not by its background loop.
        settings.submission_poll_seconds = 3600
        app = create_app(settings, transports=transports)
        async with running(app) as client:
            yield Platform(app, client, databases, bearer(OPERATOR_KEY)), link


async def scalar(url: str, sql: str, **params: Any) -> Any:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return (await connection.execute(text(sql), params)).scalar()
    finally:
        await engine.dispose()


async def client_key(platform: Platform) -> tuple[str, str]:
    created = await platform.client.post(
        "/v1/admin/tenants", json={"name": "Acme"}, headers=platform.operator
    )
    team = await platform.client.post(
        "/v1/admin/teams", json=BOOKKEEPING_TEAM, headers=platform.operator
    )
    assert team.status_code == 201, team.text
    return created.json()["id"], created.json()["api_key"]


async def test_a_job_accepted_while_the_router_is_away_is_pending_then_routed(outage):
    platform, link = outage
    tenant_id, key = await client_key(platform)
    link.up = False
    accepted = await platform.client.post(
        "/v1/jobs", json={**BOOKKEEPING_JOB, "confidential": {"ssn": CANARY}}, headers=bearer(key)
    )
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    assert job["status"] == "pending"
    assert job["has_confidential"] is True
    assert job["classification"] is None
    assert job["assignment"] is None
    seen = await platform.client.get(f"/v1/jobs/{job['id']}", headers=bearer(key))
    assert seen.status_code == 200
    assert seen.json()["status"] == "pending"
    # Kept by the gateway without the confidential value: only the vault's reference.
    stored = await scalar(platform.databases["gateway"], "SELECT submission FROM job_submissions")
    assert CANARY not in str(stored)
    # Nor the sealing row's token: a pending job is never withdrawn, and a router rolled back
    # to a release without the field would refuse every forward of it (422).
    assert "outbox_token" not in str(stored)
    # Another tenant learns nothing: the same 503 as for any id while the router is away.
    _, other = await client_key_other(platform)
    hidden = await platform.client.get(f"/v1/jobs/{job['id']}", headers=bearer(other))
    assert hidden.status_code == 503

    sweeper = create_sweeper(platform.app)
    assert await sweeper.sweep_once(utcnow()) == 0  # still away: kept, retried later
    assert await scalar(platform.databases["gateway"], "SELECT count(*) FROM job_submissions") == 1
    link.up = True
    assert await sweeper.sweep_once(utcnow() + timedelta(minutes=10)) == 1
    routed = await platform.client.get(f"/v1/jobs/{job['id']}", headers=bearer(key))
    assert routed.json()["status"] == "queued"
    assert routed.json()["assignment"]["team_name"] == BOOKKEEPING_TEAM["name"]
    # Routed ten minutes later (the sweep's clock), it keeps the creation time it was given.
    created = datetime.fromisoformat(job["created_at"])
    assert datetime.fromisoformat(seen.json()["created_at"]) == created
    assert datetime.fromisoformat(routed.json()["created_at"]) == created
    assert await scalar(platform.databases["gateway"], "SELECT count(*) FROM job_submissions") == 0
    jobs = await scalar(
        platform.databases["router"], "SELECT count(*) FROM jobs WHERE tenant_id = :t", t=tenant_id
    )
    assert jobs == 1
    hidden = await platform.client.get(f"/v1/jobs/{job['id']}", headers=bearer(other))
    assert hidden.status_code == 404


@pytest.mark.parametrize("confidential", [False, True])
async def test_a_job_the_router_took_unheard_keeps_the_creation_time_its_client_saw(
    outage, confidential
):
    """The router took the submit but the gateway never heard back, so it answered 202
    pending with a creation time of its own: the job keeps that time once it is routed, as
    one the router took late would (the first submit carries it too)."""
    platform, link = outage
    _, key = await client_key(platform)
    link.submit_answer_lost = True
    extra = {"confidential": {"ssn": CANARY}} if confidential else {}
    accepted = await platform.client.post(
        "/v1/jobs", json={**BOOKKEEPING_JOB, **extra}, headers=bearer(key)
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "pending"
    link.submit_answer_lost = False
    await asyncio.sleep(0.05)  # the router's clock moves on before the job is forwarded
    sweeper = create_sweeper(platform.app)
    assert await sweeper.sweep_once(utcnow() + timedelta(minutes=1)) == 1
    routed = await platform.client.get(f"/v1/jobs/{accepted.json()['id']}", headers=bearer(key))
    assert routed.json()["status"] == "queued"
    assert datetime.fromisoformat(routed.json()["created_at"]) == datetime.fromisoformat(
        accepted.json()["created_at"]
    )


async def test_jobs_that_waited_out_a_long_outage_go_once_the_router_is_back(outage):
    """The router's absence is one fact, not one per job: a pass tries one pending job, and
    none of them backs off for it, so all go at the first pass after the router returns
    (not minutes later, after each one's backoff)."""
    platform, link = outage
    _, key = await client_key(platform)
    link.up = False
    accepted = [
        await platform.client.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=bearer(key))
        for _ in range(3)
    ]
    assert [response.json()["status"] for response in accepted] == ["pending"] * 3
    start = utcnow()
    elapsed = timedelta()
    # The breaker runs on the sweeps' clock: it opens, and lets a trial through each pass.
    install_breaker(
        platform.app.state.router_http,
        CircuitBreaker(service="router", clock=lambda: elapsed.total_seconds()),
    )
    sweeper = create_sweeper(platform.app)
    for minute in range(1, 31):  # half an hour away, a pass a minute
        elapsed = timedelta(minutes=minute)
        link.refused.clear()
        assert await sweeper.sweep_once(start + elapsed) == 0
        assert len(link.refused) <= 3  # one job, and the client's retries of it
    link.up = True
    elapsed += timedelta(seconds=10)  # past the breaker's cool-down, within any backoff
    assert await sweeper.sweep_once(start + elapsed) == 3
    for response in accepted:
        routed = await platform.client.get(f"/v1/jobs/{response.json()['id']}", headers=bearer(key))
        assert routed.json()["status"] == "queued"


async def test_lists_and_actions_find_jobs_the_sweeper_has_not_forwarded_yet(outage):
    """Between the router's return and the sweeper's next pass a pending job is the gateway's
    alone: a list forwards the tenant's pending jobs first, and a cancel, a timeline or a
    routing record of such a job forwards it first, instead of leaving it out or answering
    404. Another tenant's pending jobs stay where they are."""
    platform, link = outage  # its sweeper's background pass is an hour away
    # A breaker that stays closed: the router is back at once, not after a cool-down.
    install_breaker(platform.app.state.router_http, CircuitBreaker("router", failures=1000))
    _, key = await client_key(platform)
    _, other = await client_key_other(platform)
    link.up = False
    listed, cancelled, followed, routed = [
        (await platform.client.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=bearer(key))).json()
        for _ in range(4)
    ]
    others = await platform.client.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=bearer(other))
    assert others.json()["status"] == "pending"
    away = await platform.client.get("/v1/jobs", headers=bearer(key))
    assert away.status_code == 503  # lists are the router's: nothing to list them from
    link.up = True

    cancel = await platform.client.post(f"/v1/jobs/{cancelled['id']}/cancel", headers=bearer(key))
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["status"] == "cancelled"
    timeline = await platform.client.get(f"/v1/jobs/{followed['id']}/events", headers=bearer(key))
    assert timeline.status_code == 200, timeline.text
    assert timeline.json()["data"][0]["to_status"] in {"pending", "queued"}
    decision = await platform.client.get(f"/v1/jobs/{routed['id']}/routing", headers=bearer(key))
    assert decision.status_code == 200, decision.text
    remaining = await scalar(platform.databases["gateway"], "SELECT count(*) FROM job_submissions")
    assert remaining == 2  # the listed one's, and the other tenant's

    page = await platform.client.get("/v1/jobs", headers=bearer(key))
    assert page.status_code == 200
    statuses = {job["id"]: job["status"] for job in page.json()["data"]}
    assert statuses == {
        listed["id"]: "queued",
        cancelled["id"]: "cancelled",
        followed["id"]: "queued",
        routed["id"]: "queued",
    }
    # Newest first by the time each was acknowledged, not by the order they were forwarded.
    assert [job["id"] for job in page.json()["data"]] == [
        routed["id"],
        followed["id"],
        cancelled["id"],
        listed["id"],
    ]
    assert await scalar(platform.databases["gateway"], "SELECT count(*) FROM job_submissions") == 1
    unknown = await platform.client.post(
        f"/v1/jobs/{others.json()['id']}/cancel", headers=bearer(key)
    )
    assert unknown.status_code == 404  # another tenant's pending job is not found, nor forwarded
    assert await scalar(platform.databases["gateway"], "SELECT count(*) FROM job_submissions") == 1


async def test_a_job_being_forwarded_is_not_forwarded_again_meanwhile(outage):
    """A forward's claim outlasts the router's slowest answer: a list (or another replica)
    that comes while the router is still answering leaves the job to it, so the router gets
    it once and the job's webhook event is queued once."""
    platform, link = outage
    install_breaker(platform.app.state.router_http, CircuitBreaker("router", failures=1000))
    _, key = await client_key(platform)
    hook = await platform.client.post(
        "/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/hook"}, headers=bearer(key)
    )
    assert hook.status_code == 201, hook.text
    link.up = False
    accepted = await platform.client.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=bearer(key))
    assert accepted.json()["status"] == "pending"
    link.up = True
    link.submit_delay = 0.6
    sweeper = create_sweeper(platform.app)
    sweeper.poll_seconds = 0.2  # a claim of one poll interval would run out mid-forward
    sweeping = asyncio.create_task(sweeper.sweep_once(utcnow()))
    await asyncio.sleep(0.3)
    listed = await platform.client.get("/v1/jobs", headers=bearer(key))
    assert listed.status_code == 200, listed.text
    assert await sweeping == 1
    assert link.submits == 1
    db = platform.databases["gateway"]
    assert await scalar(db, "SELECT count(*) FROM webhook_deliveries") == 1
    assert await scalar(db, "SELECT count(*) FROM job_submissions") == 0


async def test_an_action_on_a_job_being_forwarded_is_retried_not_refused(outage):
    """A job the gateway holds while another replica forwards it exists: a cancel, a timeline
    or a routing record of it is 503 with Retry-After (not 404, and a keyed cancel's key is
    released, not bound to an answer), and works once the job is at the router."""
    platform, link = outage
    install_breaker(platform.app.state.router_http, CircuitBreaker("router", failures=1000))
    tenant_id, key = await client_key(platform)
    link.up = False
    job = (await platform.client.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=bearer(key))).json()
    link.up = True
    # Another replica's forward of it is under way: its claim holds the row.
    async with platform.app.state.sessionmaker() as session:
        outbox = SubmissionRepository(session)
        [row] = await outbox.due_pending(tenant_id=tenant_id, now=utcnow(), limit=10)
        assert await outbox.claim(row, now=utcnow(), until=utcnow() + timedelta(minutes=1))
        await session.commit()
    keyed = {**bearer(key), "Idempotency-Key": "cancel-while-forwarding"}
    busy = await platform.client.post(f"/v1/jobs/{job['id']}/cancel", headers=keyed)
    assert busy.status_code == 503, busy.text
    assert busy.headers["Retry-After"] == "1"
    assert busy.json()["type"].endswith("/job-pending")
    for path in ("events", "routing"):
        read = await platform.client.get(f"/v1/jobs/{job['id']}/{path}", headers=bearer(key))
        assert read.status_code == 503, read.text
    unknown = await platform.client.post(
        "/v1/jobs/6a2d4a8e-35f1-4a43-a3bb-0b4b3f0e6c11/cancel", headers=bearer(key)
    )
    assert unknown.status_code == 404

    # That replica died mid-forward: its claim runs out and the sweeper forwards the job.
    sweeper = create_sweeper(platform.app)
    assert await sweeper.sweep_once(utcnow() + timedelta(minutes=2)) == 1
    cancelled = await platform.client.post(f"/v1/jobs/{job['id']}/cancel", headers=keyed)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"


async def test_a_job_the_router_fails_on_backs_off_and_the_pass_goes_on(outage):
    """A 500 from the router is about that job (a bug it hit), not an outage: the job backs
    off, and the pass goes on to the other pending jobs."""
    platform, link = outage
    install_breaker(platform.app.state.router_http, CircuitBreaker("router", failures=1000))
    _, key = await client_key(platform)
    link.up = False
    for _ in range(2):
        await platform.client.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=bearer(key))
    link.up = True
    link.submit_fails = True
    sweeper = create_sweeper(platform.app)
    now = utcnow()
    assert await sweeper.sweep_once(now) == 0
    assert link.submits == 2  # the first one's 500 did not end the pass
    assert await sweeper.sweep_once(now + timedelta(seconds=1)) == 0
    assert link.submits == 2  # each backs off, instead of going again at every pass
    link.submit_fails = False
    assert await sweeper.sweep_once(now + timedelta(minutes=10)) == 2


async def test_a_list_while_the_router_is_known_away_writes_nothing(outage):
    """While the router's circuit is open a list does not try to forward the tenant's
    pending jobs: no claim, no failure noted, no call, just the 503."""
    platform, link = outage
    install_breaker(
        platform.app.state.router_http,
        CircuitBreaker("router", failures=1, reset_seconds=3600),
    )
    _, key = await client_key(platform)
    link.up = False
    accepted = await platform.client.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=bearer(key))
    assert accepted.json()["status"] == "pending"  # the circuit opened here
    db = platform.databases["gateway"]
    before = await scalar(db, "SELECT attempts FROM job_submissions")
    calls = len(link.refused)
    for _ in range(5):
        listed = await platform.client.get("/v1/jobs", headers=bearer(key))
        assert listed.status_code == 503
        assert "Retry-After" in listed.headers
    assert await scalar(db, "SELECT attempts FROM job_submissions") == before
    assert len(link.refused) == calls


async def client_key_other(platform: Platform) -> tuple[str, str]:
    created = await platform.client.post(
        "/v1/admin/tenants", json={"name": "Other"}, headers=platform.operator
    )
    return created.json()["id"], created.json()["api_key"]


@pytest.mark.parametrize("reached_router", [False, True])
async def test_a_submission_that_died_after_sealing_is_settled(outage, reached_router):
    platform, _link = outage
    tenant_id, key = await client_key(platform)
    job_id = "6a2d4a8e-35f1-4a43-a3bb-0b4b3f0e6c11"
    submission: dict[str, Any] = {
        "id": job_id,
        "tenant_id": tenant_id,
        "title": BOOKKEEPING_JOB["title"],
        "description": BOOKKEEPING_JOB["description"],
        "service": "bookkeeping",
        "priority": "normal",
        "due_at": None,
        "policy": {"allowed_countries": None, "required_certifications": [], "require_e2e": False},
        "metadata": {},
        "confidential_ref": None,
        "callback_url": None,
    }
    grace = timedelta(seconds=60)
    # What a gateway did before dying: the outbox row, then the seal (then maybe the router).
    async with platform.app.state.sessionmaker() as session:
        await begin_sealing(
            session, job_id=job_id, tenant_id=tenant_id, submission=submission, grace=grace
        )
    sealed = await VaultClient(platform.app.state.vault_http).seal(
        tenant_id=tenant_id, job_id=job_id, purpose="job", data={"ssn": CANARY}
    )
    if reached_router:
        await RouterClient(platform.app.state.router_http).submit_job(
            {**submission, "confidential_ref": sealed.ref}
        )
    sweeper = create_sweeper(platform.app)
    assert await sweeper.sweep_once(utcnow()) == 0  # within the grace: it may still be running
    assert await sweeper.sweep_once(utcnow() + grace + timedelta(seconds=1)) == 1
    assert await scalar(platform.databases["gateway"], "SELECT count(*) FROM job_submissions") == 0
    records = await scalar(platform.databases["vault"], "SELECT count(*) FROM records")
    discards = await scalar(
        platform.databases["vault"], "SELECT count(*) FROM audit_records WHERE action = 'discard'"
    )
    jobs = await platform.client.get("/v1/jobs", headers=bearer(key))
    if reached_router:  # the job exists: its data stays
        assert (records, discards) == (1, 0)
        assert [job["id"] for job in jobs.json()["data"]] == [job_id]
    else:  # never acknowledged: rolled back, audited
        assert (records, discards) == (0, 1)
        assert jobs.json()["data"] == []


async def test_a_pending_job_the_router_refuses_stays_and_shows(outage, caplog):
    """A job written by an older gateway that the router now refuses (422) is never dropped
    (the client was told it is pending): it stays, each refusal is logged with the router's
    status, and the pending-jobs gauges show it until it goes through."""
    platform, link = outage
    _, key = await client_key(platform)
    link.up = False
    accepted = await platform.client.post(
        "/v1/jobs", json={**BOOKKEEPING_JOB, "confidential": {"ssn": CANARY}}, headers=bearer(key)
    )
    job_id = accepted.json()["id"]
    async with platform.app.state.sessionmaker() as session:
        row = await session.get(JobSubmission, job_id)
        assert row is not None
        row.submission = {**row.submission, "priority": "whenever"}  # the router's 422
        await session.commit()
    link.up = True
    maker = platform.app.state.sessionmaker
    sweeper = create_sweeper(platform.app)

    with caplog.at_level(logging.WARNING, logger="taskroute.gateway.submissions"):
        assert await sweeper.sweep_once(utcnow() + timedelta(minutes=10)) == 0
    refused = [r for r in caplog.records if r.getMessage() == "pending job not forwarded"]
    assert [(r.job_id, r.error) for r in refused] == [(job_id, "UpstreamError 422")]
    assert CANARY not in caplog.text
    assert await PENDING_SUBMISSIONS.refresh(maker, force=True)
    assert sample_value("taskroute_gateway_pending_jobs") == 1
    assert sample_value("taskroute_gateway_pending_jobs_oldest_age_seconds") >= 0

    async with maker() as session:
        row = await session.get(JobSubmission, job_id)
        assert row is not None
        row.submission = {**row.submission, "priority": "normal"}  # fixed by an operator
        await session.commit()
    assert await sweeper.sweep_once(utcnow() + timedelta(hours=1)) == 1
    routed = await platform.client.get(f"/v1/jobs/{job_id}", headers=bearer(key))
    assert routed.json()["status"] == "queued"
    assert await PENDING_SUBMISSIONS.refresh(maker, force=True)
    assert sample_value("taskroute_gateway_pending_jobs") == 0
    assert sample_value("taskroute_gateway_pending_jobs_oldest_age_seconds") == 0


async def test_a_retry_leaves_a_submission_the_sweeper_is_rolling_back_alone(
    outage, tmp_path, monkeypatch
):
    """A keyed submit dies after sealing; the sweeper, past the grace, claims its row to roll it
    back (the router does not have the job, so the sealed data goes). The client's retry comes
    meanwhile: it must not route the job with that reference. It is 503 until the roll-back is
    done, and then goes through from the start, with its data sealed again."""
    platform, _link = outage
    install_breaker(platform.app.state.router_http, CircuitBreaker("router", failures=1000))
    tenant_id, key = await client_key(platform)
    job = {**BOOKKEEPING_JOB, "confidential": {"ssn": CANARY}}
    keyed = {**bearer(key), "Idempotency-Key": "retry-while-rolled-back"}
    armed = tmp_path / "failpoints"
    armed.write_text("gateway.submit.after_seal=error\n")
    monkeypatch.setenv(FAILPOINTS_FILE_VARIABLE, str(armed))
    died = await platform.client.post("/v1/jobs", json=job, headers=keyed)
    assert died.status_code == 500
    armed.write_text("")
    vault_db = platform.databases["vault"]
    assert await scalar(vault_db, "SELECT count(*) FROM records") == 1

    past_grace = utcnow() + timedelta(seconds=61)
    async with platform.app.state.sessionmaker() as session:  # the sweeper takes the row
        outbox = SubmissionRepository(session)
        [row] = await outbox.due(now=past_grace, limit=10)
        assert await outbox.claim(row, now=past_grace, until=past_grace + timedelta(minutes=1))
        await session.commit()
    busy = await platform.client.post("/v1/jobs", json=job, headers=keyed)
    assert busy.status_code == 503, busy.text
    assert busy.json()["type"].endswith("/submission-being-settled")
    assert busy.headers["Retry-After"] == "5"
    router_jobs = "SELECT count(*) FROM jobs WHERE tenant_id = :t"
    assert await scalar(platform.databases["router"], router_jobs, t=tenant_id) == 0

    sweeper = create_sweeper(platform.app)  # the roll-back finishes: the sealed data goes
    assert await sweeper.sweep_once(past_grace + timedelta(minutes=2)) == 1
    assert await scalar(vault_db, "SELECT count(*) FROM records") == 0
    accepted = await platform.client.post("/v1/jobs", json=job, headers=keyed)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "queued"
    ref = await scalar(
        platform.databases["router"],
        "SELECT confidential_ref FROM jobs WHERE id = :j",
        j=accepted.json()["id"],
    )
    assert await scalar(vault_db, "SELECT id FROM records") == ref


@pytest.mark.parametrize("router_up", [True, False])
async def test_a_submit_that_stalls_while_it_is_rolled_back_stores_nothing(
    outage, tmp_path, monkeypatch, router_up
):
    """The request stalls after sealing until the sweeper, past the grace, rolls it back. When
    it goes on, the router refuses it (withdrawn), or, if the router is unreachable by then,
    its sealing row is gone: it must not come back as a pending job pointing at discarded
    data. Either way the client gets a 503 and nothing stays."""
    platform, link = outage
    tenant_id, key = await client_key(platform)
    armed = tmp_path / "failpoints"
    # Long enough for the sweep below to finish inside it, with a wide margin under load.
    armed.write_text("gateway.submit.after_seal=sleep:2\n")
    monkeypatch.setenv(FAILPOINTS_FILE_VARIABLE, str(armed))
    stalled = asyncio.create_task(
        platform.client.post(
            "/v1/jobs",
            json={**BOOKKEEPING_JOB, "confidential": {"ssn": CANARY}},
            headers=bearer(key),
        )
    )
    vault_db, gateway_db = platform.databases["vault"], platform.databases["gateway"]
    while await scalar(vault_db, "SELECT count(*) FROM records") == 0:
        await asyncio.sleep(0.02)  # sealed: the request is in its stall now
    sweeper = create_sweeper(platform.app)
    assert await sweeper.sweep_once(utcnow() + timedelta(seconds=61)) == 1
    assert await scalar(vault_db, "SELECT count(*) FROM records") == 0
    link.up = router_up

    answer = await stalled
    assert answer.status_code == 503, answer.text
    problem = "submission-rolled-back" if router_up else "submission-being-settled"
    assert answer.json()["type"].endswith("/" + problem)
    assert await scalar(gateway_db, "SELECT count(*) FROM job_submissions") == 0
    router_jobs = "SELECT count(*) FROM jobs WHERE tenant_id = :t"
    assert await scalar(platform.databases["router"], router_jobs, t=tenant_id) == 0
