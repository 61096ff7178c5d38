"""Design probe: what would a submit cost if the gateway acknowledged it before routing?

    .venv/bin/python -m tests.benchmarks.intake_probe [--seconds 5] [--concurrency 8]

Not the product. Taskroute's submit crosses three services in a row (gateway, vault, router)
before it answers, and issue 6's throughput and CPU targets sit below the floor of three bare
services doing that (BENCHMARKS.md). The contract answers a submit with 202 and knows a
``pending`` status, so one design that keeps the three processes would take the router and
the vault off the request path: the gateway checks the key and the body, seals the
confidential part itself to the tenant's vault public key (the envelope clients already make
for ``confidential_sealed``), commits one row, answers 202 ``pending``, and hands batches on
to the vault and the router later. This script prices that design's parts with the product's
own pieces, beside baseline A measured in the same run:

1. **The request path**, as one service behind the product's own app factory (its
   middleware and metrics): the API-key digest looked up and compared in constant time, the
   gateway's real ``JobCreate`` validation, the real envelope seal, and one durable row written
   by a single SQLite writer thread that commits whatever has queued as one transaction
   (group commit), in the services' SQLite mode (WAL, synchronous=NORMAL). Driven by
   ``bench_flow``'s generator, CPU read from the server's counters.
2. **The part after the 202, per job**, in this process, in batches of ``--batch``: the
   router's trained classifier (its default) on each job's text and one transaction
   inserting the batch; the vault storing each envelope with a hash-chained audit record in
   one transaction. What it leaves out is named in the output: the routing decision (team
   choice and decision record), the two internal calls per batch, and the vault's re-check of
   each envelope.

The sum is a floor for that design, not a measurement of it.
"""

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import queue
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import uvicorn
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse

from services.gateway.api.schemas import JobCreate
from services.router.classifier.store import load_or_train
from services.router.classifier.trained import TrainedClassifier
from shared.app import create_service_app
from shared.sealed_envelope import canonical_json, seal
from tests.benchmarks.bench_flow import (
    BENCH_JOB,
    Answer,
    LoadClient,
    StepResult,
    drive,
    measure_baselines,
    stop,
)
from tests.e2e.conftest import REPO_ROOT, free_port

TENANT_ID = "tenant-probe"
# A key the probe's server accepts, derived from the seed both processes share.
KEY_SEED_ENV = "TASKROUTE_PROBE_KEY"
PREFIX_CHARS = 20


class GroupCommitWriter:
    """One thread owns the SQLite connection; each transaction takes every row queued so far."""

    def __init__(self, path: Path) -> None:
        self._rows: queue.SimpleQueue[tuple[tuple[Any, ...], asyncio.Future[None]] | None] = (
            queue.SimpleQueue()
        )
        self._connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS intake (id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL,"
            " title TEXT NOT NULL, description TEXT NOT NULL, priority TEXT NOT NULL,"
            " metadata TEXT NOT NULL, envelope TEXT, created_at REAL NOT NULL)"
        )
        self._thread = threading.Thread(target=self._run, name="intake-writer", daemon=True)
        self._thread.start()
        self.transactions = 0

    async def write(self, row: tuple[Any, ...]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._rows.put((row, done))
        await done

    def close(self) -> None:
        self._rows.put(None)
        self._thread.join()
        self._connection.close()

    def _run(self) -> None:
        while True:
            first = self._rows.get()
            if first is None:
                return
            batch = [first]
            while True:
                try:
                    item = self._rows.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._commit(batch)
                    return
                batch.append(item)
            self._commit(batch)

    def _commit(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[None]]]) -> None:
        self._connection.execute("BEGIN IMMEDIATE")
        self._connection.executemany(
            "INSERT INTO intake VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [row for row, _ in batch]
        )
        self._connection.execute("COMMIT")
        self.transactions += 1
        futures = [done for _, done in batch]
        loop = futures[0].get_loop()
        # One wake-up of the event loop per transaction, not one per row.
        loop.call_soon_threadsafe(_resolve, futures)


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for done in futures:
        if not done.done():
            done.set_result(None)


def key_for(seed: str) -> str:
    return "tr_probe_" + hashlib.sha256(seed.encode()).hexdigest()


