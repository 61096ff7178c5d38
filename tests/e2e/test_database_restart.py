"""A real PostgreSQL restart under a running platform: the services recover on their own.

The other fault tests share the run's PostgreSQL server with every other test, so they can only
drop connections (test_faults.py). Here the router's and the vault's databases live on a
throwaway cluster of this test's own (``initdb`` in a temporary folder, a free port), which the
test stops and starts again; the gateway's stay on the shared server, so requests get past its
API-key check and meet the outage in the services behind it. While the cluster is down, what
needs the vault is refused with 503 problem+json and nothing is stored half-way, a plain submit
is kept as ``pending`` (the router is as good as away), and the gateway reports itself
degraded; once the cluster is back the same service processes (no supervisor restart) serve
again, the pending job is routed, and every acknowledged job is there exactly once.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import SERVICES
from tests.e2e.conftest import Platform, free_port, launch_platform
from tests.e2e.test_faults import (
    SUBMISSION_GRACE_SECONDS,
    UPSTREAM_TIMEOUT_SECONDS,
    down,
    eventually,
    job_body,
    outbox_rows,
    ready,
    setup_tenant,
    tenant_jobs,
    vault_records,
    work_confidential,
)

pytestmark = pytest.mark.postgres_only  # SQLite has no server to restart


def _server_program(name: str) -> str:
    """``initdb`` or ``pg_ctl``: on the PATH, or where Debian's packages put them."""
    found = shutil.which(name) or max(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), default="")
    if not found:
        pytest.fail(f"{name} not found: the restart test needs PostgreSQL's server programs")
    return found


@dataclass
class Cluster:
    """A PostgreSQL cluster of this test's own, in a temporary folder."""

    folder: Path
    port: int

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *arguments: str) -> None:
        # The server refuses to run as root; the folder belongs to the postgres user then.
        as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_owner, *arguments], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self._run(
            _server_program("initdb"),
            "--pgdata",
            str(self.folder / "data"),
            "--auth=trust",
            "--username=postgres",
            "--encoding=UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c max_connections=100"
        )
        self._run(
            _server_program("pg_ctl"),
            "start",
            "--wait",
            f"--pgdata={self.folder / 'data'}",
            f"--log={self.folder / 'server.log'}",
            f"--options={options}",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(
            _server_program("pg_ctl"),
            "stop",
            "--wait",
            f"--pgdata={self.folder / 'data'}",
            f"--mode={mode}",
        )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # Not pytest's tmp_path: its folders are closed to the postgres user the server runs as.
    folder = Path(tempfile.mkdtemp(prefix="taskroute-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, user="postgres")
    cluster = Cluster(folder=folder, port=free_port())
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def restartable(
    backend: str, cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    data_dir = tmp_path_factory.mktemp("restart")
    extra = {
        "TASKROUTE_GATEWAY_SUBMISSION_GRACE_SECONDS": str(SUBMISSION_GRACE_SECONDS),
        "TASKROUTE_GATEWAY_SUBMISSION_POLL_SECONDS": "0.3",
        "TASKROUTE_UPSTREAM_TIMEOUT_SECONDS": str(UPSTREAM_TIMEOUT_SECONDS),
    }
    behind = {"router": cluster.admin_url, "vault": cluster.admin_url}
    with launch_platform(backend, data_dir, extra, admin_urls=behind) as platform:
        yield platform


def refused_as_unavailable(response: httpx.Response) -> bool:
    return response.status_code == 503 and response.headers["content-type"].startswith(
        "application/problem+json"
    )


def gateway_degraded(platform: Platform) -> bool:
    answer = httpx.get(f"{platform.gateway_url}/readyz", timeout=5)
    # Still 200: a probe must not take every gateway out of service while the router is away.
    return answer.status_code == 200 and answer.json()["status"] == "degraded"


def test_a_postgresql_restart_is_survived_by_the_same_processes(
    restartable: Platform, cluster: Cluster
) -> None:
    platform = restartable
    canaries = ["CANARY-" + secrets.token_hex(6) for _ in range(4)]
    plain_job = {k: v for k, v in job_body("").items() if k != "confidential"}
    with setup_tenant(platform) as (client, tenant_id):
        before = client.post("/v1/jobs", json=job_body(canaries[0]))
        assert before.status_code == 202, before.text
        job_id = before.json()["id"]
        team_id = client.get(f"/v1/jobs/{job_id}").json()["assignment"]["team_id"]
        with platform.operator() as operator:
            member = operator.post(f"/v1/admin/teams/{team_id}/members", json={"name": "M"})
        assert member.status_code == 201, member.text
        pids = {service: platform.pid(service) for service in SERVICES}

        cluster.stop()
        eventually(
            lambda: down(platform, "router") and down(platform, "vault"),
            seconds=15,
            what="the router and the vault report their database away",
        )
        eventually(lambda: gateway_degraded(platform), seconds=15, what="the gateway degraded")
        keyed = {"Idempotency-Key": secrets.token_hex(16)}
        refused = {
            "confidential submit": client.post("/v1/jobs", json=job_body(canaries[1])),
            "keyed submit": client.post("/v1/jobs", json=job_body(canaries[2]), headers=keyed),
            "list": client.get("/v1/jobs"),
            "read": client.get(f"/v1/jobs/{job_id}"),
        }
        with platform.client(member.json()["api_key"]) as worker:
            refused["claim"] = worker.post(f"/v1/team/jobs/{job_id}/claim")
        for what, response in refused.items():
            assert refused_as_unavailable(response), (what, response.status_code, response.text)
        kept = client.post("/v1/jobs", json=plain_job)
        assert kept.status_code == 202, kept.text
        assert kept.json()["status"] == "pending"

        cluster.start()
        eventually(
            lambda: all(ready(platform, service) for service in SERVICES),
            seconds=30,
            what="every service ready again",
        )
        eventually(
            lambda: client.get(f"/v1/jobs/{kept.json()['id']}").json()["status"] == "queued",
            seconds=30,
            what="the pending job routed",
        )
        after = client.post("/v1/jobs", json=job_body(canaries[3]))
        assert after.status_code == 202, after.text
        assert after.json()["status"] == "queued"

        # The keyed submit refused while the database was away is a new submission now. Its
        # first attempt's outbox row outlived the grace period during the outage, so the
        # sweeper may be rolling it back just now: that is 503 `submission-being-settled`,
        # "retry in a few seconds", and a client retries.
        def retry_keyed() -> httpx.Response | None:
            answer = client.post("/v1/jobs", json=job_body(canaries[2]), headers=keyed)
            settling = answer.status_code == 503 and "being-settled" in answer.text
            return None if settling else answer

        retried = eventually(retry_keyed, seconds=30, what="the keyed submit taken again")
        assert retried.status_code == 202, retried.text

        # Recovered by the same processes: the supervisor restarted nothing.
        assert {service: platform.pid(service) for service in SERVICES} == pids
        sealed = {before.json()["id"], after.json()["id"], retried.json()["id"]}
        assert {job["id"] for job in tenant_jobs(client)} == sealed | {kept.json()["id"]}
        eventually(lambda: outbox_rows(platform, tenant_id) == 0, what="no submission in flight")
        assert vault_records(platform, tenant_id) == len(sealed)
        assert work_confidential(platform, client, job_id) == {"patient": canaries[0]}

    logs = platform.logs()
    assert not any(canary in logs for canary in canaries)
    assert "Traceback" not in logs
    # No service answered 500 behind the gateway's 503s (the gateway maps a peer's 500 to 503
    # too, so only the peers' own logs tell a handled outage from a bug).
    assert "unhandled error" not in logs
