"""shared.statements: prebuilt Core statements on the SQLite driver store and read exactly what
SQLAlchemy would, inside SQLAlchemy's transaction; elsewhere they go through SQLAlchemy."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    bindparam,
    event,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql import Executable

from shared.db import (
    UTCDateTime,
    connection_scope,
    create_engine,
    create_sessionmaker,
    open_session,
    transaction_scope,
)
from shared.sqlite_inline import inline_creator
from shared.statements import Rows, execute, execute_sync

metadata = MetaData()
items = Table(
    "statements_test_item",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(40), nullable=False),
    Column("at", UTCDateTime, nullable=True),
    Column("payload", JSON, nullable=True),
    Column("flag", Boolean, nullable=False),
    Column("blob", LargeBinary, nullable=True),
    Column("note", String(40), nullable=False, default="default note"),
)

# A column whose Python key differs from its SQL name: SQLAlchemy's rows are keyed by the name.
keyed = Table(
    "statements_test_keyed",
    metadata,
    Column("sql_name", Integer, key="python_key", primary_key=True, autoincrement=False),
    Column("value", String(40), nullable=False),
)

ITEM_COLUMNS = ("id", "name", "at", "payload", "flag", "blob", "note")
SELECT_ITEM = select(items).where(items.c.id == bindparam("id"))
SELECT_ALL = select(items).order_by(items.c.id)
INSERT_ITEM = insert(items)
INSERT_IF_ABSENT = {
    "sqlite": sqlite.insert(items).on_conflict_do_nothing().returning(items.c.id, items.c.at),
    "postgresql": postgresql.insert(items)
    .on_conflict_do_nothing()
    .returning(items.c.id, items.c.at),
}
RENAME = update(items).where(items.c.id == bindparam("item_id")).values(name=bindparam("name"))

WHEN = datetime(2026, 11, 28, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30)))


def item(item_id: int, **changes: Any) -> dict[str, Any]:
    values = {
        "id": item_id,
        "name": f"item {item_id}",
        "at": WHEN,
        "payload": {"countries": ["IN", "PH"], "n": 3, "nested": {"ok": True}},
        "flag": True,
        "blob": b"\x00\x01sealed\xff",
        "note": "given",
    }
    return {**values, **changes}


@pytest.fixture
async def engine(backend: str, database_urls: dict[str, str]) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_urls["vault"])
    async with transaction_scope(engine) as connection:
        await connection.run_sync(metadata.drop_all)
        await connection.run_sync(metadata.create_all)
    yield engine
    async with transaction_scope(engine) as connection:
        await connection.run_sync(metadata.drop_all)
    await engine.dispose()


async def stored(engine: AsyncEngine) -> list[dict[str, Any]]:
    """The table as SQLAlchemy reads it."""
    async with connection_scope(engine) as connection:
        return [dict(row) for row in (await connection.execute(SELECT_ALL)).mappings()]


def expected(values: dict[str, Any]) -> dict[str, Any]:
    return {**values, "at": None if values["at"] is None else values["at"].astimezone(UTC)}


async def test_written_here_reads_back_through_sqlalchemy_unchanged(engine: AsyncEngine) -> None:
    async with transaction_scope(engine) as connection:
        result = await execute(connection, INSERT_ITEM, item(1))
        assert result.rowcount == 1
        await execute(
            connection, INSERT_ITEM, item(2, at=None, payload=None, flag=False, blob=None)
        )
    assert await stored(engine) == [
        expected(item(1)),
        expected(item(2, at=None, payload=None, flag=False, blob=None)),
    ]


async def test_written_by_sqlalchemy_reads_back_here_unchanged(engine: AsyncEngine) -> None:
    async with transaction_scope(engine) as connection:
        await connection.execute(INSERT_ITEM, item(7))
    async with connection_scope(engine) as connection:
        result = await execute(connection, SELECT_ITEM, {"id": 7})
        row = result.first()
        assert row is not None
        assert row.at == WHEN
        assert row.at.tzinfo is not None
        assert (row[0], row.payload, row.flag) == (7, item(7)["payload"], True)
        mapping = (await execute(connection, SELECT_ITEM, {"id": 7})).mappings().first()
        assert mapping == expected(item(7))
        assert (await execute(connection, SELECT_ITEM, {"id": 8})).first() is None


async def test_the_driver_runs_the_statement_itself(engine: AsyncEngine) -> None:
    """The point of the module: the result is its own, not SQLAlchemy's, on both backends."""
    async with connection_scope(engine) as connection:
        result = await execute(connection, SELECT_ITEM, {"id": 1})
    assert isinstance(result, Rows)


