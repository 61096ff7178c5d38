"""Soak run: mixed load for a bounded time while service processes are killed at random.

    .venv/bin/python -m tests.benchmarks.soak [--seconds 180] [--kill-every 20]
        [--postgres postgresql://postgres@127.0.0.1:5432/test]

Starts a real ``taskroute up`` on free loopback ports, then for ``--seconds`` runs clients that
submit jobs (with confidential data and an Idempotency-Key, retried until acknowledged) and
members that claim, read and complete them, while every ``--kill-every`` seconds one service
process (gateway, router or vault, in turn) gets SIGKILL and the supervisor restarts it. Then,
after the load stops and the sweepers have had their grace time, it checks and prints:

* every acknowledged job exists exactly once, in a consistent status (nothing lost, nothing
  duplicated), and every completed one's confidential result opens for its client;
* no submission is left in the gateway's outbox, no vault record is unreferenced, and every
  job's sealed data is still in the vault;
* the vault's audit chain verifies;
* each service's resident memory over the run (growth without bound would show here).

Exits non-zero when a check fails. Loopback only; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.conftest import SERVICES
from tests.e2e.conftest import Platform, clinical_team, launch_platform

GRACE_SECONDS = 5  # above two upstream timeouts (set below), as the gateway requires
CLINICAL = (
    "Code the adverse event narratives from the case report forms of our phase III trial to "
    "MedDRA preferred terms and flag serious adverse events for pharmacovigilance review."
)


@dataclass
class Tally:
    acknowledged: dict[str, str] = field(default_factory=dict)  # job id -> canary
    completed: set[str] = field(default_factory=set)
    submit_retries: int = 0
    member_errors: int = 0
    kills: list[str] = field(default_factory=list)
    rss_mib: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SERVICES})


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def setup(platform: Platform) -> tuple[str, str, str]:
    async with httpx.AsyncClient(
        base_url=platform.gateway_url,
        headers={"Authorization": f"Bearer {platform.operator_key}"},
        timeout=30,
    ) as operator:
        tenant = (await operator.post("/v1/admin/tenants", json={"name": "Soak"})).json()
        team = (
            await operator.post(
                "/v1/admin/teams",
                json=clinical_team("Soak Clinical"),
            )
        ).json()
        member = (
            await operator.post(f"/v1/admin/teams/{team['id']}/members", json={"name": "M"})
        ).json()
    return tenant["id"], tenant["api_key"], member["api_key"]


async def submitter(gateway: str, key: str, tally: Tally, deadline: float) -> None:
    async with httpx.AsyncClient(
        base_url=gateway, headers={"Authorization": f"Bearer {key}"}, timeout=10
    ) as client:
        while time.monotonic() < deadline:
            canary = "CANARY-" + secrets.token_hex(6)
            body = {
                "title": "Code adverse events",
                "description": CLINICAL,
                "confidential": {"patient": canary},
            }
            headers = {"Idempotency-Key": secrets.token_hex(16)}
            # Retried with the same key until acknowledged: what a careful client does.
            while True:
                try:
                    response = await client.post("/v1/jobs", json=body, headers=headers)
                    if response.status_code == 202:
                        tally.acknowledged[response.json()["id"]] = canary
                        break
                except httpx.HTTPError:
                    pass
                tally.submit_retries += 1
                await asyncio.sleep(0.3)


async def worker(gateway: str, key: str, tally: Tally, deadline: float) -> None:
    async with httpx.AsyncClient(
        base_url=gateway, headers={"Authorization": f"Bearer {key}"}, timeout=10
    ) as member:
        while time.monotonic() < deadline:
            try:
                queue = (await member.get("/v1/team/jobs", params={"limit": 10})).json()
                queued = [job for job in queue.get("data", []) if job["status"] == "queued"]
                if not queued:
                    await asyncio.sleep(0.2)
                    continue
                job_id = random.choice(queued)["id"]
                if (await member.post(f"/v1/team/jobs/{job_id}/claim")).status_code != 200:
                    continue
                opened = await member.get(f"/v1/team/jobs/{job_id}/confidential")
                opened.raise_for_status()
                patient = opened.json()["confidential"]["patient"]
                done = await member.post(
                    f"/v1/team/jobs/{job_id}/complete",
                    json={"result": {"ok": True}, "confidential_result": {"echo": patient}},
                )
                if done.status_code == 200:
                    tally.completed.add(job_id)
            except (httpx.HTTPError, KeyError, ValueError):
                tally.member_errors += 1
                await asyncio.sleep(0.3)


async def killer(platform: Platform, tally: Tally, deadline: float, every: float) -> None:
    victims = list(SERVICES)
    while time.monotonic() + every < deadline:
        await asyncio.sleep(every)
        victim = victims[len(tally.kills) % len(victims)]
        try:
            os.kill(platform.pid(victim), signal.SIGKILL)
            tally.kills.append(victim)
        except (OSError, ValueError):
            pass


async def sampler(platform: Platform, tally: Tally, deadline: float) -> None:
    while time.monotonic() < deadline:
        for service in SERVICES:
            try:
                sample = rss_mib(platform.pid(service))
            except (OSError, ValueError):
                continue  # between a kill and the restart
            if sample == sample:  # not NaN (a process being reaped has no VmRSS)
                tally.rss_mib[service].append(sample)
        await asyncio.sleep(2)


async def wait_ready(platform: Platform, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            try:
                answers = [
                    (await http.get(f"{platform.urls[s]}/readyz")).status_code for s in SERVICES
                ]
                if all(code == 200 for code in answers):
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError("the platform did not come back")


async def rows(url: str, sql: str, **params: Any) -> list[Any]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return list((await connection.execute(text(sql), params)).all())
    finally:
        await engine.dispose()


async def settled_outbox(platform: Platform, tenant_id: str, seconds: float = 120) -> int:
    """Wait until the gateway's outbox holds nothing of the tenant's; how many rows are left.

    A job acknowledged as ``pending`` (router away) reaches the router only when the sweeper
    forwards it, with the router's own creation time: listing before that would miss it, or
    see it appear mid-listing ahead of the cursor."""
    deadline = time.monotonic() + seconds
    while True:
        left = await rows(
            platform.database_urls["gateway"],
            "SELECT id FROM job_submissions WHERE tenant_id = :tenant",
            tenant=tenant_id,
        )
        if not left or time.monotonic() >= deadline:
            return len(left)
        await asyncio.sleep(1)


async def verify(platform: Platform, tenant_id: str, client_key: str, tally: Tally) -> list[str]:
    failures: list[str] = []
    await wait_ready(platform)
    await asyncio.sleep(GRACE_SECONDS * 3)  # the sweepers settle what the kills interrupted
    left = await settled_outbox(platform, tenant_id)
    if left:
        failures.append(f"{left} submissions left in the gateway's outbox")
    async with httpx.AsyncClient(
        base_url=platform.gateway_url,
        headers={"Authorization": f"Bearer {client_key}"},
        timeout=30,
    ) as client:
        listed: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/v1/jobs", params=params)).json()
            listed.extend(page["data"])
            if not page["has_more"]:
                break
            cursor = page["next_cursor"]
        ids = [job["id"] for job in listed]
        if len(ids) != len(set(ids)):
            failures.append("a job is listed twice")
        vault_records = await rows(
            platform.database_urls["vault"],
            "SELECT id, job_id FROM records WHERE tenant_id = :tenant",
            tenant=tenant_id,
        )
        sealed_for = {job_id for _, job_id in vault_records}
        if not sealed_for <= set(ids):
            failures.append(f"{len(sealed_for - set(ids))} vault records of no job")
        # The other way round: every job's sealed data is still there (a roll-back that raced
        # the job's own submit would leave the job pointing at discarded data).
        stored = {ref for ref, _ in vault_records}
        referenced = {
            ref
            for (ref,) in await rows(
                platform.database_urls["router"],
                "SELECT confidential_ref FROM jobs "
                "WHERE tenant_id = :tenant AND confidential_ref IS NOT NULL",
                tenant=tenant_id,
            )
        }
        if not referenced <= stored:
            failures.append(f"{len(referenced - stored)} jobs whose sealed data is gone")
        if set(ids) != set(tally.acknowledged):
            lost = set(tally.acknowledged) - set(ids)
            extra = set(ids) - set(tally.acknowledged)
            failures.append(f"{len(lost)} acknowledged jobs lost, {len(extra)} never acknowledged")
        statuses = {job["status"] for job in listed}
        if not statuses <= {"queued", "in_progress", "completed"}:
            failures.append(f"unexpected statuses {statuses}")
        for job_id in sorted(tally.completed)[:50]:
            result = (await client.get(f"/v1/jobs/{job_id}/result")).json()
            if result.get("confidential_result") != {"echo": tally.acknowledged.get(job_id)}:
                failures.append(f"job {job_id}: its confidential result does not open")
    async with httpx.AsyncClient(
        base_url=platform.gateway_url,
        headers={"Authorization": f"Bearer {platform.operator_key}"},
        timeout=60,
    ) as operator:
        verdict = (await operator.get("/v1/admin/audit/verify")).json()
        if verdict.get("valid") is not True:
            failures.append(f"the audit chain does not verify: {verdict}")
    return failures


async def soak(platform: Platform, seconds: float, kill_every: float) -> int:
    tenant_id, client_key, member_key = await setup(platform)
    tally = Tally()
    deadline = time.monotonic() + seconds
    await asyncio.gather(
        *(submitter(platform.gateway_url, client_key, tally, deadline) for _ in range(4)),
        *(worker(platform.gateway_url, member_key, tally, deadline) for _ in range(2)),
        killer(platform, tally, deadline, kill_every),
        sampler(platform, tally, deadline),
    )
    failures = await verify(platform, tenant_id, client_key, tally)
    print(f"\nsoak: {seconds:.0f} s, {os.cpu_count()} cores, kills: {', '.join(tally.kills)}")
    print(
        f"acknowledged {len(tally.acknowledged)} jobs, completed {len(tally.completed)}; "
        f"submit retries {tally.submit_retries}, member errors {tally.member_errors}"
    )
    for service, samples in tally.rss_mib.items():
        if samples:
            third = max(1, len(samples) // 3)
            early, late = samples[:third], samples[-third:]
            print(
                f"  {service:7s} RSS MiB: first third max {max(early):.0f}, "
                f"last third max {max(late):.0f}, peak {max(samples):.0f}"
            )
    for failure in failures:
        print("FAIL:", failure)
    print("all checks passed" if not failures else f"{len(failures)} checks failed")
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--kill-every", type=float, default=20.0)
    parser.add_argument("--postgres", default="", help="admin URL; default: SQLite")
    args = parser.parse_args()
    backend = "postgres" if args.postgres else "sqlite"
    extra = {
        "TASKROUTE_LOG_LEVEL": "WARNING",
        "TASKROUTE_GATEWAY_SUBMISSION_GRACE_SECONDS": str(GRACE_SECONDS),
        "TASKROUTE_GATEWAY_SUBMISSION_POLL_SECONDS": "0.5",
        "TASKROUTE_GATEWAY_IDEMPOTENCY_LOCK_SECONDS": str(GRACE_SECONDS),
        "TASKROUTE_UPSTREAM_TIMEOUT_SECONDS": "2",
        "TASKROUTE_GATEWAY_RATE_LIMIT": "100000/minute",
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        launch_platform(backend, Path(tmp), extra, admin_url=args.postgres) as p,
    ):
        code = asyncio.run(soak(p, args.seconds, args.kill_every))
    sys.exit(code)


if __name__ == "__main__":
    main()
