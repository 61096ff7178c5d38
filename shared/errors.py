"""One error base for all services, rendered as RFC 9457 problem+json.

Hierarchy (catch the narrowest you can handle)::

    TaskrouteError                 status, title, problem type; detail is safe to show a caller
    ├── BadRequest                 400
    ├── Unauthorized               401 (adds WWW-Authenticate)
    ├── Forbidden                  403
    ├── NotFound                   404 (unknown and foreign ids look the same)
    ├── Conflict                   409
    ├── Gone                       410
    ├── UnprocessableContent       422
    └── ServiceUnavailable         503 (a dependency is down or the vault is sealed)
        └── DatabaseUnavailable    503 (the service's own database; see is_database_unavailable)

Services subclass these in their own ``domain/errors.py``. The ``detail`` of an error must never
carry a secret or confidential value: it is returned to callers and written to logs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from shared.request_context import current_request_id

logger = logging.getLogger("taskroute.errors")

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://taskroute.dev/problems/"


class TaskrouteError(Exception):
    status: int = 500
    title: str = "Internal error"
    problem: str = "internal"
    # Seconds worth waiting before a retry, sent as ``Retry-After`` (None: no header).
    retry_after: int | None = None

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


class BadRequest(TaskrouteError):
    status, title, problem = 400, "Bad request", "bad-request"


class Unauthorized(TaskrouteError):
    status, title, problem = 401, "Unauthorized", "unauthorized"
    scheme = "Bearer"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": f'{self.scheme} realm="taskroute"'}


class Forbidden(TaskrouteError):
    status, title, problem = 403, "Forbidden", "forbidden"


class NotFound(TaskrouteError):
    status, title, problem = 404, "Not found", "not-found"


class Conflict(TaskrouteError):
    status, title, problem = 409, "Conflict", "conflict"


class Gone(TaskrouteError):
    status, title, problem = 410, "Gone", "gone"


class PayloadTooLarge(TaskrouteError):
    status, title, problem = 413, "Payload too large", "payload-too-large"


class UnprocessableContent(TaskrouteError):
    status, title, problem = 422, "Unprocessable content", "unprocessable"


class ServiceUnavailable(TaskrouteError):
    status, title, problem = 503, "Service unavailable", "unavailable"
    # A 503 says "not now" (RFC 9110, 15.6.4): every one tells the client when to come back, so
    # that clients and proxies pace their retries instead of guessing.
    retry_after = 2


def problem_response(
    *,
    status: int,
    title: str,
    detail: str,
    problem: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + problem,
        "title": title,
        "status": status,
        "detail": detail,
        "request_id": current_request_id(),
    }
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_CONTENT_TYPE)


def error_response(error: TaskrouteError) -> JSONResponse:
    """``error`` as its problem+json response."""
    return problem_response(
        status=error.status,
        title=error.title,
        detail=error.detail,
        problem=error.problem,
        headers=error.headers() or None,
        extra=error.extra or None,
    )


async def send_error(
    send: Send, error: TaskrouteError, extra_headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """``error`` as problem+json straight onto an ASGI ``send``: for middleware, which runs
    outside FastAPI's exception handlers."""
    response = error_response(error)
    headers = [*response.raw_headers, *extra_headers]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


_STARLETTE_TITLES = {
    400: ("Bad request", "bad-request"),
    401: ("Unauthorized", "unauthorized"),
    403: ("Forbidden", "forbidden"),
    404: ("Not found", "not-found"),
    405: ("Method not allowed", "method-not-allowed"),
    413: ("Payload too large", "payload-too-large"),
}


async def _taskroute_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TaskrouteError)
    return error_response(exc)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    title, problem = _STARLETTE_TITLES.get(exc.status_code, ("Error", "error"))
    detail = exc.detail if isinstance(exc.detail, str) else title
    return problem_response(
        status=exc.status_code,
        title=title,
        detail=detail,
        problem=problem,
        headers=dict(exc.headers) if exc.headers else None,
    )


def _field_path(location: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in location if part != "body") or "body"


