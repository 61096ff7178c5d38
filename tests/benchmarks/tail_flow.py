"""The unloaded submit's tail: one submit at a time for a while, beside baseline A's.

    .venv/bin/python -m tests.benchmarks.tail_flow [--seconds 30] [--rounds 1]
        [--postgres postgresql://postgres@127.0.0.1:5432/test] [CHECKOUT ...]

bench_flow's unloaded step lasts three seconds: about 600 submits, so its p99 is the sixth
slowest, and a stall that comes every five seconds may fall in it or not. Here each run lasts
``--seconds`` on a new platform (``taskroute up`` from each CHECKOUT, default this one; SQLite,
or with ``--postgres`` databases of its own), one submit with confidential data in flight,
after baseline A one request in flight for as long, and prints the percentiles up to the
maximum, how many submits took over 10 ms, the median of each five seconds (the machine's own
drift shows there) and when the slowest came. With several checkouts, each round runs them in
turn, the order flipping every round. Loopback only; bounded by rounds × checkouts × seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.benchmarks.bench_flow import (
    BENCH_JOB,
    DESCRIPTION_1K,
    LoadClient,
    new_tenant_and_team,
    start_baseline,
    stop,
)
from tests.e2e.conftest import REPO_ROOT, free_port, launch_platform

WARM_UP_REQUESTS = 50
SLOW_MS = 10.0  # issue 6's unloaded p99 target
WINDOW_SECONDS = 5


@dataclass
class Timeline:
    """Each request's start (seconds into the run) and latency (ms), in order."""

    name: str
    samples: list[tuple[float, float]] = field(default_factory=list)
    errors: int = 0

    def quantile(self, q: float) -> float:
        latencies = sorted(ms for _, ms in self.samples)
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]


async def one_at_a_time(
    name: str, url: str, headers: dict[str, str], body: Mapping[str, object], seconds: float
) -> Timeline:
    timeline = Timeline(name)
    async with aiohttp.ClientSession(trust_env=False) as session:
        client = LoadClient(session, url, headers)
        for _ in range(WARM_UP_REQUESTS):
            await client.post("", json=body)
        began = time.perf_counter()
        while (started := time.perf_counter()) - began < seconds:
            answer = await client.post("", json=body)
            if answer.status_code >= 400:
                timeline.errors += 1
                continue
            timeline.samples.append((started - began, (time.perf_counter() - started) * 1000))
    return timeline


async def measure_baseline(seconds: float) -> Timeline:
    port = free_port()
    process = start_baseline(port)
    try:
        return await one_at_a_time(
            "A: bare FastAPI POST",
            f"http://127.0.0.1:{port}/echo",
            {},
            {"title": "Baseline", "description": DESCRIPTION_1K[:1000]},  # as bench_flow's
            seconds,
        )
    finally:
        stop([process])


def measure_checkout(checkout: Path, seconds: float, postgres: str) -> Timeline:
    quiet = {
        "TASKROUTE_LOG_LEVEL": "WARNING",
        "TASKROUTE_GATEWAY_RATE_LIMIT": "1000000/minute",
    }
    backend = "postgres" if postgres else "sqlite"
    with (
        tempfile.TemporaryDirectory() as tmp,
        launch_platform(backend, Path(tmp), quiet, admin_url=postgres, repo_root=checkout) as app,
    ):

        async def run() -> Timeline:
            tenant, _ = await new_tenant_and_team(app.gateway_url, app.operator_key, "Tail")
            headers = {"Authorization": f"Bearer {tenant['api_key']}"}
            return await one_at_a_time(
                f"submit: {checkout}", f"{app.gateway_url}/v1/jobs", headers, BENCH_JOB, seconds
            )

        return asyncio.run(run())


def report(timeline: Timeline, baseline: Timeline) -> None:
    n = len(timeline.samples)
    over = sum(1 for _, ms in timeline.samples if ms > SLOW_MS)
    p50 = timeline.quantile(0.5)
    print(
        f"{timeline.name}\n  n={n} errors={timeline.errors}  p50 {p50:.2f} ms "
        f"({p50 / baseline.quantile(0.5):.1f}× A's)  p90 {timeline.quantile(0.9):.2f}  "
        f"p99 {timeline.quantile(0.99):.2f}  p99.9 {timeline.quantile(0.999):.2f}  "
        f"max {timeline.quantile(1.0):.2f} ms  over {SLOW_MS:g} ms: {over} ({over / n:.2%})"
    )
    windows: dict[int, list[float]] = {}
    for at, ms in timeline.samples:
        windows.setdefault(int(at // WINDOW_SECONDS), []).append(ms)
    medians = " ".join(f"{statistics.median(values):.1f}" for _, values in sorted(windows.items()))
    print(f"  median of each {WINDOW_SECONDS} s: {medians}")
    slowest = sorted(sorted(timeline.samples, key=lambda sample: -sample[1])[:10])
    print(
        "  slowest (s into the run: ms): " + ", ".join(f"{at:.1f}: {ms:.0f}" for at, ms in slowest)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="*", type=Path, default=[REPO_ROOT])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--postgres", default="", help="admin URL; default: SQLite")
    args = parser.parse_args()
    baseline = asyncio.run(measure_baseline(args.seconds))
    report(baseline, baseline)
    for round_number in range(args.rounds):
        order = args.checkouts if round_number % 2 == 0 else list(reversed(args.checkouts))
        for checkout in order:
            report(measure_checkout(checkout.resolve(), args.seconds, args.postgres), baseline)


if __name__ == "__main__":
    main()
