"""A database that cannot be used answers 503 problem+json (Retry-After), never a 500, and no
statement or parameter reaches the answer or the log; a wrong statement stays a 500."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.app import create_service_app
from shared.db import create_engine, transaction_scope
from tests.conftest import BACKENDS, POSTGRES_ADMIN_URL

CANARY = "CANARY-db-error-7f3a"


@asynccontextmanager
async def _no_lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield


def app_on(engine: AsyncEngine) -> FastAPI:
    app = create_service_app(title="t", description="t", lifespan=_no_lifespan)

    @app.post("/items")
    async def add_item() -> dict[str, str]:
        async with transaction_scope(engine) as connection:
            await connection.execute(
                text("INSERT INTO item (id, name) VALUES (1, :name)"), {"name": CANARY}
            )
        return {"stored": "yes"}

    @app.post("/drop-my-connection")
    async def drop_my_connection() -> dict[str, str]:
        async with transaction_scope(engine) as connection:
            await connection.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return {"dropped": "no"}

    @app.get("/wrong-column")
    async def wrong_column() -> dict[str, str]:
        async with transaction_scope(engine) as connection:
            await connection.execute(text("SELECT nope FROM item"))
        return {"read": "yes"}

    @app.post("/raise/{sqlstate}")
    async def raise_sqlstate(sqlstate: str) -> dict[str, str]:
        """PostgreSQL raises an error of this SQLSTATE (what a deadlock or a duplicate key
        raises, without staging one)."""
        assert sqlstate.isalnum()
        assert len(sqlstate) == 5
        async with transaction_scope(engine) as connection:
            await connection.execute(
                text(f"DO $$ BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '{sqlstate}'; END $$")
            )
        return {"raised": "no"}

    @app.get("/ping")
    async def ping() -> dict[str, int]:
        async with transaction_scope(engine) as connection:
            return {"one": int((await connection.execute(text("SELECT 1"))).scalar_one())}

    return app


def client_of(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc")


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert body["type"].endswith("/unavailable")
    assert "database is unavailable" in body["detail"]
    assert CANARY not in response.text
    assert "INSERT" not in response.text


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[tuple[AsyncEngine, Path]]:
    path = tmp_path / "items.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}", sqlite_busy_timeout_seconds=0.2)
    async with transaction_scope(engine) as connection:
        await connection.execute(text("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT)"))
    yield engine, path
    await engine.dispose()


async def test_a_locked_sqlite_database_is_503_and_stores_nothing(
    sqlite_engine: tuple[AsyncEngine, Path], caplog: pytest.LogCaptureFixture
) -> None:
    engine, path = sqlite_engine
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with caplog.at_level(logging.DEBUG):
            async with client_of(app_on(engine)) as client:
                response = await client.post("/items")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert_unavailable(response)
    assert CANARY not in caplog.text
    assert "INSERT" not in caplog.text
    assert any("database unavailable" in record.getMessage() for record in caplog.records)
    with sqlite3.connect(path) as reader:
        assert reader.execute("SELECT count(*) FROM item").fetchone() == (0,)


async def test_a_wrong_statement_is_still_a_500(
    sqlite_engine: tuple[AsyncEngine, Path], caplog: pytest.LogCaptureFixture
) -> None:
    engine, _ = sqlite_engine
    async with client_of(app_on(engine)) as client:
        assert (await client.post("/items")).status_code == 200
        with caplog.at_level(logging.DEBUG):
            duplicate = await client.post("/items")  # the same primary key: IntegrityError
    assert duplicate.status_code == 500
    assert duplicate.headers["content-type"] == "application/problem+json"
    assert CANARY not in duplicate.text
    assert CANARY not in caplog.text


async def test_a_statement_sqlite_cannot_run_is_a_500_not_a_retry(
    sqlite_engine: tuple[AsyncEngine, Path],
) -> None:
    """SQLite raises OperationalError for a missing column as for a locked database: only
    its result code tells the bug (SQLITE_ERROR) from the unavailability (SQLITE_BUSY)."""
    engine, _ = sqlite_engine
    async with client_of(app_on(engine)) as client:
        assert (await client.get("/wrong-column")).status_code == 500


@pytest.mark.postgres_only
@pytest.mark.parametrize("backend", BACKENDS)
async def test_postgresql_errors_that_pass_are_503_and_bugs_500(
    backend: str,
) -> None:
    """SQLSTATEs after which the same request may succeed (a deadlock, too many connections,
    the server starting up, ...) are 503 with Retry-After; a broken constraint is a bug."""
    assert backend == "postgres"
    url = POSTGRES_ADMIN_URL.replace("postgresql://", "postgresql+asyncpg://", 1)
    engine = create_engine(url)
    try:
        async with client_of(app_on(engine)) as client:
            for transient in (
                "40P01",  # deadlock_detected
                "40001",  # serialization_failure
                "53300",  # too_many_connections
                "57P03",  # cannot_connect_now (starting up)
                "57P01",  # admin_shutdown
                "55P03",  # lock_not_available
                "57014",  # query_canceled (statement_timeout)
                "08006",  # connection_failure
            ):
                assert_unavailable(await client.post(f"/raise/{transient}"))
            for bug in ("23505", "42703", "22P02"):  # unique_violation, undefined_column, ...
                assert (await client.post(f"/raise/{bug}")).status_code == 500, bug
    finally:
        await engine.dispose()


async def test_an_unreachable_postgresql_is_503() -> None:
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nothing")
    try:
        async with client_of(app_on(engine)) as client:
            assert_unavailable(await client.post("/items"))
    finally:
        await engine.dispose()


@pytest.mark.postgres_only
@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_connection_dropped_mid_request_is_503_and_the_next_request_heals(
    backend: str,
) -> None:
    assert backend == "postgres"
    url = POSTGRES_ADMIN_URL.replace("postgresql://", "postgresql+asyncpg://", 1)
    engine = create_engine(url)
    try:
        async with client_of(app_on(engine)) as client:
            assert_unavailable(await client.post("/drop-my-connection"))
            healed = await client.get("/ping")
            assert healed.status_code == 200, healed.text
            assert healed.json() == {"one": 1}
    finally:
        await engine.dispose()
