"""Prebuilt Core statements run on the driver, past SQLAlchemy's per-execution work.

A prebuilt Core statement run through ``AsyncConnection.execute`` costs about 0.1 ms of CPU
on the 2-core machine (execution context, parameter and result set-up, cache lookup), the same
statement on :mod:`sqlite3` about 7 µs (``tests/benchmarks/bench_roundtrip.py``); on
PostgreSQL SQLAlchemy adds ~45 µs to asyncpg's own ~70 µs per statement. The hot paths (a
submit makes about fifteen statements across the three services, a seal six) spent a fifth of
their CPU there. :func:`execute` runs such a statement on the driver directly (the inline
SQLite driver of :mod:`shared.sqlite_inline`, or asyncpg through SQLAlchemy's own adapter, its
prepared statements and its lock) and keeps what matters from SQLAlchemy:

* the SQL exactly as SQLAlchemy compiles it for the dialect (compiled once per statement,
  dialect and set of parameter names);
* the column types' bind and result processors, so values are stored and read back exactly
  as through SQLAlchemy (dates, JSON, booleans), whichever path wrote them;
* SQLAlchemy's transaction: it is begun first if it is not yet (on PostgreSQL the adapter's
  BEGIN goes out before the statement, as it would for SQLAlchemy's), so the connection's
  commit or rollback covers these statements like any other;
* its errors: a failing statement raises the exception SQLAlchemy would (its parameters
  hidden), and a lost PostgreSQL connection is invalidated so the pool drops it;
* the wait for a locked SQLite database on the event loop, as for every statement;
* what listens to SQLAlchemy: with statement events listened to (tracing, a test counting
  statements) or echo on, every statement goes through SQLAlchemy, so they see them all.

What it cannot do the same way runs through SQLAlchemy unchanged: a statement whose Python-side
column defaults would have to be computed (insert or update prefetch), one with expanding
``IN`` parameters, a required parameter left out or a callable one, a ``text()`` or ORM
statement, result keys a named tuple cannot hold as they are, an invalidated connection, and
every driver but these two; :func:`execute_many` on PostgreSQL (SQLAlchemy already sends the
rows as one batch). The results offer the subset of SQLAlchemy's ``Result`` the repositories
use: ``first``, ``all``, ``scalar``, ``scalars``, ``scalar_one``, ``scalar_one_or_none``,
``mappings`` (``first``, ``one_or_none``, ``all``) and ``rowcount``.
"""

from __future__ import annotations

import keyword
import re
import sqlite3
from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Protocol

from sqlalchemy import exc
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql import Delete, Executable, Insert, Select, Update
from sqlalchemy.util import await_, greenlet_spawn, is_exit_exception

from shared.sqlite_inline import InlineConnection


class MappingResult(Protocol):
    def first(self) -> Mapping[Any, Any] | None: ...

    def one_or_none(self) -> Mapping[Any, Any] | None: ...

    def all(self) -> Sequence[Mapping[Any, Any]]: ...


class Result(Protocol):
    """What the callers of :func:`execute` may use: SQLAlchemy's ``CursorResult`` and
    :class:`Rows` both have it."""

    @property
    def rowcount(self) -> int: ...

    def first(self) -> Any: ...

    def all(self) -> Sequence[Any]: ...

    def scalar(self) -> Any: ...

    def scalars(self) -> Iterable[Any]: ...

    def scalar_one(self) -> Any: ...

    def scalar_one_or_none(self) -> Any: ...

    def mappings(self) -> MappingResult: ...


class _Mappings:
    __slots__ = ("_rows",)

    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def first(self) -> dict[str, Any] | None:
        return self._rows[0]._asdict() if self._rows else None

    def one_or_none(self) -> dict[str, Any] | None:
        if len(self._rows) > 1:
            raise ValueError("more than one row where one or none was expected")
        return self.first()

    def all(self) -> list[dict[str, Any]]:
        return [row._asdict() for row in self._rows]


