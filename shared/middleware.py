"""Pure ASGI middleware common to all services.

One layer does four things per request, cheaply (no BaseHTTPMiddleware, whose task hop costs
more than the rest of a small request): it accepts or generates the request id, refuses bodies
over the size limit with 413, writes one access log line, and turns any unhandled exception into
a 500 problem+json (a 503 when the database is away) without letting the exception text reach a
log.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import (
    DatabaseUnavailable,
    PayloadTooLarge,
    TaskrouteError,
    is_database_unavailable,
    send_error,
)
from shared.request_context import REQUEST_ID_HEADER, accept_or_generate, set_request_id

logger = logging.getLogger("taskroute.access")

# 1 MiB: a job description with its confidential fields fits many times over; anything larger
# is a mistake or an attack on memory.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


class _BodyTooLarge(Exception):
    pass


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        incoming = None
        declared_length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
            elif name == b"content-length":
                declared_length = value
        request_id = accept_or_generate(incoming)
        set_request_id(request_id)
        started = time.perf_counter()
        status_holder: dict[str, Any] = {"status": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.lower().encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if declared_length is not None and _too_large(declared_length, self.max_body_bytes):
                raise _BodyTooLarge
            await self.app(scope, self._limited(receive), send_with_id)
        except _BodyTooLarge:
            if not status_holder["started"]:
                await send_error(
                    send_with_id,
                    PayloadTooLarge(f"Request bodies are limited to {self.max_body_bytes} bytes."),
                )
        except Exception as exc:  # noqa: BLE001 - the last line of defence must catch everything
            if is_database_unavailable(exc):
                # Raised before any route's handlers could map it (the gateway's edge asks the
                # database for the caller's key and the Idempotency-Key claim): still transient.
                answer_began = status_holder["started"]
                logger.warning(
                    "database unavailable after the answer began"
                    if answer_began
                    else "database unavailable; answered 503",
                    extra={"error_type": type(exc).__name__},
                )
                if not answer_began:
                    await send_error(send_with_id, DatabaseUnavailable())
                return
            logger.error(
                "unhandled error",
                extra={"error_type": type(exc).__name__, "where": _where(exc)},
            )
            if not status_holder["started"]:
                await send_error(
                    send_with_id,
                    TaskrouteError(
                        "An unexpected error occurred; quote the request id when reporting it."
                    ),
                )
        finally:
            logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status_holder["status"],
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )

    def _limited(self, receive: Receive) -> Receive:
        limit = self.max_body_bytes
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge
            return message

        return limited_receive


def _too_large(declared: bytes, limit: int) -> bool:
    try:
        return int(declared) > limit
    except ValueError:
        return True


def _where(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "unknown"
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
