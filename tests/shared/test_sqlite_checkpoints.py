"""SQLite's WAL is copied back into the database file by a service's background task on a
worker thread, not inside a commit on the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import text

from shared.app import create_service_app
from shared.db import _checkpoint, create_engine, sqlite_checkpoints, transaction_scope
from tests.conftest import running


def checkpoint_tasks() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name() == "sqlite-checkpoints"]


async def test_the_wal_reaches_the_database_file_without_a_commit_doing_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "wal.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with transaction_scope(engine) as connection:
            await connection.execute(text("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT)"))
        for number in range(300):  # 300 commits: far below the backstop's 10,000 pages
            async with transaction_scope(engine) as connection:
                await connection.execute(
                    text("INSERT INTO item (name) VALUES (:name)"),
                    {"name": "x" * 500 + str(number)},
                )
        written_by_commits = path.stat().st_size
        async with sqlite_checkpoints(engine, interval_seconds=0.05):
            for _ in range(100):
                if path.stat().st_size > written_by_commits + 100_000:
                    break
                await asyncio.sleep(0.05)
        assert path.stat().st_size > written_by_commits + 100_000  # the rows' pages moved in
        assert checkpoint_tasks() == []
        async with transaction_scope(engine) as connection:
            count = (await connection.execute(text("SELECT count(*) FROM item"))).scalar_one()
        assert count == 300
    finally:
        await engine.dispose()


async def test_a_file_still_in_rollback_mode_when_checkpoints_start_is_checkpointed(
    tmp_path: Path,
) -> None:
    """As after ``taskroute migrate``: the file is in rollback mode until a connection makes it
    WAL, and a router or vault makes its first only on its first request. A checkpoint
    connection that met the file in rollback mode kept treating it so, and every later round
    silently did nothing; the WAL then grew to the backstop, checkpointed inside a commit on
    the event loop."""
    path = tmp_path / "migrated.db"
    with sqlite3.connect(path) as migrations:
        migrations.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT)")
    migrations.close()
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with sqlite_checkpoints(engine, interval_seconds=0.05):
            await asyncio.sleep(0.2)  # rounds before any service connection
            for number in range(300):
                async with transaction_scope(engine) as connection:
                    await connection.execute(
                        text("INSERT INTO item (name) VALUES (:name)"),
                        {"name": "x" * 500 + str(number)},
                    )
            for _ in range(100):
                if path.stat().st_size > 100_000:
                    break
                await asyncio.sleep(0.05)
        assert path.stat().st_size > 100_000  # the rows' pages reached the database file
    finally:
        await engine.dispose()


def test_a_database_that_cannot_be_wal_fails_its_checkpoint_loudly(tmp_path: Path) -> None:
    """Without shared memory SQLite keeps the rollback journal, answering the request for WAL
    with the old mode: a checkpoint would then do nothing; the round fails (and is logged)."""
    path = tmp_path / "no-shared-memory.db"
    connection = sqlite3.connect(f"file:{path}?vfs=unix-none", uri=True)
    try:
        with pytest.raises(sqlite3.OperationalError, match="journal mode is delete, not wal"):
            _checkpoint(connection)
    finally:
        connection.close()


async def test_postgresql_gets_no_checkpoint_task() -> None:
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/unused")  # never connects
    try:
        async with sqlite_checkpoints(engine, interval_seconds=0.01):
            await asyncio.sleep(0.05)
            assert checkpoint_tasks() == []
    finally:
        await engine.dispose()


async def test_a_service_checkpoints_while_it_runs(tmp_path: Path) -> None:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'service.db'}")
        app.state.engine = engine
        yield
        await engine.dispose()

    app = create_service_app(title="t", description="t", lifespan=lifespan)
    async with running(app):
        assert len(checkpoint_tasks()) == 1
    assert checkpoint_tasks() == []