@pytest.mark.postgres_only  # a server connection to lose
async def test_a_lost_connection_is_invalidated_as_sqlalchemy_does(engine: AsyncEngine) -> None:
    pid = text("SELECT pg_backend_pid()")
    async with connection_scope(engine) as connection:
        async with transaction_scope(engine) as other:
            await execute(other, INSERT_ITEM, item(140))
            pooled_pid = (await other.execute(pid)).scalar_one()  # back in the pool after this
        await execute(connection, SELECT_ITEM, {"id": 140})  # the transaction is open
        lost_pid = (await connection.execute(pid)).scalar_one()
        async with connection_scope(engine) as killer:
            await killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": lost_pid})
        with pytest.raises(DBAPIError) as lost:
            await execute(connection, SELECT_ITEM, {"id": 140})
        assert lost.value.connection_invalidated
        assert connection.invalidated
    # The pool hands out a live connection next, and not one it held from before the loss
    # either: a server that dropped one connection may have dropped them all.
    async with connection_scope(engine) as connection:
        row = (await execute(connection, SELECT_ITEM, {"id": 140})).first()
        next_pid = (await connection.execute(pid)).scalar_one()
    assert row is not None
    assert next_pid not in (pooled_pid, lost_pid)


async def test_a_cancelled_statement_invalidates_its_connection_as_sqlalchemy_does(
    engine: AsyncEngine,
) -> None:
    """A statement given up mid-way (a timeout, a cancelled request) may leave the driver's
    connection mid-protocol: SQLAlchemy invalidates it rather than pool it, and so does the
    direct path, on both backends."""
    async with transaction_scope(engine) as connection:
        await execute(connection, INSERT_ITEM, item(160))
    rename = {"item_id": 160, "name": "renamed"}
    async with connection_scope(engine) as holder:
        await holder.execute(RENAME, {"item_id": 160, "name": "held"})  # holds the lock
        for path, run in (
            ("sqlalchemy", lambda connection: connection.execute(RENAME, rename)),
            ("direct", lambda connection: execute(connection, RENAME, rename)),
        ):
            async with connection_scope(engine) as connection:
                await connection.execute(select(literal(1)))  # connected, in a transaction
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(run(connection), 0.3)  # waits for the lock
                assert connection.invalidated, path
        await holder.rollback()
    assert [row["name"] for row in await stored(engine)] == ["item 160"]


@pytest.mark.postgres_only  # asyncpg's prepared statements
async def test_a_statement_the_schema_outdated_is_prepared_again(engine: AsyncEngine) -> None:
    async with transaction_scope(engine) as connection:
        await execute(connection, INSERT_ITEM, item(150))
    async with connection_scope(engine) as connection:
        await execute(connection, SELECT_ITEM, {"id": 150})  # prepared on this connection
        await connection.commit()
        async with transaction_scope(engine) as migrator:
            await migrator.execute(text("ALTER TABLE statements_test_item ALTER name TYPE text"))
        # Inside a transaction asyncpg cannot prepare it again by itself: it refuses once...
        with pytest.raises(DBAPIError) as outdated:
            await execute(connection, SELECT_ITEM, {"id": 150})
        assert type(outdated.value.orig).__name__ == "InvalidCachedStatementError"
        await connection.rollback()
        # ...and the next attempt prepares it afresh instead of refusing for ever.
        row = (await execute(connection, SELECT_ITEM, {"id": 150})).first()
        assert row is not None
        assert row.name == "item 150"


async def test_returning_and_rowcount_tell_a_new_row_from_an_existing_one(
    engine: AsyncEngine,
) -> None:
    statement = INSERT_IF_ABSENT[engine.dialect.name]
    async with transaction_scope(engine) as connection:
        first = await execute(connection, statement, item(3))
        assert first.all() == [(3, WHEN)]
        again = await execute(connection, statement, item(3, name="other"))
        assert again.first() is None
    assert [row["name"] for row in await stored(engine)] == ["item 3"]


