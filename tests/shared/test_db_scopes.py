"""The request paths' connection and session scopes: commit, roll back, close, and no extra turn
of the event loop on the way out (see shared.db for why that matters)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import (
    connection_scope,
    create_engine,
    create_sessionmaker,
    open_session,
    transaction_scope,
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'scopes.db'}")
    async with transaction_scope(engine) as connection:
        await connection.execute(text("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT)"))
    yield engine
    await engine.dispose()


async def names(engine: AsyncEngine) -> list[str]:
    async with connection_scope(engine) as connection:
        rows = await connection.execute(text("SELECT name FROM item ORDER BY id"))
        return [row.name for row in rows]


async def test_a_transaction_commits_when_its_block_succeeds(engine: AsyncEngine) -> None:
    async with transaction_scope(engine) as connection:
        await connection.execute(text("INSERT INTO item (name) VALUES ('kept')"))
    assert await names(engine) == ["kept"]
    assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_transaction_rolls_back_when_its_block_raises(engine: AsyncEngine) -> None:
    async def insert_then_fail() -> None:
        async with transaction_scope(engine) as connection:
            await connection.execute(text("INSERT INTO item (name) VALUES ('dropped')"))
            raise RuntimeError("after the insert")

    with pytest.raises(RuntimeError):
        await insert_then_fail()
    assert await names(engine) == []
    assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_connection_left_without_commit_keeps_nothing(engine: AsyncEngine) -> None:
    async with connection_scope(engine) as connection:
        await connection.execute(text("INSERT INTO item (name) VALUES ('uncommitted')"))
    assert await names(engine) == []
    assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_session_is_closed_and_its_uncommitted_work_dropped(engine: AsyncEngine) -> None:
    maker = create_sessionmaker(engine)
    async with open_session(maker) as session:
        await session.execute(text("INSERT INTO item (name) VALUES ('committed')"))
        await session.commit()
        await session.execute(text("INSERT INTO item (name) VALUES ('uncommitted')"))
    assert await names(engine) == ["committed"]
    assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_leaving_a_scope_gives_no_other_request_a_turn(engine: AsyncEngine) -> None:
    """On SQLite nothing in a transaction suspends, so a whole one, close included, must run
    without the event loop switching to another task. SQLAlchemy's own context managers close
    in a new task, which let every other request in flight step ahead of this one."""
    other_ran = False

    async def other_request() -> None:
        nonlocal other_ran
        other_ran = True

    maker = create_sessionmaker(engine)
    async with transaction_scope(engine) as connection:  # the pool holds a connection now
        await connection.execute(text("SELECT 1"))
    other = asyncio.ensure_future(other_request())  # ready: runs at the loop's next turn
    async with transaction_scope(engine) as connection:
        await connection.execute(text("INSERT INTO item (name) VALUES ('a')"))
    async with open_session(maker) as session:
        await session.execute(text("INSERT INTO item (name) VALUES ('b')"))
        await session.commit()
    async with connection_scope(engine) as connection:
        await connection.execute(text("SELECT name FROM item"))
    assert not other_ran
    await other
    assert other_ran
    assert await names(engine) == ["a", "b"]