class Rows:
    """A fetched result: named-tuple rows (attribute and index access) and the rowcount."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def all(self) -> list[Any]:
        return self._rows

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalars(self) -> list[Any]:
        return [row[0] for row in self._rows]

    def scalar_one(self) -> Any:
        if len(self._rows) != 1:
            raise ValueError(f"{len(self._rows)} rows where exactly one was expected")
        return self._rows[0][0]

    def scalar_one_or_none(self) -> Any:
        if len(self._rows) > 1:
            raise ValueError("more than one row where one or none was expected")
        return self.scalar()

    def mappings(self) -> _Mappings:
        return _Mappings(self._rows)


Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class _Plan:
    # Both kept alive: the cache is keyed by their ids. The dialect is part of the plan (its
    # JSON serialiser, its paramstyle), so engines with different settings get their own.
    statement: Executable
    dialect: Dialect
    sql: str
    names: tuple[str, ...]  # bind parameter names, in the SQL's positional order
    defaults: Mapping[str, Any]  # values bound in the statement itself
    bind_processors: tuple[Processor, ...]
    row_type: Any  # a namedtuple class, or None for a statement without result columns
    result_types: tuple[Any, ...]  # the result columns' types, as the dialect implements them
    # Result processors by the column types the driver described (asyncpg: type OIDs; sqlite3
    # describes none): SQLAlchemy picks some processors by them (asyncpg's numeric types).
    processors: dict[tuple[Any, ...] | None, tuple[Processor, ...]]

    def values(self, params: Mapping[str, Any]) -> list[Any]:
        values = []
        for name, processor in zip(self.names, self.bind_processors, strict=True):
            value = params[name] if name in params else self.defaults[name]
            # None too: a JSON column stores None as JSON null, as SQLAlchemy does.
            values.append(value if processor is None else processor(value))
        return values

    def rows(self, fetched: list[Any], described: tuple[Any, ...] | None) -> list[Any]:
        if self.row_type is None:
            return fetched
        processors = self.processors.get(described)
        if processors is None:
            processors = tuple(
                result_type.result_processor(self.dialect, column_type)
                for result_type, column_type in zip(
                    self.result_types, described or repeat(None), strict=False
                )
            )
            self.processors[described] = processors
        make = self.row_type._make
        if not any(processors):
            return [make(row) for row in fetched]
        return [
            make(
                value if processor is None else processor(value)
                for processor, value in zip(processors, row, strict=True)
            )
            for row in fetched
        ]


MAX_PLANS = 4096
# (id of the statement, parameter names, id of the dialect) -> its plan, or None if it must go
# through SQLAlchemy.
_plans: dict[tuple[int, frozenset[str], int], _Plan | None] = {}


def _plan(statement: Executable, keys: frozenset[str], dialect: Dialect) -> _Plan | None:
    cache_key = (id(statement), keys, id(dialect))
    try:
        return _plans[cache_key]
    except KeyError:
        pass
    plan = _compile(statement, keys, dialect)
    if len(_plans) >= MAX_PLANS:
        # Only prebuilt statements belong here; a caller building one per call would fill
        # the cache (and compile every time): bounded either way.
        _plans.clear()
    _plans[cache_key] = plan
    return plan


def _row_class(names: Sequence[str]) -> Any | None:
    """A named-tuple class whose fields are SQLAlchemy's row keys, or None where a key cannot
    be a field as it is (a duplicate, a keyword, a leading underscore): SQLAlchemy runs those."""
    if len(set(names)) != len(names) or not all(
        name.isidentifier() and not name.startswith("_") and not keyword.iskeyword(name)
        for name in names
    ):
        return None
    return namedtuple("Row", names)  # noqa: PYI024


def _compile(statement: Executable, keys: frozenset[str], dialect: Dialect) -> _Plan | None:
    # Only plain Core statements: a text() has no typed columns, and on a session an ORM
    # statement returns entities and runs the mapper's defaults.
    if not isinstance(statement, Select | Insert | Update | Delete) or statement._propagate_attrs:  # noqa: SLF001
        return None
    compiled = statement.compile(dialect=dialect, column_keys=sorted(keys))
    sql = str(compiled)
    if (
        compiled.positiontup is None
        or getattr(compiled, "insert_prefetch", None)
        or getattr(compiled, "update_prefetch", None)
        or "POSTCOMPILE" in sql
    ):
        return None
    names = tuple(compiled.positiontup)
    binds = compiled.binds
    unbound = {name: binds[name] for name in names if name not in keys}
    # A required parameter left out is SQLAlchemy's StatementError to raise, and a callable
    # value is computed per execution: both go through it.
    if any(bind.required or bind.callable is not None for bind in unbound.values()):
        return None
    bind_processors = tuple(
        binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    )
    # The result columns as SQLAlchemy's result keys them (labels, anonymous names included).
    result_columns = compiled._result_columns  # noqa: SLF001
    row_type: Any = None
    if result_columns:
        row_type = _row_class([column.keyname for column in result_columns])
        if row_type is None:
            return None
    return _Plan(
        statement=statement,
        dialect=dialect,
        sql=sql,
        names=names,
        defaults={name: bind.effective_value for name, bind in unbound.items()},
        bind_processors=bind_processors,
        row_type=row_type,
        result_types=tuple(column.type.dialect_impl(dialect) for column in result_columns),
        processors={},
    )


class _Driver(Protocol):
    """What runs a plan's SQL: the inline SQLite connection, or asyncpg under SQLAlchemy's
    adapter."""

    @property
    def errors(self) -> type[Exception]:
        """What a failing statement raises, before SQLAlchemy wraps it."""

    async def run(
        self, sql: str, parameters: Sequence[Any]
    ) -> tuple[list[Any], int, tuple[Any, ...] | None]:
        """The rows, the rowcount, and the result columns' types as the driver describes
        them (None where it describes none)."""


class _SQLiteDriver:
    __slots__ = ("_connection",)
    errors = sqlite3.Error

    def __init__(self, connection: InlineConnection) -> None:
        self._connection = connection

    async def run(
        self, sql: str, parameters: Sequence[Any]
    ) -> tuple[list[Any], int, tuple[Any, ...] | None]:
        rows, rowcount = await self._connection.run(sql, parameters)
        return rows, rowcount, None


_STATUS_ROWCOUNT = re.compile(r"(?:SELECT|UPDATE|DELETE|INSERT \d+) (\d+)")


class _AsyncpgDriver:
    """A statement on asyncpg as SQLAlchemy's asyncpg adapter runs one (its prepared
    statements, its transaction started first, its lock, its error translation), without
    SQLAlchemy's execution context and result around it (~45 µs of CPU per statement on the
    2-core machine, measured against the adapter's own call). The adapter's members used here
    are private: ``tests/shared/test_statements.py`` runs every case on PostgreSQL too, so a
    SQLAlchemy upgrade that changes them fails there, not in production."""

    __slots__ = ("_adapter", "_dialect", "errors")

    def __init__(self, adapter: Any, dialect: Dialect) -> None:
        self._adapter = adapter
        self._dialect = dialect
        self.errors = dialect.loaded_dbapi.Error

    async def run(
        self, sql: str, parameters: Sequence[Any]
    ) -> tuple[list[Any], int, tuple[Any, ...] | None]:
        adapter = self._adapter
        async with adapter._execute_mutex:  # noqa: SLF001
            if adapter._transaction is None:  # noqa: SLF001
                await adapter._start_transaction()  # noqa: SLF001 - BEGIN, as the adapter does
            try:
                prepared, attributes = await adapter._prepare(  # noqa: SLF001
                    sql,
                    self._dialect._invalidate_schema_cache_asof,  # type: ignore[attr-defined]  # noqa: SLF001
                )
                rows = await prepared.fetch(*parameters)
                status = prepared.get_statusmsg()
            except Exception as error:  # noqa: BLE001 - translated (and raised) by the adapter
                adapter._handle_exception(error)  # noqa: SLF001
        counted = _STATUS_ROWCOUNT.match(status or "")
        # The OIDs SQLAlchemy's adapter puts in the cursor's description.
        described = tuple(attribute.type.oid for attribute in attributes or ())
        return rows, int(counted.group(1)) if counted else -1, described


def _driver(connection: Connection) -> _Driver | None:
    # An invalidated connection is SQLAlchemy's to reconnect or to refuse.
    if connection.invalidated:
        return None
    # Whoever listens to SQLAlchemy's statement events (instrumentation, a test counting
    # statements) or asked for its echo sees every statement: they all go through it then.
    if connection._has_events or connection.engine._has_events or connection._echo:  # noqa: SLF001
        return None
    dialect = connection.dialect
    if dialect.name == "sqlite":
        driver = connection.connection.driver_connection
        return _SQLiteDriver(driver) if isinstance(driver, InlineConnection) else None
    if dialect.driver == "asyncpg":
        return _AsyncpgDriver(connection.connection.dbapi_connection, dialect)
    return None


def _as_sqlalchemy_error(
    error: Exception, driver: _Driver, plan: _Plan, connection: Connection
) -> exc.DBAPIError:
    """The exception SQLAlchemy would have raised (``IntegrityError``, ``OperationalError``,
    ...), so callers and error handlers see one kind whichever path ran the statement. Its
    parameters are hidden: they may be sealed data (the statement's parameters are left out
    altogether; SQLAlchemy would only print them masked). The side effects are SQLAlchemy's
    too: a lost connection is invalidated, with the pool's older connections, so they are not
    handed out again; a prepared statement the schema outdated drops the dialect's prepared
    statement cache, so the next attempt prepares afresh (asyncpg raises
    ``InvalidCachedStatementError`` once after ``ALTER TABLE``). A cancelled statement is not
    an error of the driver's: :func:`_invalidate_if_given_up` handles it."""
    dialect = connection.dialect
    disconnected = False
    if isinstance(driver, _AsyncpgDriver):
        dbapi = dialect.loaded_dbapi
        if isinstance(error, dbapi.InvalidCachedStatementError | dbapi.InternalServerError):
            dialect._invalidate_schema_cache()  # type: ignore[attr-defined]  # noqa: SLF001
        disconnected = dialect.is_disconnect(
            error,  # type: ignore[arg-type]  # the DBAPI's error: Exception to the stubs
            connection.connection.dbapi_connection,
            None,
        )
    wrapped = exc.DBAPIError.instance(
        plan.sql,
        None,
        error,
        driver.errors,
        hide_parameters=True,
        dialect=dialect,
        connection_invalidated=disconnected,
    )
    if disconnected:
        connection.engine.pool._invalidate(connection.connection, wrapped)  # noqa: SLF001
        connection.invalidate(wrapped)
    return wrapped  # type: ignore[return-value]


