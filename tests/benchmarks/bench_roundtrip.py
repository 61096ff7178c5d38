"""What one database round trip costs a service, beside a bare FastAPI request, in process.

    .venv/bin/python -m tests.benchmarks.bench_roundtrip [--n 300]
        [--postgres postgresql://postgres@127.0.0.1:5432/test]

Prints CPU milliseconds per operation (process time, all threads) for: a bare FastAPI POST
through httpx's ASGI transport (the baseline, same run), a session with one ``SELECT 1``, a
session with five, and a session with five ORM selects, on the vault's migrated database.
The difference between the last rows is the price of each awaited statement: the figure that
decides how many statements a request may make (see BENCHMARKS.md, issue 6).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from sqlalchemy import select, text

from services.vault.db.models import TenantKey
from shared.db import create_engine, create_sessionmaker
from tests.benchmarks.baseline_app import create_app
from tests.conftest import provisioned_databases


async def cpu_ms(operation: Callable[[], Awaitable[object]], n: int) -> float:
    for _ in range(20):
        await operation()
    started = time.process_time()
    for _ in range(n):
        await operation()
    return (time.process_time() - started) * 1000 / n


async def measure(url: str, n: int) -> list[tuple[str, float]]:
    app = create_app()
    body = {"title": "Baseline", "description": "d" * 1000}
    engine = create_engine(url)
    maker = create_sessionmaker(engine)
    tenant = str(uuid.uuid4())

    async def one() -> None:
        async with maker() as session:
            await session.execute(text("SELECT 1"))

    async def five() -> None:
        async with maker() as session:
            for _ in range(5):
                await session.execute(text("SELECT 1"))

    async def five_orm() -> None:
        async with maker() as session:
            for _ in range(5):
                (
                    await session.scalars(select(TenantKey).where(TenantKey.tenant_id == tenant))
                ).all()

    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://a") as client:
            return [
                (
                    "A: bare FastAPI POST (in process)",
                    await cpu_ms(lambda: client.post("/echo", json=body), n),
                ),
                ("session + SELECT 1", await cpu_ms(one, n)),
                ("session + 5 x SELECT 1", await cpu_ms(five, n)),
                ("session + 5 x ORM select", await cpu_ms(five_orm, n)),
            ]
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--postgres", default="", help="admin URL; default: SQLite")
    args = parser.parse_args()
    backend = "postgres" if args.postgres else "sqlite"
    with (
        tempfile.TemporaryDirectory() as tmp,
        provisioned_databases(backend, Path(tmp), admin_url=args.postgres) as urls,
    ):
        rows = asyncio.run(measure(urls["vault"], args.n))
    baseline = rows[0][1]
    print(f"\nbackend: {backend}; {args.n} operations each; CPU ms per operation\n")
    for name, value in rows:
        print(f"{name:<36}{value:>8.2f}{value / baseline:>8.1f}x A")
    per_statement = (rows[2][1] - rows[1][1]) / 4
    ratio = per_statement / baseline
    print(f"\neach further awaited statement: {per_statement:.2f} ms ({ratio:.1f}x A)")


if __name__ == "__main__":
    main()
