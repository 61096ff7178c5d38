"""The in-loop SQLite driver: a locked database is waited for on the event loop, not in it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import create_engine, create_sessionmaker
from shared.sqlite_inline import BUSY_TIMEOUT_SECONDS


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT)"))
    yield engine
    await engine.dispose()


async def test_a_writer_waits_for_a_transaction_of_the_same_process(engine: AsyncEngine) -> None:
    """The first writer awaits something mid-transaction; the second must not freeze the loop."""
    maker = create_sessionmaker(engine)
    first_holds_lock = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> None:
        async with maker() as session, session.begin():
            await session.execute(text("INSERT INTO item (name) VALUES ('first')"))
            first_holds_lock.set()
            await release_first.wait()  # e.g. an HTTP call inside the transaction

    async def second() -> None:
        await first_holds_lock.wait()
        async with maker() as session, session.begin():
            await session.execute(text("INSERT INTO item (name) VALUES ('second')"))

    ticks = 0

    async def release_later() -> None:
        nonlocal ticks
        await first_holds_lock.wait()
        for _ in range(20):  # the loop keeps turning while the second writer waits
            ticks += 1
            await asyncio.sleep(0.005)
        release_first.set()

    await asyncio.wait_for(asyncio.gather(first(), second(), release_later()), timeout=10)
    assert ticks == 20
    async with maker() as session:
        names = (await session.scalars(text("SELECT name FROM item ORDER BY id"))).all()
    assert names == ["first", "second"]


async def test_busy_timeout_pragma_bounds_one_transaction(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    holder = sqlite3.connect(tmp_path / "inline.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    maker = create_sessionmaker(engine)
    try:
        async with maker() as session:
            await session.execute(text("PRAGMA busy_timeout = 50"))
            started = asyncio.get_running_loop().time()
            with pytest.raises(OperationalError, match="locked"):
                await session.execute(text("INSERT INTO item (name) VALUES ('refused')"))
            waited = asyncio.get_running_loop().time() - started
            await session.rollback()
            assert 0.04 <= waited < 5
            raw = await (await session.connection()).get_raw_connection()
            # The bound lasted for that transaction only.
            assert raw.driver_connection.busy_timeout == BUSY_TIMEOUT_SECONDS  # type: ignore[union-attr]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    async with maker() as session, session.begin():
        await session.execute(text("INSERT INTO item (name) VALUES ('accepted')"))
    async with maker() as session:
        names = (await session.scalars(text("SELECT name FROM item"))).all()
    assert names == ["accepted"]


async def test_a_writer_proceeds_once_another_process_commits(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    holder = sqlite3.connect(tmp_path / "inline.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO item (name) VALUES ('other process')")
    maker = create_sessionmaker(engine)

    async def commit_other_soon() -> None:
        await asyncio.sleep(0.05)
        holder.execute("COMMIT")

    async def write() -> None:
        async with maker() as session, session.begin():
            await session.execute(text("INSERT INTO item (name) VALUES ('this process')"))

    try:
        await asyncio.wait_for(asyncio.gather(write(), commit_other_soon()), timeout=10)
    finally:
        holder.close()
    async with maker() as session:
        names = (await session.scalars(text("SELECT name FROM item ORDER BY id"))).all()
    assert names == ["other process", "this process"]
