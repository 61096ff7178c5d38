"""Submit throughput and CPU of two checkouts, measured in alternating windows.

    .venv/bin/python -m tests.benchmarks.ab_flow BEFORE_DIR AFTER_DIR [--rounds 6]
        [--seconds 2] [--concurrency 8] [--postgres postgresql://postgres@127.0.0.1:5432/test]

The 2-core machines this project runs on drift: the same code measured 7.6 ms and then 9.1 ms
per unloaded submit a quarter of an hour apart, so two bench_flow runs one after the other
compare the machine's moods as much as the code. Here both checkouts' platforms (``taskroute
up`` from each directory, SQLite, or with ``--postgres`` databases of their own on that
server, the same settings) run at once, idle but for their pollers
while the other is measured, and each round measures one then the other (the order flipping
every round): submits with confidential data at ``--concurrency`` in flight, then one in
flight. Prints every round and the medians; CPU per request is the three services' own, from
/proc (on PostgreSQL the database server's own CPU is not counted: both platforms share it).
Loopback only, bounded by rounds × 2 × 2 × seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.benchmarks.bench_flow import BENCH_JOB, Answer, LoadClient, drive, new_tenant_and_team
from tests.conftest import SERVICES
from tests.e2e.conftest import Platform, launch_platform


@dataclass
class Figures:
    loaded_throughput: list[float] = field(default_factory=list)
    loaded_cpu_ms: list[float] = field(default_factory=list)
    unloaded_p50_ms: list[float] = field(default_factory=list)
    unloaded_p99_ms: list[float] = field(default_factory=list)
    unloaded_cpu_ms: list[float] = field(default_factory=list)


async def client_headers(platform: Platform) -> dict[str, str]:
    tenant, _ = await new_tenant_and_team(platform.gateway_url, platform.operator_key, "A/B")
    return {"Authorization": f"Bearer {tenant['api_key']}"}


async def submit(client: LoadClient, _: int) -> Answer:
    return await client.post("/v1/jobs", json=BENCH_JOB)


async def compare(
    platforms: list[Platform], *, rounds: int, seconds: float, concurrency: int
) -> list[Figures]:
    headers = [await client_headers(platform) for platform in platforms]
    pids = [[platform.pid(service) for service in SERVICES] for platform in platforms]
    figures = [Figures() for _ in platforms]
    for index, platform in enumerate(platforms):  # warm both: first connections, caches
        await drive(
            "warm", submit, base_url=platform.gateway_url, headers=headers[index],
            pids=pids[index], seconds=1, concurrency=concurrency,
        )  # fmt: skip
    for round_number in range(rounds):
        order = range(len(platforms)) if round_number % 2 == 0 else reversed(range(len(platforms)))
        for index in order:
            platform = platforms[index]
            loaded, unloaded = [
                await drive(
                    "submit",
                    submit,
                    base_url=platform.gateway_url,
                    headers=headers[index],
                    pids=pids[index],
                    seconds=seconds,
                    concurrency=in_flight,
                )  # fmt: skip
                for in_flight in (concurrency, 1)
            ]
            if loaded.errors or unloaded.errors:
                raise SystemExit(f"errors in round {round_number + 1}: the figures are void")
            figures[index].loaded_throughput.append(loaded.throughput)
            figures[index].loaded_cpu_ms.append(loaded.cpu_ms_per_request)
            figures[index].unloaded_p50_ms.append(unloaded.percentile(50))
            figures[index].unloaded_p99_ms.append(unloaded.percentile(99))
            figures[index].unloaded_cpu_ms.append(unloaded.cpu_ms_per_request)
    return figures


def report(names: list[str], figures: list[Figures], concurrency: int) -> None:
    rows = [
        (f"submits/s, {concurrency} in flight", "loaded_throughput", "{:.0f}"),
        (f"CPU ms per submit, {concurrency} in flight", "loaded_cpu_ms", "{:.2f}"),
        ("p50 ms, 1 in flight", "unloaded_p50_ms", "{:.2f}"),
        ("p99 ms, 1 in flight", "unloaded_p99_ms", "{:.2f}"),
        ("CPU ms per submit, 1 in flight", "unloaded_cpu_ms", "{:.2f}"),
    ]
    for title, attribute, style in rows:
        print(f"\n{title}")
        medians = []
        for name, figure in zip(names, figures, strict=True):
            values: list[float] = getattr(figure, attribute)
            medians.append(statistics.median(values))
            rounds = " ".join(style.format(value) for value in values)
            print(f"  {name:<40} median {style.format(medians[-1]):>8}   rounds: {rounds}")
        print(f"  after / before: {medians[1] / medians[0]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--postgres", default="", help="admin URL; default: SQLite")
    args = parser.parse_args()
    backend = "postgres" if args.postgres else "sqlite"
    database = {"admin_url": args.postgres} if args.postgres else {}
    trees = [args.before.resolve(), args.after.resolve()]
    settings = {
        "TASKROUTE_LOG_LEVEL": "WARNING",
        "TASKROUTE_GATEWAY_RATE_LIMIT": "1000000/minute",  # as bench_flow: measure, not limit
    }
    with contextlib.ExitStack() as stack:
        platforms = [
            stack.enter_context(
                launch_platform(
                    backend,
                    Path(stack.enter_context(tempfile.TemporaryDirectory())),
                    settings,
                    repo_root=tree,
                    **database,
                )
            )
            for tree in trees
        ]
        figures = asyncio.run(
            compare(
                platforms, rounds=args.rounds, seconds=args.seconds, concurrency=args.concurrency
            )
        )
    report([str(tree) for tree in trees], figures, args.concurrency)


if __name__ == "__main__":
    main()
