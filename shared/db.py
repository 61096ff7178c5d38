"""Database plumbing shared by the services: declarative base, engine, session, migrations.

Each service owns its own database and its own Alembic history (kept in its own version table,
so two services may share one PostgreSQL database in small deployments). SQLite runs in WAL mode
and waits for a locked database on the event loop, so the embedded default tolerates
concurrent requests (see :mod:`shared.sqlite_inline`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from alembic import command
from alembic.config import Config
from fastapi import Depends, Request
from sqlalchemy import DateTime, MetaData, TypeDecorator, event, exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from shared.sqlite_inline import BUSY_TIMEOUT_SECONDS, inline_creator

logger = logging.getLogger("taskroute.db")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_base() -> type[DeclarativeBase]:
    """A declarative base with its own metadata: one per service, never shared."""

    class Base(DeclarativeBase):
        metadata = MetaData(naming_convention=NAMING_CONVENTION)

    return Base


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(
    url: str, *, echo: bool = False, sqlite_busy_timeout_seconds: float = BUSY_TIMEOUT_SECONDS
) -> AsyncEngine:
    """A service's engine. On SQLite a statement waits at most ``sqlite_busy_timeout_seconds``
    for another connection's write lock, then fails with "database is locked". Its errors'
    texts leave out the statement's parameters, which may be sealed data or key digests."""
    if is_sqlite(url):
        path = _ensure_sqlite_folder(url)
        # Statements run on the event loop's thread (see shared.sqlite_inline for why and how
        # a locked database is waited for without blocking the loop).
        creator = inline_creator(path, timeout=sqlite_busy_timeout_seconds)
        engine = create_async_engine(url, echo=echo, async_creator=creator, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_async_engine(
        url, echo=echo, pool_size=10, max_overflow=10, pool_recycle=1800, hide_parameters=True
    )
    event.listen(engine.sync_engine.pool, "checkin", _note_checkin)
    event.listen(engine.sync_engine.pool, "checkout", _check_before_use)
    return engine


# A pooled connection unused for this long is pinged before it is handed out: long enough that
# a busy service never pings, short enough that an idle one finds a connection a firewall or
# a failover dropped silently (no FIN) before a request does.
IDLE_PING_SECONDS = 10.0


def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
    record.info["checked_in_at"] = time.monotonic()


def _check_before_use(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Hand out only a live connection, without a round trip per checkout.

    ``pool_pre_ping`` pings on every checkout: 0.7 ms of CPU per transaction here
    (``bench_roundtrip``), a round trip per request. Instead: a connection the server closed
    (a PostgreSQL restart, ``pg_terminate_backend``, a failover) is already known to be closed
    to asyncpg, which saw the socket close, so asking costs nothing; a connection idle for a
    while is pinged, as pre-ping would. Raising ``DisconnectionError`` here makes the pool
    discard the connection and hand out another (SQLAlchemy's documented pessimistic
    disconnect handling)."""
    driver = getattr(dbapi_connection, "driver_connection", None)
    is_closed = getattr(driver, "is_closed", None)
    if is_closed is not None and is_closed():
        raise exc.DisconnectionError("connection closed by the server")
    checked_in_at = record.info.get("checked_in_at")
    if checked_in_at is not None and time.monotonic() - checked_in_at > IDLE_PING_SECONDS:
        try:
            dbapi_connection.ping()
        except Exception as error:  # noqa: BLE001 - any failure means "not usable"
            raise exc.DisconnectionError("idle connection failed its ping") from error


def _ensure_sqlite_folder(url: str) -> str:
    path = url.split(":///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return path


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers proceed during a write; NORMAL sync is durable across process crashes
    # (not power loss) at a fraction of FULL's cost. No busy_timeout: a writer that finds the
    # database locked waits on the event loop (shared.sqlite_inline), not in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Checkpoints run off the event loop (see sqlite_checkpoints); this is only the backstop
    # should that task not run (a CLI command, a stalled thread): a bounded WAL either way.
    cursor.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_CHECKPOINT_PAGES}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# SQLite copies the WAL back into the database file (a checkpoint, with an fsync) inside the
# commit that crosses wal_autocheckpoint pages (1,000 by default). With the driver on the event
# loop (shared.sqlite_inline) that commit blocked the whole process: ~4 ms, 5-10 times per 3 s
# of submits per service. A service instead checkpoints every CHECKPOINT_INTERVAL_SECONDS on a
# worker thread (sqlite3 releases the GIL while SQLite works), PASSIVE so that it never waits
# for, nor holds up, a reader or a writer. Unloaded submit p99: x0.86-0.89 (ab_flow, BENCHMARKS.md).
CHECKPOINT_INTERVAL_SECONDS = 1.0
BACKSTOP_CHECKPOINT_PAGES = 10_000  # ~40 MB of WAL at the default 4 KiB page


def _sqlite_path(engine: AsyncEngine) -> str | None:
    """The database file of a SQLite engine (None for another backend or an in-memory one)."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    return database if database and database != ":memory:" else None


def _checkpoint(connection: sqlite3.Connection) -> None:
    # A connection that met the file in rollback mode (fresh from the migrations, before any
    # service connection) keeps treating it so, and its checkpoints silently do nothing.
    # Asking for WAL, as every service connection does, makes such a file WAL and is a no-op
    # once it is. Where WAL cannot be had (no shared memory), that is an error, not a no-op.
    mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()
    if mode is None or mode[0] != "wal":
        raise sqlite3.OperationalError(f"journal mode is {mode and mode[0]}, not wal")
    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


@asynccontextmanager
async def sqlite_checkpoints(
    engine: AsyncEngine | None, *, interval_seconds: float = CHECKPOINT_INTERVAL_SECONDS
) -> AsyncIterator[None]:
    """While the block runs, checkpoint ``engine``'s SQLite database on a worker thread every
    ``interval_seconds`` (nothing for another backend)."""
    path = None if engine is None else _sqlite_path(engine)
    if path is None:
        yield
        return
    # Its own connection, used by one thread at a time (each round is awaited before the next).
    connection = sqlite3.connect(path, timeout=0, check_same_thread=False)
    stopping = asyncio.Event()

    async def checkpoint_until_stopped() -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval_seconds)
            if stopping.is_set():
                return
            try:
                await asyncio.to_thread(_checkpoint, connection)
            except sqlite3.Error as error:  # busy or failing: the next round, or the backstop
                # The message says which ("database is locked", "disk I/O error", the mode
                # above); these two pragmas carry no data.
                logger.warning(
                    "sqlite checkpoint failed",
                    extra={"error_type": type(error).__name__, "error": str(error)},
                )

    task = asyncio.create_task(checkpoint_until_stopped(), name="sqlite-checkpoints")
    try:
        yield
    finally:
        # Not cancelled: a cancelled await would leave the thread's checkpoint running on the
        # connection closed below. The round in flight finishes, then the task returns.
        stopping.set()
        await task
        connection.close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


# Why the request paths open and close connections and sessions through these three helpers
# rather than ``async with engine.begin()`` or ``async with maker()``: SQLAlchemy's async context
# managers close on exit in a task of their own (``_run_to_completion``, so that a cancellation
# cannot abandon the close half-way). Creating that task and waiting for it sends the request to
# the back of the event loop's queue: every request in flight takes a step before this one goes
# on. Through three services in a row this kept the requests in flight moving as one convoy,
# each service idle while the batch was in another, and throughput stopped growing at two
# requests in flight (bench_flow: ~180 submits/s at 2, 4 and 8 in flight, each process half
# idle). Here the close is awaited in place. A cancellation that lands during the close (only
# possible where returning the connection makes a round trip, i.e. PostgreSQL) is handled by
# the pool as for any interrupted statement: it invalidates the connection, nothing leaks.


@asynccontextmanager
async def connection_scope(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection, closed (its open transaction rolled back) on leaving."""
    connection = await engine.connect()
    try:
        yield connection
    finally:
        await connection.close()


@asynccontextmanager
async def transaction_scope(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """``engine.begin()``: a connection whose transaction commits if the block succeeds and
    rolls back if it raises."""
    async with connection_scope(engine) as connection:
        yield connection
        await connection.commit()


@asynccontextmanager
async def open_session(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """``async with maker()``: a session, closed (uncommitted work rolled back) on leaving."""
    session = maker()
    try:
        yield session
    finally:
        await session.close()


async def session_scope(
    maker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One transaction: commit on success, roll back on any error (for use outside requests)."""
    async with open_session(maker) as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


async def request_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's session and transaction: commit on success, roll back on any error.

    FastAPI drives this generator itself, so an exception in the route is thrown in here and
    rolls the transaction back at once. Used with ``scope="function"`` (see :data:`SessionDep`)
    so the commit happens before the response is sent: a client never sees a 2xx for a change
    that was not stored.
    """
    maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with open_session(maker) as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


SessionDep = Annotated[AsyncSession, Depends(request_session, scope="function")]


def alembic_config(*, script_location: Path, database_url: str, version_table: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["version_table"] = version_table
    return config


def upgrade_to_head(*, script_location: Path, database_url: str, version_table: str) -> None:
    """Apply a service's migrations (synchronous; call before the server starts)."""
    if is_sqlite(database_url):
        _ensure_sqlite_folder(database_url)
    command.upgrade(
        alembic_config(
            script_location=script_location,
            database_url=database_url,
            version_table=version_table,
        ),
        "head",
    )
