"""Load benchmark of the whole job flow beside baseline A, measured in the same run.

    .venv/bin/python -m tests.benchmarks.bench_flow [--seconds 10] [--concurrency 16]
        [--postgres postgresql://postgres@127.0.0.1:5432/test]

Starts baseline A (tests/benchmarks/baseline_app.py), then the chain of three bare services
(the same app, the first calling the other two in turn as the gateway calls the vault and the
router: what three services in a row cost with no work), and then a real `taskroute up` on free
loopback ports (SQLite, or PostgreSQL databases made for the run and dropped after), drives
each step with an asyncio load generator for a bounded time, and prints throughput,
p50/p95/p99 latency, server CPU per request (from /proc, summed over the service processes)
and errors, each as a ratio to baseline A. Loopback only; every loop is bounded in time.

The generator shares the machine's two cores with the servers, so throughput figures are a
floor; CPU per request is read from the servers' own counters and does not depend on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json as json_module
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from shared.service_auth import ServiceIdentity
from tests.conftest import SERVICES
from tests.e2e.conftest import (
    REPO_ROOT,
    Platform,
    clinical_team,
    free_port,
    launch_platform,
)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DESCRIPTION_1K = (
    "Code the adverse event narratives from the case report forms of our phase III trial to "
    "MedDRA preferred terms and flag serious adverse events for pharmacovigilance review. "
) * 6


# What every benchmark submits: a ~900-character description and a little confidential data.
BENCH_JOB = {
    "title": "Code adverse events",
    "description": DESCRIPTION_1K[:900],
    "confidential": {"patient": "J. Doe", "mrn": 4711},
}


async def new_tenant_and_team(
    gateway: str, operator_key: str, name: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new tenant (its key in ``api_key``) and a clinical team that can take BENCH_JOB."""
    operator = {"Authorization": f"Bearer {operator_key}"}
    async with httpx.AsyncClient(base_url=gateway, headers=operator, timeout=30) as admin:
        tenant = (await admin.post("/v1/admin/tenants", json={"name": name})).json()
        team = (
            await admin.post(
                "/v1/admin/teams", json=clinical_team(f"{name} Clinical {secrets.token_hex(3)}")
            )
        ).json()
    return tenant, team


@dataclass
class StepResult:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    succeeded: list[int] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    # Per server process, in the order of the pids given to drive() (gateway, router, vault).
    cpu_seconds_by_process: list[float] = field(default_factory=list)
    # The PostgreSQL server's processes (all of them on this machine), not in cpu_seconds:
    # the issue's "server CPU" is the three services'; this says what the database adds.
    database_cpu_seconds: float = 0.0
    # The load generator's own CPU (this process): if it nears a core, the step measured it.
    generator_cpu_seconds: float = 0.0

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(q) - 1]

    @property
    def cpu_ms_per_request(self) -> float:
        done = len(self.latencies_ms)
        return self.cpu_seconds * 1000 / done if done else float("nan")


def postgres_cpu_seconds() -> float:
    """CPU of every process named ``postgres`` now running (backends come and go with pools;
    one that exits during a step takes its share with it, so this is a floor)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, _, rest = stat.partition(" (")[2].rpartition(")")
        if name == "postgres":
            fields = rest.split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def process_cpu_seconds(pids: list[int]) -> list[float]:
    seconds = []
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        seconds.append((int(fields[11]) + int(fields[12])) / CLOCK_TICKS)  # utime + stime
    return seconds


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: bytes

    def json(self) -> Any:
        return json_module.loads(self.body)


class LoadClient:
    """The load generator's HTTP client: aiohttp itself, without httpx's layer on top.

    The generator shares the two cores with what it measures, so its cost per request decides
    whether a step measures the server or the generator. Through httpx (even on aiohttp's
    transport) it cost ~0.64 ms of CPU per request, more than baseline A's server (~0.35 ms):
    A then measured ~1,560 req/s with its server 55 % busy and the generator at 100 % of a core.
    Directly on aiohttp ~0.24 ms, and A reaches ~3,400 req/s with its server at 98 % of its core
    (2026-11-28, BENCHMARKS.md)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, headers: dict[str, str]):
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._headers = {"Content-Type": "application/json", **headers}

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,  # noqa: A002 - httpx's name for it, which the steps were written for
        headers: dict[str, str] | None = None,
    ) -> Answer:
        data = None if json is None else json_module.dumps(json).encode()
        async with self._session.request(
            method,
            self._base_url + path,
            data=data,
            headers={**self._headers, **headers} if headers else self._headers,
        ) as response:
            return Answer(response.status, await response.read())

    async def post(self, path: str, **kwargs: Any) -> Answer:
        return await self.request("POST", path, **kwargs)