def _field_error(error: dict[str, Any]) -> dict[str, str]:
    location = error.get("loc", ())
    if error.get("type") == "json_invalid":
        # FastAPI puts the character offset where the field would be ("body", 17).
        at = location[1] if len(location) > 1 and isinstance(location[1], int) else None
        where = "" if at is None else f" (at character {at})"
        return {"field": "body", "message": f"the body is not valid JSON{where}"}
    return {"field": _field_path(location), "message": error.get("msg", "invalid")}


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Only the location and the message go back: pydantic's "input" echo could carry a
    # confidential value the client sent in the wrong place.
    errors = [_field_error(err) for err in exc.errors()]
    first = errors[0] if errors else {"field": "body", "message": "invalid"}
    return problem_response(
        status=422,
        title="Validation failed",
        detail=f"{first['field']}: {first['message']}",
        problem="validation",
        extra={"errors": errors},
    )


class DatabaseUnavailable(ServiceUnavailable):
    """The service's own database could not be used (down, restarting, a dropped connection,
    SQLite's write lock not had in time, a deadlock it broke): transient, so 503 rather than
    500."""

    retry_after = 1

    def __init__(self) -> None:
        super().__init__("The service's database is unavailable; retry the request shortly.")


# SQLite's primary result codes that say the database could not be used rather than that the
# statement was wrong (https://sqlite.org/rescode.html): BUSY, LOCKED, NOMEM, READONLY, IOERR,
# FULL, CANTOPEN, PROTOCOL. "no such table" or a syntax error is SQLITE_ERROR (1): a bug.
_SQLITE_UNAVAILABLE = frozenset({5, 6, 7, 8, 10, 13, 14, 15})


# PostgreSQL's SQLSTATEs after which the same request may well succeed (asyncpg's errors reach
# SQLAlchemy as a plain DBAPIError, so the class of the error says nothing): connection
# exceptions (08), transaction rollback for another's sake (40: deadlock, serialization),
# insufficient resources (53: too many connections, disk full)...
_POSTGRES_UNAVAILABLE_CLASSES = frozenset({"08", "40", "53"})
# ... and a lock not had in time (55P03), a statement cancelled or timed out (57014), the server
# shutting down, crashed or starting up (57P01-57P03).
_POSTGRES_UNAVAILABLE = frozenset({"55P03", "57014", "57P01", "57P02", "57P03"})


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached or used, rather than that a
    statement was wrong: a refused or reset connection, a connection the driver found dead
    (SQLAlchemy marks it ``connection_invalidated``), the driver's operational errors
    (SQLite's "database is locked") or PostgreSQL's SQLSTATEs that say so (starting up or
    shutting down, too many connections, a deadlock it broke by rolling this transaction back),
    after which the same request may well succeed."""
    if isinstance(exc, ConnectionError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    sqlite_code = getattr(exc.orig, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int):
        return sqlite_code & 0xFF in _SQLITE_UNAVAILABLE
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if isinstance(sqlstate, str) and (
        sqlstate[:2] in _POSTGRES_UNAVAILABLE_CLASSES or sqlstate in _POSTGRES_UNAVAILABLE
    ):
        return True
    return isinstance(exc, OperationalError | InterfaceError)


async def database_error(request: Request, exc: Exception) -> JSONResponse:
    """The handler of database errors: 503 when the database is unavailable, else re-raised."""
    if not is_database_unavailable(exc):
        raise exc  # a wrong statement is a bug: the request-context middleware answers 500
    # The type only: a DBAPIError's text carries the statement and its parameters.
    logger.warning(
        "database unavailable; answered 503",
        extra={"error_type": type(exc).__name__},
    )
    return await _taskroute_error(request, DatabaseUnavailable())


def install_error_handlers(app: FastAPI) -> None:
    """Render every error as problem+json. Unexpected exceptions are caught earlier, by
    :class:`shared.middleware.RequestContextMiddleware`, so their text never reaches a log."""
    app.add_exception_handler(TaskrouteError, _taskroute_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DBAPIError, database_error)
    app.add_exception_handler(ConnectionError, database_error)
