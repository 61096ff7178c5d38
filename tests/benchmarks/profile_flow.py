"""Where a submit's CPU goes: py-spy samples of the three services under a submit load.

    .venv/bin/python -m tests.benchmarks.profile_flow [--seconds 15] [--concurrency 4]
        [--postgres postgresql://postgres@127.0.0.1:5432/test] [--top 25] [--out DIR]

Starts a real `taskroute up` (as bench_flow does), attaches `py-spy record` (a dev
dependency; it needs ptrace rights over the service processes) to the gateway, router and
vault, drives `POST /v1/jobs` with confidential data for a bounded time, and prints, per
service, the functions holding the most samples (inclusive, idle event-loop waits left out),
grouped by package, so the biggest costs are visible without a flame-graph viewer. The raw
collapsed stacks stay in ``--out`` for speedscope or flamegraph.pl.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import httpx

from tests.benchmarks.bench_flow import BENCH_JOB, new_tenant_and_team
from tests.conftest import SERVICES
from tests.e2e.conftest import launch_platform

FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")
# Samples whose innermost frame is one of these are an idle loop waiting for I/O, not work.
# Under uvloop the loop's wait is C code below ``Runner.run``, which py-spy shows as the leaf.
IDLE = (
    "select (selectors.py",
    "_run_once (asyncio/base_events.py",
    "run (uvloop",
    "Runner.run (asyncio/runners.py",
)


async def submit_load(gateway: str, operator_key: str, seconds: float, concurrency: int) -> int:
    tenant, _ = await new_tenant_and_team(gateway, operator_key, "Profile")
    done = 0
    deadline = asyncio.get_running_loop().time() + seconds
    headers = {"Authorization": f"Bearer {tenant['api_key']}"}
    async with httpx.AsyncClient(base_url=gateway, headers=headers, timeout=30) as client:

        async def worker() -> None:
            nonlocal done
            while asyncio.get_running_loop().time() < deadline:
                response = await client.post("/v1/jobs", json=BENCH_JOB)
                response.raise_for_status()
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def parse(raw: Path) -> tuple[Counter[str], int]:
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames and frames[-1].startswith(IDLE):
            continue
        total += count
        seen: set[str] = set()
        for frame in frames:
            match = FRAME.match(frame.strip())
            name = (
                f"{match['function']} ({match['file'].split('site-packages/')[-1]})"
                if match
                else frame
            )
            if name not in seen:
                seen.add(name)
                inclusive[name] += count
    return inclusive, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--postgres", default="", help="admin URL; default: SQLite")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default="", help="folder for the raw stacks; default: temp")
    args = parser.parse_args()
    backend = "postgres" if args.postgres else "sqlite"
    out = Path(args.out or tempfile.mkdtemp(prefix="taskroute-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    py_spy = Path(sys.executable).with_name("py-spy")
    with (
        tempfile.TemporaryDirectory() as tmp,
        launch_platform(
            backend,
            Path(tmp),
            # As bench_flow: the per-key rate limit would refuse most of the load.
            {"TASKROUTE_LOG_LEVEL": "WARNING", "TASKROUTE_GATEWAY_RATE_LIMIT": "1000000/minute"},
            admin_url=args.postgres,
        ) as platform,
    ):
        samplers = {
            service: subprocess.Popen(
                [
                    str(py_spy), "record", "--pid", str(platform.pid(service)),
                    "--duration", str(int(args.seconds) + 2), "--rate", "250",
                    "--format", "raw", "--nonblocking", "-o", str(out / f"{service}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for service in SERVICES
        }  # fmt: skip
        submitted = asyncio.run(
            submit_load(platform.gateway_url, platform.operator_key, args.seconds, args.concurrency)
        )
        for sampler in samplers.values():
            sampler.wait(timeout=60)
    print(f"\n{submitted} submits in {args.seconds:.0f} s ({backend}); raw stacks in {out}\n")
    for service in SERVICES:
        inclusive, total = parse(out / f"{service}.txt")
        print(f"== {service}: {total} busy samples ({total / max(submitted, 1):.2f} per submit)")
        for name, count in inclusive.most_common(args.top):
            print(f"{100 * count / max(total, 1):6.1f}%  {name}")
        print()


if __name__ == "__main__":
    main()
