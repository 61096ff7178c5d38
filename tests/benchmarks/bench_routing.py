"""Routing at scale: decision latency and classification throughput against team count.

    .venv/bin/python -m tests.benchmarks.bench_routing \\
        [--postgres postgresql://postgres@127.0.0.1:5432/test] [--teams 10,100,1000]
        [--jobs 100000] [--decisions 300]

Creates its own PostgreSQL database (dropped at the end), migrated to the router's head. For
each team count it loads the teams and ``--jobs`` queued jobs spread over them (COPY through
asyncpg), then measures, in process on the real database:

* **baseline**: a bare ``SELECT 1`` round trip through the router's session (the floor of any
  database-backed step in the same run);
* **profiles**: ``JobWorkflow.profiles()`` alone: every team, plus each team's load, read from
  the ``team_loads`` counters (migration 0005; the grouped ``COUNT(*)`` of queued and
  in-progress jobs it replaced is measured beside it);
* **decide**: the pure ranking (eligibility filters + score) over those profiles, no I/O;
* **submit**: the real decision path, ``JobWorkflow.submit`` for one new job in its own
  committed transaction: classification, profiles, eligibility and ranking, the job row, its
  events and its decision record;
* **classify**: one text through the classifier (texts/s), and a batch of 1,000 through
  ``POST /internal/v1/classify`` (in-process app, service credential), which also previews the
  team each text would go to, so it grows with the team count too;
* **per submit**: SQL statements (``before_cursor_execute``) and the stored decision record's
  size, beside the size the old per-team record format would have had.

Teams get capacity twice their share of the queue, so routing finds eligible teams at every
scale (a team at capacity is excluded, which would make the larger runs cheaper, not dearer).
Every loop is bounded by a count; the whole run takes a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event, text

from services.router.app import create_app
from services.router.classifier.corpus import Example, load_corpus
from services.router.classifier.store import load_or_train
from services.router.classifier.trained import TrainedClassifier
from services.router.domain.decision_record import stored_record
from services.router.domain.routing import DataPolicy
from services.router.domain.taxonomy import Domain, Priority, tier_of
from services.router.settings import RouterSettings
from services.router.workflow import JobSubmission, JobWorkflow
from shared.db import create_engine, create_sessionmaker
from shared.service_auth import ServiceIdentity, ensure_service_keys
from tests.conftest import _asyncpg_dsn, _pg_admin, _service_pg_url, migrate, running

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
# Where offshore teams are, with a working time zone each (follow-the-sun spread).
COUNTRIES = [
    ("IN", "Asia/Kolkata"),
    ("PH", "Asia/Manila"),
    ("IE", "Europe/Dublin"),
    ("CZ", "Europe/Prague"),
    ("IL", "Asia/Jerusalem"),
    ("PL", "Europe/Warsaw"),
    ("MX", "America/Mexico_City"),
    ("ZA", "Africa/Johannesburg"),
]
CERTIFICATIONS = ["HIPAA", "ISO27001", "SOC2", "PCI-DSS", "GDPR"]
DOMAINS = list(Domain)
TENANT = str(uuid.UUID(int=1))
# Warm-up submissions before timing: fills caches and the connection pool.
WARMUP = 20
BASELINE_ROUNDS = 500
PROFILE_ROUNDS = 30
DECIDE_ROUNDS = 200
SINGLE_TEXTS = 2000
BATCH = 1000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))]


def summary(values_ms: list[float]) -> str:
    return (
        f"{percentile(values_ms, 50):8.2f} | {percentile(values_ms, 99):8.2f} | "
        f"{statistics.fmean(values_ms):8.2f}"
    )


def team_rows(count: int, *, capacity: int, now: datetime) -> list[tuple[Any, ...]]:
    """``count`` teams: one primary domain each (round robin over the 17), a second skill of
    the same tier, a country and its office hours, two or three certifications."""
    pick = random.Random(count)
    rows = []
    for index in range(count):
        primary = DOMAINS[index % len(DOMAINS)]
        same_tier = [d for d in DOMAINS if tier_of(d) is tier_of(primary) and d is not primary]
        skills = [primary.value, pick.choice(same_tier).value]
        country, zone = COUNTRIES[index % len(COUNTRIES)]
        rows.append(
            (
                str(uuid.UUID(int=pick.getrandbits(128), version=4)),
                f"Team {index:04d} {primary.value} {country}",
                country,
                zone,
                json.dumps({"start": "08:00", "end": "20:00", "days": [0, 1, 2, 3, 4, 5]}),
                tier_of(primary).value,
                json.dumps(skills),
                json.dumps(sorted(pick.sample(CERTIFICATIONS, pick.choice((2, 3))))),
                json.dumps(["en"]),
                capacity,
                round(pick.uniform(8, 45), 2),
                round(pick.uniform(0.6, 0.98), 3),
                True,
                1,
                now,
                now,
            )
        )
    return rows


TEAM_COLUMNS = [
    "id",
    "name",
    "country",
    "timezone",
    "working_hours",
    "tier",
    "skills",
    "certifications",
    "languages",
    "capacity",
    "hourly_rate",
    "quality",
    "active",
    "version",
    "created_at",
    "updated_at",
]


async def load_data(dsn: str, *, teams: int, jobs: int, now: datetime) -> None:
    """Empty the router's tables, then COPY ``teams`` teams and ``jobs`` queued jobs in."""
    capacity = 2 * -(-jobs // teams) + 10
    rows = team_rows(teams, capacity=capacity, now=now)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "TRUNCATE job_events, routing_decisions, labelled_examples, jobs, teams CASCADE"
        )
        await connection.copy_records_to_table("teams", records=rows, columns=TEAM_COLUMNS)
        present = {
            r["column_name"]: r
            for r in await connection.fetch(
                "SELECT column_name, is_nullable, column_default FROM information_schema.columns"
                " WHERE table_name = 'jobs'"
            )
        }
        policy = json.dumps({"allowed_countries": None, "required_certifications": []})

        def job_values(index: int, team: tuple[Any, ...]) -> dict[str, Any]:
            at = now - timedelta(seconds=jobs - index)
            return {
                "id": str(uuid.UUID(int=(teams << 64) + index, version=4)),
                "tenant_id": TENANT,
                "status": "queued",
                "title": f"Queued job {index}",
                "description": "Work waiting in a team's queue for the benchmark.",
                "priority": "normal",
                "priority_rank": 1,
                "queue_order_at": at,
                "metadata": "{}",
                "policy": policy,
                "tier": team[5],
                "domain": json.loads(team[6])[0],
                "confidence": 0.9,
                "reasons": "[]",
                "team_id": team[0],
                "team_name": team[1],
                "assigned_at": at,
                "assignment_score": 2.5,
                "rejected_team_ids": "[]",
                "passed_team_ids": "[]",
                "event_seq": 2,
                "created_at": at,
                "updated_at": at,
            }

        columns = [c for c in job_values(0, rows[0]) if c in present]
        missing = [
            name
            for name, info in present.items()
            if info["is_nullable"] == "NO" and info["column_default"] is None
            if name not in columns
        ]
        if missing:
            raise SystemExit(f"jobs has required columns this benchmark does not fill: {missing}")
        records = []
        for index in range(jobs):
            values = job_values(index, rows[index % teams])
            records.append(tuple(values[c] for c in columns))
        await connection.copy_records_to_table("jobs", records=records, columns=columns)
        # What autovacuum would have done after such a load: statistics and the visibility map
        # (which lets PostgreSQL count from an index without reading the rows).
        await connection.execute("VACUUM ANALYZE teams")
        await connection.execute("VACUUM ANALYZE jobs")
    finally:
        await connection.close()