async def test_an_update_reports_the_rows_it_changed(engine: AsyncEngine) -> None:
    async with transaction_scope(engine) as connection:
        await execute(connection, INSERT_ITEM, item(4))
        assert (await execute(connection, RENAME, {"item_id": 4, "name": "renamed"})).rowcount == 1
        assert (await execute(connection, RENAME, {"item_id": 5, "name": "nobody"})).rowcount == 0
    assert [row["name"] for row in await stored(engine)] == ["renamed"]


async def test_a_statement_alone_in_its_transaction_commits_and_rolls_back_with_it(
    engine: AsyncEngine,
) -> None:
    async with transaction_scope(engine) as connection:
        await execute(connection, INSERT_ITEM, item(10))

    async def insert_then_fail() -> None:
        async with transaction_scope(engine) as connection:
            await execute(connection, INSERT_ITEM, item(11))
            raise RuntimeError("after the insert")

    with pytest.raises(RuntimeError):
        await insert_then_fail()
    assert [row["id"] for row in await stored(engine)] == [10]


async def test_on_a_session_it_joins_the_sessions_transaction(engine: AsyncEngine) -> None:
    maker = create_sessionmaker(engine)
    async with open_session(maker) as session:
        await execute(session, INSERT_ITEM, item(20))
        await session.commit()
    async with open_session(maker) as session:
        await execute(session, INSERT_ITEM, item(21))
        await session.rollback()
    async with open_session(maker) as session:
        await execute(session, INSERT_ITEM, item(22))
    assert [row["id"] for row in await stored(engine)] == [20]


async def test_a_python_side_default_is_still_applied(engine: AsyncEngine) -> None:
    values = item(30)
    del values["note"]
    async with transaction_scope(engine) as connection:
        await execute(connection, INSERT_ITEM, values)
    assert [row["note"] for row in await stored(engine)] == ["default note"]


async def test_it_runs_in_synchronous_code_on_run_sync(engine: AsyncEngine) -> None:
    def insert_and_read(connection: Connection) -> Any:
        execute_sync(connection, INSERT_ITEM, item(40))
        return execute_sync(connection, SELECT_ITEM, {"id": 40}).first()

    async with transaction_scope(engine) as connection:
        row = await connection.run_sync(insert_and_read)
    assert row is not None
    assert row.name == "item 40"
    assert [row["id"] for row in await stored(engine)] == [40]


async def test_a_locked_database_is_waited_for_without_blocking_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with transaction_scope(engine) as connection:
            await connection.run_sync(metadata.create_all)
        holder = sqlite3.connect(path, timeout=0, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's write lock
        ticks = 0

        async def release_later() -> None:
            nonlocal ticks
            for _ in range(20):
                await asyncio.sleep(0.005)
                ticks += 1
            holder.execute("COMMIT")

        async def insert() -> None:
            async with transaction_scope(engine) as connection:
                await execute(connection, INSERT_ITEM, item(50))

        await asyncio.gather(release_later(), insert())
        holder.close()
        assert ticks == 20  # the loop kept running while the insert waited
        assert [row["id"] for row in await stored(engine)] == [50]
    finally:
        await engine.dispose()


async def test_a_failing_statement_raises_what_sqlalchemy_would(engine: AsyncEngine) -> None:
    async with transaction_scope(engine) as connection:
        await execute(connection, INSERT_ITEM, item(60))
    with pytest.raises(IntegrityError) as raised:
        async with transaction_scope(engine) as connection:
            await execute(connection, INSERT_ITEM, item(60, name="canary-5f3a9c"))
    assert "canary-5f3a9c" not in str(raised.value)  # parameters never reach the message


async def test_a_lock_held_past_the_timeout_is_sqlalchemys_operational_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "held.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}", sqlite_busy_timeout_seconds=0.05)
    try:
        async with transaction_scope(engine) as connection:
            await connection.run_sync(metadata.create_all)
        holder = sqlite3.connect(path, timeout=0, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError):
            async with transaction_scope(engine) as connection:
                await execute(connection, INSERT_ITEM, item(70))
        holder.execute("ROLLBACK")
        holder.close()
    finally:
        await engine.dispose()


async def test_statement_listeners_see_every_statement(engine: AsyncEngine) -> None:
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]).split(None, 1)[0])

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        async with transaction_scope(engine) as connection:
            await execute(connection, INSERT_ITEM, item(80))
            result = await execute(connection, SELECT_ITEM, {"id": 80})
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert seen == ["INSERT", "SELECT"]
    assert not isinstance(result, Rows)


