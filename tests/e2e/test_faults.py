"""Fault injection: real service processes killed (SIGKILL) at chosen steps of a submission.

Each test arms a failpoint (shared/failpoints.py) in the file the platform's processes read,
makes the request that hits it, disarms it, lets the supervisor restart the dead process, and
then checks that every job the gateway acknowledged exists exactly once, that nothing it did not
acknowledge stayed behind, and that no confidential data is orphaned or lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.conftest import POSTGRES_ADMIN_URL
from tests.e2e.conftest import Platform, clinical_team, launch_platform

# Short clocks (see the fixture); the gateway requires both above two upstream timeouts.
UPSTREAM_TIMEOUT_SECONDS = 2
SUBMISSION_GRACE_SECONDS = 5


@pytest.fixture(scope="module")
def faulty(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    data_dir = tmp_path_factory.mktemp("faults")
    extra = {
        "TASKROUTE_FAILPOINTS_FILE": str(data_dir / "failpoints"),
        # Short clocks, so a dead submission is rolled back and a stale idempotency claim taken
        # over within seconds instead of a minute.
        "TASKROUTE_GATEWAY_SUBMISSION_GRACE_SECONDS": str(SUBMISSION_GRACE_SECONDS),
        "TASKROUTE_GATEWAY_SUBMISSION_POLL_SECONDS": "0.3",
        "TASKROUTE_GATEWAY_IDEMPOTENCY_LOCK_SECONDS": str(SUBMISSION_GRACE_SECONDS),
        "TASKROUTE_UPSTREAM_TIMEOUT_SECONDS": str(UPSTREAM_TIMEOUT_SECONDS),
    }
    with launch_platform(backend, data_dir, extra) as platform:
        yield platform


def arm(platform: Platform, point: str, action: str = "kill") -> None:
    (platform.data_dir / "failpoints").write_text(f"{point}={action}\n")


def disarm(platform: Platform) -> None:
    (platform.data_dir / "failpoints").write_text("")


def eventually(check: Callable[[], Any], *, seconds: float = 30, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            outcome = check()
            if outcome:
                return outcome
        except (httpx.TransportError, AssertionError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.2)


def ready(platform: Platform, service: str) -> bool:
    return httpx.get(f"{platform.urls[service]}/readyz", timeout=2).status_code == 200


def down(platform: Platform, service: str) -> bool:
    try:
        return not ready(platform, service)
    except httpx.TransportError:
        return True  # nothing listening: as down as it gets


def scalar(url: str, sql: str, **params: Any) -> Any:
    async def run() -> Any:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                return (await connection.execute(text(sql), params)).scalar()
        finally:
            await engine.dispose()

    return asyncio.run(run())


@contextmanager
def setup_tenant(platform: Platform) -> Iterator[tuple[httpx.Client, str]]:
    """A tenant and one more clinical team for its jobs: (client, tenant id)."""
    with platform.operator() as operator:
        tenant = operator.post("/v1/admin/tenants", json={"name": "Faults"}).json()
        team = clinical_team(f"Clinical {secrets.token_hex(3)}", capacity=100)
        assert operator.post("/v1/admin/teams", json=team).status_code == 201
    with platform.client(tenant["api_key"]) as client:
        yield client, tenant["id"]


def job_body(canary: str) -> dict[str, Any]:
    return {
        "title": "Code adverse events",
        "description": "Code the adverse event narratives of our phase III trial to MedDRA "
        "terms and flag serious adverse events for pharmacovigilance review.",
        "confidential": {"patient": canary},
    }


def vault_records(platform: Platform, tenant_id: str) -> int:
    return int(
        scalar(
            platform.database_urls["vault"],
            "SELECT count(*) FROM records WHERE tenant_id = :tenant",
            tenant=tenant_id,
        )
    )


def outbox_rows(platform: Platform, tenant_id: str) -> int:
    return int(
        scalar(
            platform.database_urls["gateway"],
            "SELECT count(*) FROM job_submissions WHERE tenant_id = :tenant",
            tenant=tenant_id,
        )
    )


def tenant_jobs(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/v1/jobs", params={"limit": 100})
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def work_confidential(platform: Platform, client: httpx.Client, job_id: str) -> Any:
    """Claim the job as a member of the team it went to (every test adds a clinical team) and
    read its confidential data."""
    team_id = client.get(f"/v1/jobs/{job_id}").json()["assignment"]["team_id"]
    with platform.operator() as operator:
        member = operator.post(f"/v1/admin/teams/{team_id}/members", json={"name": "M"}).json()
    with platform.client(member["api_key"]) as worker:
        claimed = worker.post(f"/v1/team/jobs/{job_id}/claim")
        assert claimed.status_code == 200, claimed.text
        opened = worker.get(f"/v1/team/jobs/{job_id}/confidential")
        assert opened.status_code == 200, opened.text
        return opened.json()["confidential"]


def test_gateway_killed_after_sealing_and_a_keyed_retry_makes_one_job(faulty: Platform) -> None:
    with setup_tenant(faulty) as (client, tenant_id):
        canary = "CANARY-" + secrets.token_hex(6)
        key = {"Idempotency-Key": secrets.token_hex(16)}
        arm(faulty, "gateway.submit.after_seal")
        with pytest.raises(httpx.TransportError):
            client.post("/v1/jobs", json=job_body(canary), headers=key)
        disarm(faulty)
        eventually(lambda: ready(faulty, "gateway"), what="the gateway restarted")
        # The crashed request's claim is taken over once stale; until then the retry is 409.
        retried = eventually(
            lambda: (
                (r := client.post("/v1/jobs", json=job_body(canary), headers=key)).status_code
                == 202
                and r
            ),
            what="the retry accepted",
        )
        jobs = tenant_jobs(client)
        assert [job["id"] for job in jobs] == [retried.json()["id"]]
        assert vault_records(faulty, tenant_id) == 1  # the retry reused the first seal
        assert work_confidential(faulty, client, jobs[0]["id"]) == {"patient": canary}
        assert outbox_rows(faulty, tenant_id) == 0


def test_gateway_killed_after_sealing_leaves_nothing_behind(faulty: Platform) -> None:
    with setup_tenant(faulty) as (client, tenant_id):
        arm(faulty, "gateway.submit.after_seal")
        with pytest.raises(httpx.TransportError):
            client.post("/v1/jobs", json=job_body("CANARY-" + secrets.token_hex(6)))
        disarm(faulty)
        eventually(lambda: ready(faulty, "gateway"), what="the gateway restarted")
        sealed = scalar(
            faulty.database_urls["vault"],
            "SELECT count(*) FROM audit_records WHERE tenant_id = :tenant AND action = 'seal'",
            tenant=tenant_id,
        )
        assert sealed == 1  # sealed, then the process died
        # Never acknowledged: the sweeper rolls it back (the vault discards it, audited).
        eventually(
            lambda: vault_records(faulty, tenant_id) == 0 and outbox_rows(faulty, tenant_id) == 0,
            what="the dead submission rolled back",
        )
        assert tenant_jobs(client) == []
        discards = scalar(
            faulty.database_urls["vault"],
            "SELECT count(*) FROM audit_records WHERE tenant_id = :tenant AND action = 'discard'",
            tenant=tenant_id,
        )
        assert discards == 1
        with faulty.operator() as operator:
            assert operator.get("/v1/admin/audit/verify").json()["valid"] is True


def test_a_submit_stalled_past_the_grace_period_is_rolled_back_not_acknowledged(
    faulty: Platform,
) -> None:
    """The request stalls after sealing (its process lives on) until the sweeper takes it for
    dead and rolls it back. When it goes on, the router must refuse it: a 202 then would
    acknowledge a job whose confidential data the vault has just discarded."""
    with setup_tenant(faulty) as (client, tenant_id):
        canary = "CANARY-" + secrets.token_hex(6)
        key = {"Idempotency-Key": secrets.token_hex(16)}
        arm(faulty, "gateway.submit.after_seal", f"sleep:{SUBMISSION_GRACE_SECONDS + 4}")
        stalled = client.post("/v1/jobs", json=job_body(canary), headers=key)
        disarm(faulty)
        assert stalled.status_code == 503, stalled.text
        assert stalled.json()["type"].endswith("/submission-rolled-back")
        assert stalled.headers["retry-after"]
        assert canary not in stalled.text
        assert tenant_jobs(client) == []
        assert vault_records(faulty, tenant_id) == 0
        assert outbox_rows(faulty, tenant_id) == 0
        withdrawn = scalar(
            faulty.database_urls["router"],
            "SELECT count(*) FROM job_withdrawals WHERE tenant_id = :tenant",
            tenant=tenant_id,
        )
        assert withdrawn == 1
        # Nothing was stored, so the client's retry under the same key submits afresh.
        retried = client.post("/v1/jobs", json=job_body(canary), headers=key)
        assert retried.status_code == 202, retried.text
        assert [job["id"] for job in tenant_jobs(client)] == [retried.json()["id"]]
        assert vault_records(faulty, tenant_id) == 1
        assert work_confidential(faulty, client, retried.json()["id"]) == {"patient": canary}
        assert outbox_rows(faulty, tenant_id) == 0
        with faulty.operator() as operator:
            assert operator.get("/v1/admin/audit/verify").json()["valid"] is True


def test_router_killed_mid_decision_the_job_waits_pending_then_routes(faulty: Platform) -> None:
    with setup_tenant(faulty) as (client, _tenant_id):
        canary = "CANARY-" + secrets.token_hex(6)
        arm(faulty, "router.submit.before_commit")
        accepted = client.post("/v1/jobs", json=job_body(canary))
        disarm(faulty)
        assert accepted.status_code == 202, accepted.text
        job = accepted.json()
        assert job["status"] == "pending"
        assert job["classification"] is None
        routed = eventually(
            lambda: (r := client.get(f"/v1/jobs/{job['id']}")).json()["status"] == "queued" and r,
            what="the pending job routed once the router is back",
        )
        assert routed.json()["assignment"] is not None
        assert [j["id"] for j in tenant_jobs(client)] == [job["id"]]
        assert work_confidential(faulty, client, job["id"]) == {"patient": canary}


def test_vault_killed_mid_seal_the_submit_is_refused_and_nothing_stays(faulty: Platform) -> None:
    with setup_tenant(faulty) as (client, tenant_id):
        arm(faulty, "vault.seal.before_commit")
        refused = client.post("/v1/jobs", json=job_body("CANARY-" + secrets.token_hex(6)))
        disarm(faulty)
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        eventually(lambda: ready(faulty, "vault"), what="the vault restarted")
        eventually(lambda: outbox_rows(faulty, tenant_id) == 0, what="the dead submission swept")
        assert vault_records(faulty, tenant_id) == 0
        assert tenant_jobs(client) == []


def test_vault_down_refuses_confidential_jobs_and_accepts_the_rest(faulty: Platform) -> None:
    with setup_tenant(faulty) as (client, tenant_id):
        arm(faulty, "vault.startup")  # the supervisor's restarts fail until disarmed
        os.kill(faulty.pid("vault"), signal.SIGKILL)
        eventually(lambda: down(faulty, "vault"), seconds=10, what="the vault down")
        refused = client.post("/v1/jobs", json=job_body("CANARY-" + secrets.token_hex(6)))
        plain = client.post("/v1/jobs", json={**job_body("x"), "confidential": None})
        disarm(faulty)
        assert refused.status_code == 503, refused.text
        assert plain.status_code == 202, plain.text
        assert plain.json()["status"] == "queued"
        eventually(lambda: ready(faulty, "vault"), seconds=60, what="the vault back")
        eventually(lambda: outbox_rows(faulty, tenant_id) == 0, what="the refused submission swept")
        assert vault_records(faulty, tenant_id) == 0
        assert [j["id"] for j in tenant_jobs(client)] == [plain.json()["id"]]


class Receiver:
    """A webhook receiver on a loopback port (a real HTTP server in a thread): the bodies it got."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass  # quiet

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_gateway_killed_after_the_router_cancelled_the_webhook_still_arrives(
    faulty: Platform,
) -> None:
    """The router commits a cancel, the gateway dies before it queues the event: the router's
    event feed brings it once the gateway is back, to a real receiver, once."""
    receiver = Receiver()
    try:
        with setup_tenant(faulty) as (client, _tenant_id):
            endpoint = client.post("/v1/webhook-endpoints", json={"url": receiver.url})
            assert endpoint.status_code == 201, endpoint.text
            job = client.post("/v1/jobs", json={**job_body("x"), "confidential": None}).json()
            arm(faulty, "gateway.cancel.after_router")
            with pytest.raises(httpx.TransportError):
                client.post(f"/v1/jobs/{job['id']}/cancel", json={"reason": "changed plans"})
            disarm(faulty)
            eventually(lambda: ready(faulty, "gateway"), what="the gateway restarted")
            assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"

            def delivered() -> list[str]:
                events = receiver.received
                return [e["type"] for e in events if e["data"]["object"]["id"] == job["id"]]

            eventually(lambda: "job.cancelled" in delivered(), what="job.cancelled at the receiver")
            time.sleep(1.5)  # a few more passes of the feed and the webhook worker
            assert sorted(delivered()) == ["job.cancelled", "job.queued"]
    finally:
        receiver.close()