def submissions(corpus: list[Example], count: int, *, now: datetime) -> list[JobSubmission]:
    """New jobs with real descriptions from the corpus; some with a deadline or a policy."""
    pick = random.Random(count)
    made = []
    for _ in range(count):
        example = pick.choice(corpus)
        policy = DataPolicy.from_json(
            {
                "allowed_countries": pick.choice([None, None, ["IN", "PH", "IE", "CZ"]]),
                "required_certifications": pick.choice([[], [], ["ISO27001"]]),
            }
        )
        made.append(
            JobSubmission(
                id=str(uuid.uuid4()),
                tenant_id=TENANT,
                title="",
                description=example.text,
                service=None,
                priority=pick.choice(list(Priority)),
                due_at=pick.choice([None, now + timedelta(hours=pick.choice((4, 24, 72)))]),
                policy=policy,
                metadata={},
                confidential_ref=None,
                callback_url=None,
            )
        )
    return made


async def timed_ms(action: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await action()
    return (time.perf_counter() - started) * 1000


async def measure_scale(
    url: str,
    *,
    teams: int,
    jobs: int,
    decisions: int,
    settings: RouterSettings,
    classifier: TrainedClassifier,
    corpus: list[Example],
    gateway: ServiceIdentity,
) -> None:
    now = datetime.now(UTC)
    started = time.perf_counter()
    await load_data(_asyncpg_dsn(url), teams=teams, jobs=jobs, now=now)
    load_seconds = time.perf_counter() - started
    engine = create_engine(url)
    maker = create_sessionmaker(engine)
    try:
        async with maker() as session:
            baseline = [
                await timed_ms(lambda: session.execute(text("SELECT 1")))
                for _ in range(BASELINE_ROUNDS)
            ]
            workflow = JobWorkflow(session, settings=settings, classifier=classifier)
            profile_times = [await timed_ms(workflow.profiles) for _ in range(PROFILE_ROUNDS)]
            sample = classifier.classify(title="", description=corpus[0].text, service_hint=None)
            work_times = [
                await timed_ms(lambda: workflow.profiles(work=sample))
                for _ in range(PROFILE_ROUNDS)
            ]
            teams_times = [await timed_ms(workflow.teams.all) for _ in range(PROFILE_ROUNDS)]
            loads_times = [await timed_ms(workflow.jobs.team_loads) for _ in range(PROFILE_ROUNDS)]
            counted_times = [
                await timed_ms(workflow.jobs.counted_team_loads) for _ in range(PROFILE_ROUNDS)
            ]
            assert await workflow.jobs.team_loads() == await workflow.jobs.counted_team_loads()
            profiles = await workflow.profiles()
            decide_times = []
            record_sizes: list[tuple[int, int]] = []
            for submission in submissions(corpus, DECIDE_ROUNDS, now=now):
                classification = classifier.classify(
                    title="", description=submission.description, service_hint=None
                )
                tick = time.perf_counter()
                decision = workflow.decide(
                    classification=classification,
                    policy=submission.policy,
                    due_at=submission.due_at,
                    rejected_by=(),
                    teams=profiles,
                    now=now,
                )
                decide_times.append((time.perf_counter() - tick) * 1000)
                record_sizes.append(
                    (
                        len(json.dumps(decision.to_record(), separators=(",", ":"))),
                        len(json.dumps(stored_record(decision), separators=(",", ":"))),
                    )
                )

        outcomes: Counter[str] = Counter()

        async def submit(submission: JobSubmission) -> None:
            async with maker() as session, session.begin():
                workflow = JobWorkflow(session, settings=settings, classifier=classifier)
                job, _ = await workflow.submit(submission, now=now)
                outcomes[job.status] += 1

        for submission in submissions(corpus, WARMUP, now=now):
            await submit(submission)
        outcomes.clear()
        statements: list[str] = []

        def count_statement(*args: Any) -> None:
            statements.append(str(args[2]).split(None, 1)[0].upper())

        event.listen(engine.sync_engine, "before_cursor_execute", count_statement)
        submit_times = [
            await timed_ms(lambda s=s: submit(s))  # type: ignore[misc]
            for s in submissions(corpus, decisions, now=now + timedelta(seconds=1))
        ]
        event.remove(engine.sync_engine, "before_cursor_execute", count_statement)
        async with maker() as session:
            stored_bytes = (
                await session.execute(
                    text("SELECT avg(octet_length(record::text)) FROM routing_decisions")
                )
            ).scalar_one()
    finally:
        await engine.dispose()

    label = f"{teams:,} teams"
    emit(f"| {label} | SELECT 1 (baseline) | {summary(baseline)} | 1.0× |")
    base_p50 = percentile(baseline, 50)
    for name, values in (
        ("profiles, every team's load (classify, sweeper)", profile_times),
        ("  of which: load every team", teams_times),
        ("  of which: read every team's load counter", loads_times),
        ("  (before: COUNT(*) of active jobs per team)", counted_times),
        ("profiles, loads of the able teams (submit)", work_times),
        ("decide (rank, no I/O)", decide_times),
        ("submit (full decision path)", submit_times),
    ):
        ratio = percentile(values, 50) / base_p50
        emit(f"| {label} | {name} | {summary(values)} | {ratio:,.0f}× |")
    shares = ", ".join(f"{status} {count}" for status, count in sorted(outcomes.items()))
    kinds = ", ".join(f"{kind} {n / decisions:.1f}" for kind, n in Counter(statements).items())
    emit(
        f"| {label} | per submit: {len(statements) / decisions:.1f} statements ({kinds}); "
        f"decision record {statistics.mean(new for _, new in record_sizes) / 1024:.1f} KB"
        f" (stored avg {float(stored_bytes or 0) / 1024:.1f} KB; per-team format "
        f"{statistics.mean(old for old, _ in record_sizes) / 1024:.1f} KB) | | | | |"
    )
    emit(f"| {label} | (COPY of {jobs:,} jobs: {load_seconds:.1f} s; submits: {shares}) | | | | |")

    # The preview ranks every team for every text: at 1,000 teams a batch of 1,000 texts is a
    # million eligibility checks, so larger scales send a smaller batch to stay bounded.
    items = BATCH if teams <= 100 else BATCH // 10
    texts = [{"description": example.text} for example in corpus[:items]]
    app = create_app(settings)
    async with running(app) as http:
        stats_times = []
        for _ in range(3):
            # Service credentials live 60 s: a fresh one per request, made before timing.
            http.headers["Authorization"] = f"Bearer {gateway.credential_for('router')}"
            tick = time.perf_counter()
            response = await http.get("/internal/v1/stats")
            stats_times.append((time.perf_counter() - tick) * 1000)
            assert response.status_code == 200, response.text
        emit(f"| {label} | GET /internal/v1/stats (best of 3) | {min(stats_times):8.2f} | | | |")
        http.headers["Authorization"] = f"Bearer {gateway.credential_for('router')}"
        tick = time.perf_counter()
        response = await http.post("/internal/v1/classify", json={"items": texts})
        elapsed = time.perf_counter() - tick
        assert response.status_code == 200, response.text
    emit(
        f"| {label} | POST /internal/v1/classify, {items:,} texts with team preview "
        f"| {items / elapsed:,.0f} texts/s | | | |"
    )


def emit(line: str) -> None:
    print(line, flush=True)


def single_text_rate(classifier: TrainedClassifier, corpus: list[Example]) -> float:
    texts = [corpus[i % len(corpus)].text for i in range(SINGLE_TEXTS)]
    started = time.perf_counter()
    for item in texts:
        classifier.classify(title="", description=item, service_hint=None)
    return len(texts) / (time.perf_counter() - started)


async def run(url: str, args: argparse.Namespace, work: Path) -> None:
    keys = work / "keys"
    ensure_service_keys(keys)
    settings = RouterSettings(
        database_url=url,
        data_dir=work,
        service_keys_dir=keys,
        environment="test",
        sweep_interval_seconds=3600,
    )
    gateway = ServiceIdentity.load(name="gateway", keys_dir=keys, peers=())
    started = time.perf_counter()
    classifier = TrainedClassifier(load_or_train(settings.classifier_dir()))
    fit_seconds = time.perf_counter() - started
    corpus = load_corpus()
    random.Random(7).shuffle(corpus)
    print(f"classifier ready in {fit_seconds:.1f} s")
    print(
        f"classifier alone, 2,000 texts one by one: {single_text_rate(classifier, corpus):,.0f}/s\n"
    )
    print("| scale | step | p50 ms | p99 ms | mean ms | p50 / baseline |")
    print("|---|---|---:|---:|---:|---:|")
    for teams in args.teams:
        await measure_scale(
            url,
            teams=teams,
            jobs=args.jobs,
            decisions=args.decisions,
            settings=settings,
            classifier=classifier,
            corpus=corpus,
            gateway=gateway,
        )
    print(
        f"\nclassifier alone, again after the runs: {single_text_rate(classifier, corpus):,.0f}/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="admin URL")
    parser.add_argument(
        "--teams", type=lambda v: [int(n) for n in v.split(",")], default=[10, 100, 1000]
    )
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--decisions", type=int, default=300)
    args = parser.parse_args()
    name = f"tr_bench_routing_{uuid.uuid4().hex[:8]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"', args.postgres))
    try:
        url = _service_pg_url(args.postgres, name)
        migrate("router", url)
        with tempfile.TemporaryDirectory() as work:
            asyncio.run(run(url, args, Path(work)))
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', args.postgres))


if __name__ == "__main__":
    main()
