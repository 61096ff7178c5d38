"""SQLite for the async services without a thread hop per call.

SQLAlchemy's ``sqlite+aiosqlite`` dialect drives aiosqlite, which runs every cursor call
(open, execute, fetch, close) on a helper thread and wakes the event loop when it is done:
about four thread round trips per statement, measured at ~0.7 ms of CPU per statement on the
2-core machine (``tests/benchmarks/bench_roundtrip.py``), which was most of a request's cost.
A local SQLite statement itself takes microseconds, so this module gives the same dialect a
connection object with aiosqlite's surface whose coroutines run :mod:`sqlite3` directly on the
event loop's thread and complete without suspending.

One thing must not block the loop: waiting for another connection's write lock. With
aiosqlite a writer waited in SQLite's busy handler on its own thread; here the busy handler is
off (``timeout=0``) and a statement that finds the database locked sleeps on the event loop
and tries again, so the coroutine holding the lock (perhaps in this very process, awaiting an
HTTP call mid-transaction) can finish. ``SQLITE_BUSY_SNAPSHOT`` (a WAL read snapshot too old
to write from) is raised at once, as SQLite's own busy handler would: retrying cannot help.

How long a statement waits is ``BUSY_TIMEOUT_SECONDS``; ``PRAGMA busy_timeout = <ms>`` run
inside a transaction sets it for the rest of that transaction only (like PostgreSQL's
``SET LOCAL lock_timeout``), so a caller can bound one wait without touching pooled
connections' defaults.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

_T = TypeVar("_T")

_SQLITE_BUSY = 5
# How long a statement keeps retrying a locked database: what ``busy_timeout`` was before.
BUSY_TIMEOUT_SECONDS = 30.0
_FIRST_BACKOFF = 0.0005
_MAX_BACKOFF = 0.02
_BUSY_TIMEOUT_PRAGMA = re.compile(r"\s*PRAGMA\s+busy_timeout\s*=\s*(\d+)\s*;?\s*$", re.IGNORECASE)


def _is_retryable_busy(error: sqlite3.OperationalError) -> bool:
    # The primary code is BUSY for BUSY_RECOVERY/BUSY_TIMEOUT too; BUSY_SNAPSHOT (517) is not
    # retried, as SQLite's busy handler does not retry it either.
    code = getattr(error, "sqlite_errorcode", None)
    return code == _SQLITE_BUSY


async def _retry_while_busy(call: Callable[[], _T], timeout: float) -> _T:
    deadline: float | None = None
    backoff = _FIRST_BACKOFF
    while True:
        try:
            return call()
        except sqlite3.OperationalError as error:
            if not _is_retryable_busy(error):
                raise
            now = time.monotonic()
            if deadline is None:
                deadline = now + timeout
            elif now >= deadline:
                raise
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)


class InlineCursor:
    """The subset of ``aiosqlite.Cursor`` that SQLAlchemy's adapter calls."""

    __slots__ = ("_connection", "_cursor")

    def __init__(self, connection: InlineConnection, cursor: sqlite3.Cursor) -> None:
        self._connection = connection
        self._cursor = cursor

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Any = None) -> InlineCursor:
        pragma = _BUSY_TIMEOUT_PRAGMA.match(sql)
        if pragma is not None:
            self._connection.busy_timeout = int(pragma.group(1)) / 1000
            return self
        cursor = self._cursor
        timeout = self._connection.busy_timeout
        if parameters is None:
            await _retry_while_busy(lambda: cursor.execute(sql), timeout)
        else:
            await _retry_while_busy(lambda: cursor.execute(sql, parameters), timeout)
        return self

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> InlineCursor:
        rows = list(seq_of_parameters)  # a retry must see every row again
        cursor = self._cursor
        timeout = self._connection.busy_timeout
        await _retry_while_busy(lambda: cursor.executemany(sql, rows), timeout)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        if size is None:
            return self._cursor.fetchmany()
        return self._cursor.fetchmany(size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    async def setinputsizes(self, *_sizes: Any) -> None:
        return None


class InlineConnection:
    """The subset of ``aiosqlite.Connection`` that SQLAlchemy's adapter calls."""

    def __init__(self, connection: sqlite3.Connection, timeout: float) -> None:
        self._conn = connection
        self._default_timeout = timeout
        self.busy_timeout = timeout

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @property
    def _connection(self) -> sqlite3.Connection:
        # The adapter checks this attribute before commit and rollback.
        return self._conn

    def cursor(self) -> InlineCursor:
        return InlineCursor(self, self._conn.cursor())

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        cursor = self.cursor()
        return await cursor.execute(sql, parameters)

    async def run(self, sql: str, parameters: Sequence[Any]) -> tuple[list[Any], int]:
        """One statement straight on sqlite3, waiting out a locked database as ``execute``
        does: its rows and rowcount (for :mod:`shared.statements`, which skips SQLAlchemy's
        cursor adapter)."""

        def run_once() -> tuple[list[Any], int]:
            cursor = self._conn.execute(sql, parameters)
            try:
                return cursor.fetchall(), cursor.rowcount
            finally:
                cursor.close()

        return await _retry_while_busy(run_once, self.busy_timeout)

    async def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """``run`` for a statement without results, once per row of parameters; the rowcount."""

        def run_once() -> int:
            cursor = self._conn.executemany(sql, rows)
            try:
                return cursor.rowcount
            finally:
                cursor.close()

        return await _retry_while_busy(run_once, self.busy_timeout)

    async def commit(self) -> None:
        try:
            await _retry_while_busy(self._conn.commit, self.busy_timeout)
        finally:
            self.busy_timeout = self._default_timeout

    async def rollback(self) -> None:
        self.busy_timeout = self._default_timeout
        self._conn.rollback()

    async def close(self) -> None:
        self._conn.close()

    def stop(self) -> None:
        self._conn.close()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)


def inline_creator(path: str, *, timeout: float = BUSY_TIMEOUT_SECONDS) -> Callable[[], Any]:
    """An ``async_creator`` for ``create_async_engine("sqlite+aiosqlite://...")``."""

    async def connect() -> InlineConnection:
        # check_same_thread=False: the pool may close a connection from a finaliser thread;
        # every statement still runs on the event loop's thread.
        connection = sqlite3.connect(path, timeout=0, check_same_thread=False)
        return InlineConnection(connection, timeout)

    return connect