async def test_none_is_stored_as_sqlalchemy_stores_it(engine: AsyncEngine) -> None:
    """A JSON column keeps None as JSON null (not SQL NULL), whichever path wrote it."""
    async with transaction_scope(engine) as connection:
        await execute(connection, INSERT_ITEM, item(90, payload=None, at=None))
        await connection.execute(INSERT_ITEM, item(91, payload=None, at=None))
    probe = select(
        items.c.id, items.c.payload.is_(None).label("sql_null"), items.c.at.is_(None)
    ).order_by(items.c.id)
    async with connection_scope(engine) as connection:
        rows = (await connection.execute(probe)).all()
    assert rows[0][1:] == rows[1][1:]


OTHER = items.alias("other")
# Statements whose result keys SQLAlchemy chooses its own way (or cannot type at all).
KEYED_THEIR_OWN_WAY: dict[str, Executable] = {
    "key differs from name": select(keyed).order_by(keyed.c.python_key),
    "anonymous function": select(func.count()).select_from(items),
    "leading underscore": select(items.c.id.label("_hidden")).order_by(items.c.id),
    "same name twice": select(items.c.name, OTHER.c.name)
    .where(OTHER.c.id == items.c.id)
    .order_by(items.c.id),
    "text": text("SELECT id, name FROM statements_test_item ORDER BY id"),
    "numeric": select(literal(Decimal("12.50"), Numeric(10, 2)).label("amount")),
    "float": select(literal(0.25, Float()).label("share")),
}


@pytest.mark.parametrize("case", list(KEYED_THEIR_OWN_WAY))
async def test_rows_are_keyed_as_sqlalchemy_keys_them(engine: AsyncEngine, case: str) -> None:
    statement = KEYED_THEIR_OWN_WAY[case]
    async with transaction_scope(engine) as connection:
        await connection.execute(INSERT_ITEM, [item(100), item(101)])
        await connection.execute(insert(keyed), [{"python_key": 1, "value": "one"}])
    async with connection_scope(engine) as connection:
        theirs = [dict(row) for row in (await connection.execute(statement)).mappings().all()]
        ours = [dict(row) for row in (await execute(connection, statement)).mappings().all()]
    assert ours == theirs
    assert ours  # the comparison saw rows


async def test_a_required_parameter_left_out_is_sqlalchemys_error(engine: AsyncEngine) -> None:
    with pytest.raises(StatementError, match="required for bind parameter 'id'"):
        async with connection_scope(engine) as connection:
            await execute(connection, SELECT_ITEM, {})


async def test_each_engines_own_settings_shape_what_it_stores(tmp_path: Path) -> None:
    """The compiled plan belongs to the dialect too: an engine with another JSON serialiser
    stores with its own, not the one that ran the statement first."""
    path = tmp_path / "serialisers.db"
    url = f"sqlite+aiosqlite:///{path}"
    compact = create_async_engine(
        url,
        async_creator=inline_creator(str(path)),
        json_serializer=lambda value: json.dumps(value, separators=(",", ":")),
    )
    spaced = create_async_engine(
        url,
        async_creator=inline_creator(str(path)),
        json_serializer=lambda value: json.dumps(value, separators=(", ", ": ")),
    )
    try:
        async with transaction_scope(compact) as connection:
            await connection.run_sync(metadata.create_all)
            await execute(connection, INSERT_ITEM, item(120, payload={"a": [1, 2]}))
        async with transaction_scope(spaced) as connection:
            await execute(connection, INSERT_ITEM, item(121, payload={"a": [1, 2]}))
    finally:
        await compact.dispose()
        await spaced.dispose()
    with sqlite3.connect(path) as raw:
        stored_text = raw.execute(
            "SELECT id, payload FROM statements_test_item ORDER BY id"
        ).fetchall()
    assert stored_text == [(120, '{"a":[1,2]}'), (121, '{"a": [1, 2]}')]


async def test_an_invalidated_connection_is_left_to_sqlalchemy(engine: AsyncEngine) -> None:
    async with transaction_scope(engine) as connection:
        await execute(connection, INSERT_ITEM, item(130))
    async with connection_scope(engine) as connection:
        await connection.invalidate()  # outside a transaction: SQLAlchemy reconnects
        row = (await execute(connection, SELECT_ITEM, {"id": 130})).first()
    assert row is not None
    assert row.name == "item 130"