def create_app(database: Path, key_seed: str) -> FastAPI:
    api_key = key_for(key_seed)
    # As the gateway stores keys: found by their public prefix, held as a digest, compared in
    # constant time.
    keys = {api_key[:PREFIX_CHARS]: (hashlib.sha256(api_key.encode()).digest(), TENANT_ID)}
    tenant_private = X25519PrivateKey.generate()
    tenant_public = tenant_private.public_key()
    writer: GroupCommitWriter | None = None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal writer
        writer = GroupCommitWriter(database)
        yield
        writer.close()

    app = create_service_app(
        title="intake probe", description="", lifespan=lifespan, service="probe"
    )

    def tenant_of(authorization: Annotated[str, Header()] = "") -> str:
        scheme, _, presented = authorization.partition(" ")
        found = keys.get(presented[:PREFIX_CHARS])
        digest = hashlib.sha256(presented.encode()).digest()
        if scheme.lower() != "bearer" or found is None or not hmac.compare_digest(found[0], digest):
            raise HTTPException(401, "unauthenticated")
        return found[1]

    @app.post("/v1/jobs", status_code=202)
    async def submit(job: JobCreate, tenant_id: Annotated[str, Depends(tenant_of)]) -> Any:
        assert writer is not None
        job_id = str(uuid.uuid4())
        envelope = None
        if job.confidential is not None:
            envelope = seal(
                canonical_json(job.confidential),
                public_key=tenant_public,
                tenant_id=tenant_id,
                job_ref=job_id,
            ).to_json()
        now = time.time()
        await writer.write(
            (
                job_id,
                tenant_id,
                job.title,
                job.description,
                job.priority.value,
                json.dumps(job.metadata),
                json.dumps(envelope) if envelope is not None else None,
                now,
            )
        )
        return JSONResponse(
            {
                "id": job_id,
                "status": "pending",
                "title": job.title,
                "priority": job.priority.value,
                "metadata": job.metadata,
                "has_confidential": envelope is not None,
                "created_at": now,
            },
            status_code=202,
        )

    return app


def start_server(port: int, database: Path, key_seed: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.benchmarks.intake_probe", "serve", str(port), str(database)],
        cwd=REPO_ROOT,
        env={**os.environ, KEY_SEED_ENV: key_seed},
    )
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    return process


async def measure_request_path(
    seconds: float, concurrency: int, directory: Path
) -> tuple[StepResult, StepResult, int]:
    key_seed = secrets.token_hex(16)
    port = free_port()
    database = directory / "intake.db"
    processes = [start_server(port, database, key_seed)]
    headers = {"Authorization": f"Bearer {key_for(key_seed)}"}

    async def post(client: LoadClient, _: int) -> Answer:
        return await client.post("/v1/jobs", json=BENCH_JOB)

    try:
        results = []
        for name, in_flight in (
            (f"probe: intake, {concurrency} in flight", concurrency),
            ("probe: intake, 1 in flight", 1),
        ):
            results.append(
                await drive(
                    name,
                    post,
                    base_url=f"http://127.0.0.1:{port}",
                    headers=headers,
                    pids=[processes[0].pid],
                    seconds=seconds,
                    concurrency=in_flight,
                )
            )
    finally:
        stop(processes)
    with sqlite3.connect(database) as connection:
        stored = connection.execute("SELECT count(*) FROM intake").fetchone()[0]
    return results[0], results[1], stored