@pytest.mark.postgres_only  # SQLite has no connections to drop
def test_dropped_database_connections_heal_without_a_restart(faulty: Platform) -> None:
    with setup_tenant(faulty) as (client, _tenant_id):
        before = client.post("/v1/jobs", json=job_body("CANARY-" + secrets.token_hex(6)))
        assert before.status_code == 202, before.text
        # What a PostgreSQL restart or a failover does to every pooled connection.
        databases = [url.rsplit("/", 1)[1] for url in faulty.database_urls.values()]
        admin = POSTGRES_ADMIN_URL.replace("postgresql://", "postgresql+asyncpg://", 1)
        dropped = scalar(
            admin,
            "SELECT array_agg(pid) FROM pg_stat_activity "
            "WHERE datname = ANY(:names) AND pid <> pg_backend_pid()",
            names=databases,
        )
        assert dropped
        scalar(
            admin,
            "SELECT count(pg_terminate_backend(pid)) FROM unnest(CAST(:pids AS int[])) AS pid",
            pids=dropped,
        )
        # pg_terminate_backend only signals; as after a restart, the old backends are gone
        # before a request comes (the services' pollers may open new ones meanwhile).
        eventually(
            lambda: (
                scalar(
                    admin,
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(CAST(:pids AS int[]))",
                    pids=dropped,
                )
                == 0
            ),
            seconds=10,
            what="the dropped backends gone",
        )
        after = client.post("/v1/jobs", json=job_body("CANARY-" + secrets.token_hex(6)))
        assert after.status_code == 202, after.text
        assert after.json()["status"] == "queued"
        assert {before.json()["id"], after.json()["id"]} <= {j["id"] for j in tenant_jobs(client)}