def _invalidate_if_given_up(connection: Connection, error: BaseException) -> None:
    """A statement given up mid-way (cancelled, timed out, interrupted) may have left the
    driver's connection mid-protocol: invalidated, not pooled again, as SQLAlchemy does."""
    if is_exit_exception(error) and not connection.closed and not connection.invalidated:
        connection.invalidate(error)


def _inline(
    connection: Connection, statement: Executable, keys: frozenset[str]
) -> tuple[_Driver, _Plan] | None:
    """The driver and plan to run ``statement`` with, inside SQLAlchemy's transaction; None
    when it must go through SQLAlchemy."""
    driver = _driver(connection)
    if driver is None:
        return None
    plan = _plan(statement, keys, connection.dialect)
    if plan is None:
        return None
    # Without a transaction of SQLAlchemy's, its commit would not reach the driver, whose own
    # transaction these statements open. Beginning one costs no I/O (pysqlite's BEGIN is
    # implicit, at the first write; the asyncpg adapter's is sent with the first statement).
    if not connection.in_transaction():
        connection.begin()
    return driver, plan


async def execute(
    db: AsyncSession | AsyncConnection,
    statement: Executable,
    params: Mapping[str, Any] | None = None,
) -> Result:
    """Run a prebuilt Core ``statement`` in ``db``'s transaction (see the module docstring).
    Prebuilt: built once (at import), since its compiled form is kept by identity."""
    params = params or {}
    connection = db if isinstance(db, AsyncConnection) else await db.connection()
    sync = connection.sync_connection
    inline = None if sync is None else _inline(sync, statement, frozenset(params))
    if inline is None or sync is None:
        return await connection.execute(statement, dict(params))
    driver, plan = inline
    try:
        fetched, rowcount, described = await driver.run(plan.sql, plan.values(params))
    except driver.errors as error:
        raise await greenlet_spawn(_as_sqlalchemy_error, error, driver, plan, sync) from error
    except BaseException as error:
        _invalidate_if_given_up(sync, error)
        raise
    return Rows(plan.rows(fetched, described), rowcount)