async def drive(
    name: str,
    request: Callable[[LoadClient, int], Awaitable[Answer]],
    *,
    base_url: str,
    headers: dict[str, str],
    pids: list[int],
    seconds: float,
    concurrency: int,
    max_requests: int | None = None,
) -> StepResult:
    result = StepResult(name)
    counter = iter(range(max_requests if max_requests is not None else 10**9))
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=30),
        trust_env=False,
    ) as session:
        client = LoadClient(session, base_url, headers)

        async def worker() -> None:
            while time.perf_counter() < deadline:
                index = next(counter, None)
                if index is None:
                    return
                started = time.perf_counter()
                try:
                    response = await request(client, index)
                    ok = response.status_code < 400
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                if ok:
                    result.latencies_ms.append((time.perf_counter() - started) * 1000)
                    result.succeeded.append(index)
                else:
                    result.errors += 1

        cpu_before = process_cpu_seconds(pids)
        database_before = postgres_cpu_seconds()
        generator_before = time.process_time()
        wall_before = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - wall_before
        result.generator_cpu_seconds = time.process_time() - generator_before
        cpu_after = process_cpu_seconds(pids)
        result.database_cpu_seconds = postgres_cpu_seconds() - database_before
        result.cpu_seconds_by_process = [
            after - before for after, before in zip(cpu_after, cpu_before, strict=True)
        ]
        result.cpu_seconds = sum(result.cpu_seconds_by_process)
    return result


def report(results: list[StepResult], baseline: StepResult) -> None:
    header = (
        f"{'step':<28}{'req/s':>9}{'×A':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'CPU ms/req':>12}{'×A':>7}{'errors':>8}{'gen %':>7}"
        "  per process: gateway / router / vault"
    )
    print(header)
    print("-" * len(header))
    for step in [baseline, *results]:
        print(
            f"{step.name:<28}{step.throughput:>9.0f}{step.throughput / baseline.throughput:>7.2f}"
            f"{step.percentile(50):>9.2f}{step.percentile(95):>9.2f}{step.percentile(99):>9.2f}"
            f"{step.cpu_ms_per_request:>12.3f}"
            f"{step.cpu_ms_per_request / baseline.cpu_ms_per_request:>7.2f}{step.errors:>8}"
            f"{100 * step.generator_cpu_seconds / step.seconds if step.seconds else 0:>7.0f}"
            f"  {per_process(step)}"
        )


def per_process(step: StepResult) -> str:
    done = len(step.latencies_ms)
    if len(step.cpu_seconds_by_process) < 2 or not done:
        return ""
    shares = " / ".join(f"{seconds * 1000 / done:.1f}" for seconds in step.cpu_seconds_by_process)
    database_ms = step.database_cpu_seconds * 1000 / done
    # On SQLite runs the machine's PostgreSQL server idles: nothing worth a column.
    return f"{shares} + db {database_ms:.1f}" if database_ms >= 0.05 else shares