def measure_after_acknowledgement(directory: Path, jobs: int, batch: int) -> dict[str, float]:
    """CPU ms per job of the work after the 202, done in batches in this process."""
    # The router's default classifier, trained here (a few seconds) rather than read from a
    # cache folder the product owns.
    classifier = TrainedClassifier(load_or_train(directory / "classifier"))
    tenant_private = X25519PrivateKey.generate()
    texts = [(str(BENCH_JOB["title"]), str(BENCH_JOB["description"]))] * jobs
    envelopes = [
        json.dumps(
            seal(
                canonical_json(BENCH_JOB["confidential"]),
                public_key=tenant_private.public_key(),
                tenant_id=TENANT_ID,
                job_ref=str(uuid.uuid4()),
            ).to_json()
        )
        for _ in range(jobs)
    ]
    router = sqlite3.connect(directory / "router.db", isolation_level=None)
    vault = sqlite3.connect(directory / "vault.db", isolation_level=None)
    for connection in (router, vault):
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
    router.execute(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, tenant_id TEXT, title TEXT, description TEXT,"
        " tier TEXT, domain TEXT, confidence REAL, reasons TEXT, status TEXT)"
    )
    router.execute("CREATE INDEX jobs_by_tenant ON jobs (tenant_id, status)")
    vault.execute("CREATE TABLE records (ref TEXT PRIMARY KEY, tenant_id TEXT, envelope TEXT)")
    vault.execute(
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY, action TEXT, ref TEXT, digest BLOB)"
    )

    started = time.process_time()
    for first in range(0, jobs, batch):
        rows = []
        for title, description in texts[first : first + batch]:
            decided = classifier.classify(title=title, description=description, service_hint=None)
            rows.append(
                (
                    str(uuid.uuid4()),
                    TENANT_ID,
                    title,
                    description,
                    decided.tier.value,
                    decided.domain.value,
                    decided.confidence,
                    json.dumps(decided.reasons),
                    "queued",
                )
            )
        router.execute("BEGIN IMMEDIATE")
        router.executemany("INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        router.execute("COMMIT")
    router_seconds = time.process_time() - started

    started = time.process_time()
    head = b"\0" * 32
    for first in range(0, jobs, batch):
        records = []
        audit = []
        for envelope in envelopes[first : first + batch]:
            ref = str(uuid.uuid4())
            records.append((ref, TENANT_ID, envelope))
            head = hashlib.sha256(head + b"seal" + ref.encode()).digest()
            audit.append(("seal", ref, head))
        vault.execute("BEGIN IMMEDIATE")
        vault.executemany("INSERT INTO records VALUES (?, ?, ?)", records)
        vault.executemany("INSERT INTO audit (action, ref, digest) VALUES (?, ?, ?)", audit)
        vault.execute("COMMIT")
    vault_seconds = time.process_time() - started
    router.close()
    vault.close()
    return {
        "router: classify + insert": router_seconds * 1000 / jobs,
        "vault: store + audit": vault_seconds * 1000 / jobs,
    }


async def run(seconds: float, concurrency: int, batch: int) -> None:
    baselines = await measure_baselines(seconds, concurrency)
    a_loaded, a_unloaded = baselines.loaded, baselines.unloaded
    with tempfile.TemporaryDirectory(prefix="taskroute-probe-") as scratch:
        directory = Path(scratch)
        loaded, unloaded, stored = await measure_request_path(seconds, concurrency, directory)
        after = measure_after_acknowledgement(directory, jobs=5000, batch=batch)

    print(f"\n{concurrency} in flight; {seconds:g} s per step; {os.cpu_count()} cores\n")
    print(f"{'step':<34}{'req/s':>9}{'×A':>7}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/req':>12}"
          f"{'×A':>7}{'errors':>8}")  # fmt: skip
    for step, baseline in ((a_loaded, a_loaded), (loaded, a_loaded), (a_unloaded, a_unloaded),
                           (unloaded, a_unloaded)):  # fmt: skip
        print(
            f"{step.name:<34}{step.throughput:>9.0f}{step.throughput / baseline.throughput:>7.2f}"
            f"{step.percentile(50):>9.2f}{step.percentile(99):>9.2f}"
            f"{step.cpu_ms_per_request:>12.3f}"
            f"{step.cpu_ms_per_request / baseline.cpu_ms_per_request:>7.2f}{step.errors:>8}"
        )
    acknowledged = len(loaded.latencies_ms) + len(unloaded.latencies_ms)
    print(f"\nrows durable after the run: {stored} of {acknowledged} acknowledged")
    a_cpu = a_loaded.cpu_ms_per_request
    print(f"\nafter the 202, per job, batches of {batch} (CPU ms, × A's CPU per request):")
    for name, ms in after.items():
        print(f"  {name:<32}{ms:>8.3f}{ms / a_cpu:>7.2f}")
    total = loaded.cpu_ms_per_request + sum(after.values())
    print(
        f"  {'floor of the design, per submit':<32}{total:>8.3f}{total / a_cpu:>7.2f}"
        "  (left out: routing decision, 2 internal calls per batch, vault's envelope check)"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        uvicorn.run(
            create_app(Path(sys.argv[3]), os.environ[KEY_SEED_ENV]),
            host="127.0.0.1",
            port=int(sys.argv[2]),
            log_level="warning",
        )
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(run(args.seconds, args.concurrency, args.batch))


if __name__ == "__main__":
    main()