async def execute_many(
    db: AsyncSession | AsyncConnection,
    statement: Executable,
    rows: Sequence[Mapping[str, Any]],
) -> None:
    """Run a prebuilt Core ``statement`` without results once per row of ``rows`` (each with
    the same parameter names), as SQLAlchemy's ``execute(statement, [rows])`` does."""
    if not rows:
        return
    connection = db if isinstance(db, AsyncConnection) else await db.connection()
    sync = connection.sync_connection
    inline = None if sync is None else _inline(sync, statement, frozenset(rows[0]))
    # Several rows in one call: the inline SQLite driver's executemany; asyncpg's goes
    # through SQLAlchemy, which already sends them as one batch.
    if inline is None or inline[1].row_type is not None or sync is None:
        await connection.execute(statement, [dict(row) for row in rows])
        return
    driver, plan = inline
    inline_connection = sync.connection.driver_connection
    if not isinstance(inline_connection, InlineConnection):
        await connection.execute(statement, [dict(row) for row in rows])
        return
    try:
        await inline_connection.run_many(plan.sql, [plan.values(row) for row in rows])
    except driver.errors as error:
        raise await greenlet_spawn(_as_sqlalchemy_error, error, driver, plan, sync) from error
    except BaseException as error:
        _invalidate_if_given_up(sync, error)
        raise


def execute_sync(
    connection: Connection, statement: Executable, params: Mapping[str, Any] | None = None
) -> Result:
    """:func:`execute` for synchronous code run through ``AsyncConnection.run_sync``."""
    params = params or {}
    inline = _inline(connection, statement, frozenset(params))
    if inline is None:
        return connection.execute(statement, dict(params))
    driver, plan = inline
    try:
        fetched, rowcount, described = await_(driver.run(plan.sql, plan.values(params)))
    except driver.errors as error:
        raise _as_sqlalchemy_error(error, driver, plan, connection) from error
    except BaseException as error:
        _invalidate_if_given_up(connection, error)
        raise
    return Rows(plan.rows(fetched, described), rowcount)