@dataclass
class Baselines:
    """Baseline A, loaded and unloaded, and the chains of three bare services (see
    baseline_app): the architecture's floor, measured in the same run."""

    loaded: StepResult
    unloaded: StepResult
    chains: list[StepResult]  # loaded: the services' client, then aiohttp alone
    chain_unloaded: StepResult


def start_baseline(port: int, *next_ports: int, client: str = "httpx") -> subprocess.Popen[bytes]:
    next_urls = [f"http://127.0.0.1:{next_port}" for next_port in next_ports]
    process = subprocess.Popen(
        [
            sys.executable, "-m", "tests.benchmarks.baseline_app", str(port), *next_urls,
            "--client", client,
        ],
        cwd=REPO_ROOT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.post(f"{url}/echo", json={"title": "t", "description": "d"}, timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    return process


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(timeout=10)
    processes.clear()


async def measure_baselines(seconds: float, concurrency: int) -> Baselines:
    body = {"title": "Baseline", "description": DESCRIPTION_1K[:1000]}

    async def post(client: LoadClient, _: int) -> Answer:
        return await client.post("/echo", json=body)

    async def measure(name: str, port: int, pids: list[int], in_flight: int) -> StepResult:
        return await drive(
            name,
            post,
            base_url=f"http://127.0.0.1:{port}",
            headers={},
            pids=pids,
            seconds=seconds if in_flight > 1 else min(seconds, 3),
            concurrency=in_flight,
        )

    processes: list[subprocess.Popen[bytes]] = []
    try:
        port = free_port()
        processes.append(start_baseline(port))
        pids = [processes[0].pid]
        loaded = await measure("A: bare FastAPI POST", port, pids, concurrency)
        unloaded = await measure("A: unloaded (1 in flight)", port, pids, 1)
        stop(processes)
        chains = []
        chain_unloaded = None
        for client in ("httpx", "aiohttp"):
            # As a submit travels: the first calls the second (where the vault would be), then
            # the third (the router); their CPU is reported in the services' columns.
            first, second, third = free_port(), free_port(), free_port()
            processes.append(start_baseline(second))
            processes.append(start_baseline(third))
            processes.append(start_baseline(first, second, third, client=client))
            pids = [processes[2].pid, processes[1].pid, processes[0].pid]
            chains.append(await measure(f"chain: 3 bare, {client}", first, pids, concurrency))
            if chain_unloaded is None:
                chain_unloaded = await measure("chain: unloaded (1 in flight)", first, pids, 1)
            stop(processes)
        assert chain_unloaded is not None
        return Baselines(loaded, unloaded, chains, chain_unloaded)
    finally:
        stop(processes)


async def measure_platform(
    platform: Platform, pids: list[int], seconds: float, concurrency: int
) -> list[StepResult]:
    gateway, operator_key = platform.gateway_url, platform.operator_key
    tenant, team = await new_tenant_and_team(gateway, operator_key, "Bench")
    op = {"Authorization": f"Bearer {operator_key}"}
    async with httpx.AsyncClient(base_url=gateway, headers=op, timeout=30) as admin:
        member = (
            await admin.post(f"/v1/admin/teams/{team['id']}/members", json={"name": "Bench"})
        ).json()
    client_headers = {"Authorization": f"Bearer {tenant['api_key']}"}
    member_headers = {"Authorization": f"Bearer {member['api_key']}"}
    job_ids: list[str] = []
    job = BENCH_JOB

    async def submit(client: LoadClient, _: int) -> Answer:
        response = await client.post("/v1/jobs", json=job)
        if response.status_code == 202:
            job_ids.append(response.json()["id"])
        return response

    results = [
        await drive(
            "submit (with confidential)",
            submit,
            base_url=gateway,
            headers=client_headers,
            pids=pids,
            seconds=seconds,
            concurrency=concurrency,
        )
    ]
    results.append(
        await drive(
            "submit unloaded (1 in flight)",
            submit,
            base_url=gateway,
            headers=client_headers,
            pids=pids,
            seconds=min(seconds, 3),
            concurrency=1,
        )
    )

    # What the SDK sends: every submit with its own Idempotency-Key (two more gateway
    # transactions: the key's claim before the route, its answer after).
    async def keyed_submit(client: LoadClient, _: int) -> Answer:
        return await client.post(
            "/v1/jobs", json=job, headers={"Idempotency-Key": secrets.token_urlsafe(16)}
        )

    results.append(
        await drive(
            "submit with Idempotency-Key",
            keyed_submit,
            base_url=gateway,
            headers=client_headers,
            pids=pids,
            seconds=min(seconds, 3),
            concurrency=concurrency,
        )
    )

    # The vault's seal endpoint alone, called as the gateway calls it (its service
    # credential, one new job id per request): the "seal with its durable write" row.
    gateway_identity = ServiceIdentity.load(
        name="gateway", keys_dir=platform.data_dir / "service-keys", peers=()
    )
    seal_headers = {"Authorization": f"Bearer {gateway_identity.credential_for('vault')}"}

    async def seal(client: LoadClient, _: int) -> Answer:
        return await client.post(
            "/internal/v1/records",
            json={
                "tenant_id": tenant["id"],
                "job_id": str(uuid.uuid4()),
                "purpose": "job",
                "data": job["confidential"],
            },
        )

    results.append(
        await drive(
            "vault seal alone",
            seal,
            base_url=platform.urls["vault"],
            headers=seal_headers,
            pids=pids,
            seconds=min(seconds, 10),
            concurrency=concurrency,
        )
    )

    def step(path: str, method: str = "POST") -> Callable[[LoadClient, int], Awaitable[Answer]]:
        async def call(client: LoadClient, index: int) -> Answer:
            return await client.request(method, path.format(job_ids[index]))

        return call

    async def complete(client: LoadClient, index: int) -> Answer:
        return await client.post(
            f"/v1/team/jobs/{job_ids[index]}/complete",
            json={"result": {"ok": True}, "confidential_result": {"note": "done"}},
        )

    # Each step works on the jobs the previous step got through, so a step that ran out of
    # time does not turn into errors in the next one.
    for name, request, headers in [
        ("claim", step("/v1/team/jobs/{}/claim"), member_headers),
        ("read confidential", step("/v1/team/jobs/{}/confidential", "GET"), member_headers),
        ("complete (with confidential)", complete, member_headers),
        ("read result", step("/v1/jobs/{}/result", "GET"), client_headers),
    ]:
        outcome = await drive(
            name,
            request,
            base_url=gateway,
            headers=headers,
            pids=pids,
            seconds=seconds,
            concurrency=concurrency,
            max_requests=len(job_ids),
        )
        results.append(outcome)
        job_ids[:] = [job_ids[index] for index in sorted(outcome.succeeded)]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--postgres", default="", help="admin URL; default: SQLite")
    args = parser.parse_args()
    baselines = asyncio.run(measure_baselines(args.seconds, args.concurrency))
    backend = "postgres" if args.postgres else "sqlite"
    quiet = {
        "TASKROUTE_LOG_LEVEL": "WARNING",
        # The per-key limit (600/minute) would turn most of a step into 429s: the limiter still
        # runs on every request, it only never refuses.
        "TASKROUTE_GATEWAY_RATE_LIMIT": "1000000/minute",
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        launch_platform(backend, Path(tmp), quiet, admin_url=args.postgres) as platform,
    ):
        pids = [platform.pid(service) for service in SERVICES]
        results = asyncio.run(measure_platform(platform, pids, args.seconds, args.concurrency))
    print(
        f"\nbackend: {backend}; {args.concurrency} in flight; {args.seconds:.0f} s per step; "
        f"{os.cpu_count()} cores\n"
    )
    report([*baselines.chains, *results], baselines.loaded)
    print()
    report([baselines.chain_unloaded, results[1]], baselines.unloaded)


if __name__ == "__main__":
    main()
