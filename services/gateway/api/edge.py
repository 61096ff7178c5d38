"""The gateway's edge: rate limits and idempotency as pure ASGI middleware around every route.

Design
------
Both layers sit inside the request-context middleware (so request ids, the body limit and the
last-resort 500 apply to them) and outside the routes, so every route, including ones added
later, gets them without a line in its body::

    metrics → request context (id, 413, 500) → rate limits → idempotency → routes

* **Rate limits** (``/v1/...`` only): a request with a live API key counts against that key's
  limit (``rate_limit``); any other request counts against its source address's budget of failed
  authentications (``failed_auth_rate_limit``). Every answer carries ``RateLimit-Limit``,
  ``RateLimit-Remaining`` and ``RateLimit-Reset`` (seconds); a refused one is 429 problem+json
  with ``Retry-After``. The source address is the TCP peer: behind a proxy, run uvicorn with
  ``--forwarded-allow-ips`` so the peer is the client (keys are what is limited normally).
* **Idempotency** (``POST`` with ``Idempotency-Key``): see
  :mod:`services.gateway.domain.idempotency` for the rules. The claim is committed in its own
  transaction before the route runs; the route's answer is buffered, stored (unless 5xx) and
  only then sent, so an immediate retry already finds it. The claim's resource id is handed to
  the route through :func:`reserved_resource_id` (``POST /v1/jobs`` uses it as the job id).

Both identify the caller with :func:`services.gateway.api.deps.request_principal`, which looks
the key up once per request (cached in the ASGI scope); the route's own dependency reads the
same answer and decides roles exactly as without this layer.
"""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from fastapi import FastAPI
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.api.deps import request_principal
from services.gateway.clients.rate_limiter import Decision, RateLimiter, parse_limit
from services.gateway.db.repository import IdempotencyRepository
from services.gateway.domain import idempotency as rules
from services.gateway.domain.errors import IdempotencyInFlight, RateLimited, RepeatedHeader
from services.gateway.domain.principal import Principal
from services.gateway.settings import GatewaySettings
from shared.db import open_session, transaction_scope, utcnow
from shared.errors import TaskrouteError, send_error

logger = logging.getLogger("taskroute.gateway.edge")

# A claim lost to races more often than this (deleted and re-inserted under us each time) is
# reported as in flight: the client retries and finds the settled record.
CLAIM_ATTEMPTS = 3
# How often expired idempotency records are deleted; they are also replaced on demand, so this
# only bounds the table's size.
PURGE_INTERVAL_SECONDS = 600.0

_reserved_resource_id: ContextVar[str | None] = ContextVar(
    "taskroute_reserved_resource_id", default=None
)


def reserved_resource_id() -> str | None:
    """The id an idempotent request must give what it creates (None without a key)."""
    return _reserved_resource_id.get()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return cast(bytes, value).decode("latin-1")
    return None


# --- rate limits -----------------------------------------------------------------------------


def _rate_headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    return [
        (b"ratelimit-limit", str(decision.limit).encode()),
        (b"ratelimit-remaining", str(decision.remaining).encode()),
        (b"ratelimit-reset", str(decision.reset_after).encode()),
    ]


# Headers that name one credential or one operation: sent twice, which one counts depends on
# who reads them (a proxy may take the last, this API the first), so such a request is refused.
_ONCE_ONLY = {b"authorization": "Authorization", b"idempotency-key": "Idempotency-Key"}


def _repeated_header(scope: Scope) -> str | None:
    seen: set[bytes] = set()
    for name, _ in scope["headers"]:
        if name in _ONCE_ONLY:
            if name in seen:
                return _ONCE_ONLY[name]
            seen.add(name)
    return None


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, *, settings: GatewaySettings) -> None:
        self.app = app
        self.per_key = parse_limit(settings.rate_limit)
        self.failed_auth = parse_limit(settings.failed_auth_rate_limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        repeated = _repeated_header(scope)
        if repeated is not None:
            await send_error(send, RepeatedHeader(repeated))
            return
        limiter: RateLimiter = scope["app"].state.rate_limiter
        principal = await request_principal(scope)
        if principal is not None:
            decision = await limiter.hit(self.per_key, "key", principal.key_id)
            refusal = "Too many requests for this API key; retry after the Retry-After seconds."
        else:
            client = scope.get("client")
            address = client[0] if client else "unknown"
            decision = await limiter.hit(self.failed_auth, "auth-failed", address)
            refusal = (
                "Too many failed authentications from this address; retry after the "
                "Retry-After seconds."
            )
        headers = _rate_headers(decision)
        if not decision.allowed:
            retry_after = max(1, decision.reset_after)
            await send_error(send, RateLimited(refusal, retry_after=retry_after), headers)
            return

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + headers}
            await send(message)

        await self.app(scope, receive, send_with_limits)


# --- idempotency -----------------------------------------------------------------------------


class _Disconnected(Exception):
    pass


@dataclass(frozen=True)
class _Claim:
    record_id: str
    resource_id: str
    holder_since: datetime


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, *, settings: GatewaySettings) -> None:
        self.app = app
        self.lock_timeout = timedelta(seconds=settings.idempotency_lock_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        raw_key = _header(scope, b"idempotency-key")
        if raw_key is None:
            await self.app(scope, receive, send)
            return
        try:
            key = rules.check_key(raw_key)
        except TaskrouteError as error:
            await send_error(send, error)
            return
        principal = await request_principal(scope)
        if principal is None:
            await self.app(scope, receive, send)  # the route answers 401; nothing is recorded
            return
        try:
            body = await _read_body(receive)
        except _Disconnected:
            return
        await self._handle(scope, receive, send, key=key, principal=principal, body=body)

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        key: str,
        principal: Principal,
        body: bytes,
    ) -> None:
        app: FastAPI = scope["app"]
        maker: async_sessionmaker[AsyncSession] = app.state.sessionmaker
        # Claim, answer and release are Core statements on a plain connection (two transactions
        # on every keyed POST); the rare path of a key already held reads it on a session.
        engine: AsyncEngine = app.state.engine
        pepper: bytes = app.state.pepper
        request = _Request(
            scope=rules.scope_of(principal),
            key=key,
            key_digest=rules.key_digest(key, pepper=pepper),
            method=scope["method"],
            path=scope["path"],
            fingerprint=rules.fingerprint(
                method=scope["method"],
                path=scope["path"] + "?" + scope.get("query_string", b"").decode("latin-1"),
                body=body,
                pepper=pepper,
            ),
        )
        try:
            outcome = await self._claim(maker, engine, request, pepper=pepper)
        except TaskrouteError as error:
            await send_error(send, error)
            return
        if isinstance(outcome, rules.StoredAnswer):
            await _send_answer(send, outcome, replayed=True)
            return
        await self._run(scope, receive, send, engine, request, outcome, body=body, pepper=pepper)

    async def _claim(
        self,
        maker: async_sessionmaker[AsyncSession],
        engine: AsyncEngine,
        request: _Request,
        *,
        pepper: bytes,
    ) -> _Claim | rules.StoredAnswer:
        """Claim the key in its own committed transaction, or say why not (raises 409/422)."""
        for _ in range(CLAIM_ATTEMPTS):
            now = utcnow()
            try:
                async with transaction_scope(engine) as connection:
                    record_id, resource_id = await IdempotencyRepository(connection).insert(
                        scope=request.scope,
                        key_digest=request.key_digest,
                        method=request.method,
                        path=request.path,
                        fingerprint=request.fingerprint,
                        now=now,
                        expires_at=now + rules.RETENTION,
                    )
                return _Claim(record_id, resource_id, now)
            except IntegrityError:
                pass  # the scope holds this key already: replay, refuse or take it over
            async with open_session(maker) as session:
                repository = IdempotencyRepository(session)
                existing = await repository.get(scope=request.scope, key_digest=request.key_digest)
                if existing is None:
                    continue  # deleted (expired) between our insert and this read
                verdict = rules.judge(
                    rules.Existing(
                        method=existing.method,
                        path=existing.path,
                        fingerprint=existing.fingerprint,
                        state=rules.State(existing.state),
                        locked_at=existing.locked_at,
                        expires_at=existing.expires_at,
                    ),
                    method=request.method,
                    path=request.path,
                    request_fingerprint=request.fingerprint,
                    now=now,
                    lock_timeout=self.lock_timeout,
                )
                if verdict is rules.Verdict.REPLAY:
                    assert existing.response is not None
                    assert existing.response_status is not None
                    return rules.StoredAnswer.open(
                        existing.response,
                        status=existing.response_status,
                        scope=request.scope,
                        key=request.key,
                        pepper=pepper,
                    )
                if verdict is rules.Verdict.EXPIRED:
                    await repository.delete_expired_one(existing, now=now)
                    await session.commit()
                    continue
                taken = await repository.take_over(
                    existing, now=now, stale_before=now - self.lock_timeout
                )
                await session.commit()
                if taken:
                    return _Claim(existing.id, existing.resource_id, now)
                raise IdempotencyInFlight()
        raise IdempotencyInFlight()

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        engine: AsyncEngine,
        request: _Request,
        claim: _Claim,
        *,
        body: bytes,
        pepper: bytes,
    ) -> None:
        delivered = False

        async def replay_receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        start: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        token = _reserved_resource_id.set(claim.resource_id)
        try:
            await self.app(scope, replay_receive, capture)
        except BaseException:
            await _shielded(self._release(engine, request, claim))
            raise
        finally:
            _reserved_resource_id.reset(token)
        if start is None:
            await _shielded(self._release(engine, request, claim))
            return
        status = int(start["status"])
        answer = rules.StoredAnswer(
            status=status,
            headers=[
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in start.get("headers", [])
                if name.decode("latin-1").lower() in rules.REPLAYED_HEADERS
            ],
            body=b"".join(chunks),
        )
        if status >= 500:
            # Not stored: the client may retry, and the retry reuses the resource id.
            await _shielded(self._release(engine, request, claim))
        else:
            await _shielded(self._complete(engine, request, claim, answer, pepper=pepper))
        await send(start)
        await send({"type": "http.response.body", "body": answer.body})

    async def _complete(
        self,
        engine: AsyncEngine,
        request: _Request,
        claim: _Claim,
        answer: rules.StoredAnswer,
        *,
        pepper: bytes,
    ) -> None:
        try:
            async with transaction_scope(engine) as connection:
                stored = await IdempotencyRepository(connection).complete(
                    record_id=claim.record_id,
                    scope=request.scope,
                    holder_since=claim.holder_since,
                    status=answer.status,
                    response=answer.seal(scope=request.scope, key=request.key, pepper=pepper),
                )
        except Exception as exc:  # noqa: BLE001 - the change is done; the answer must still go
            # The claim stays in flight and is taken over after the lock timeout; the retry
            # reuses the resource id, so nothing is created twice.
            logger.error("idempotency answer not stored", extra={"error_type": type(exc).__name__})
            return
        if not stored:
            logger.warning("idempotency claim was taken over before this answer was stored")

    async def _release(self, engine: AsyncEngine, request: _Request, claim: _Claim) -> None:
        try:
            async with transaction_scope(engine) as connection:
                await IdempotencyRepository(connection).release(
                    record_id=claim.record_id, scope=request.scope, holder_since=claim.holder_since
                )
        except Exception as exc:  # noqa: BLE001 - the lock timeout frees the claim anyway
            logger.error("idempotency claim not released", extra={"error_type": type(exc).__name__})


@dataclass(frozen=True)
class _Request:
    scope: str
    key: str
    key_digest: str
    method: str
    path: str
    fingerprint: str


async def _shielded(work: Any) -> None:
    """Finish bookkeeping even if the request's task is being cancelled (client gone)."""
    await asyncio.shield(work)


async def _send_answer(send: Send, answer: rules.StoredAnswer, *, replayed: bool) -> None:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers]
    headers.append((b"content-length", str(len(answer.body)).encode()))
    if replayed:
        headers.append((rules.REPLAYED_HEADER.lower().encode(), b"true"))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


# --- wiring ----------------------------------------------------------------------------------


def install_edge(app: FastAPI, settings: GatewaySettings) -> None:
    """Add the two layers innermost, in the order of the module docstring."""
    app.user_middleware.append(Middleware(RateLimitMiddleware, settings=settings))
    app.user_middleware.append(Middleware(IdempotencyMiddleware, settings=settings))
    document_edge(app)


def create_rate_limiter(settings: GatewaySettings) -> RateLimiter:
    return RateLimiter(
        redis_url=settings.redis_url.get_secret_value() if settings.redis_url else None,
        key_prefix=settings.redis_key_prefix,
        timeout_seconds=settings.redis_timeout_seconds,
    )


async def purge_expired_forever(maker: async_sessionmaker[AsyncSession]) -> None:
    """Delete expired idempotency records every ``PURGE_INTERVAL_SECONDS`` (lifespan task)."""
    while True:
        try:
            async with open_session(maker) as session:
                await IdempotencyRepository(session).purge_expired(now=utcnow())
                await session.commit()
        except Exception as exc:  # noqa: BLE001 - retried next round; never kill the task
            logger.warning("idempotency purge failed", extra={"error_type": type(exc).__name__})
        await asyncio.sleep(PURGE_INTERVAL_SECONDS)


# --- documentation ---------------------------------------------------------------------------

_PROBLEM = {
    "application/problem+json": {
        "schema": {
            "type": "object",
            "properties": {
                name: {"type": kind}
                for name, kind in (
                    ("type", "string"),
                    ("title", "string"),
                    ("status", "integer"),
                    ("detail", "string"),
                    ("request_id", "string"),
                )
            },
        }
    }
}
_RATE_HEADERS = {
    "RateLimit-Limit": "Requests allowed per window for this API key.",
    "RateLimit-Remaining": "Requests left in the current window.",
    "RateLimit-Reset": "Seconds until the window frees room again.",
}


def document_edge(app: FastAPI) -> None:
    """Add what the edge layers do to every ``/v1`` operation of the OpenAPI document.

    The middleware is invisible to FastAPI's schema generation; without this, clients would not
    learn of ``Idempotency-Key`` or of the 429 answers from the API's own description.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        for path, operations in schema.get("paths", {}).items():
            if not path.startswith("/v1/"):
                continue
            for method, operation in operations.items():
                _document_operation(path, method, operation)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    # Every /v1 route authenticates, and every error is problem+json (FastAPI's default 422
    # schema describes its own body, not ours).
    responses.setdefault(
        "401",
        {
            "description": "Missing, malformed, unknown or revoked API key.",
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
            "content": _PROBLEM,
        },
    )
    responses.setdefault(
        "403", {"description": "A valid API key without the right role.", "content": _PROBLEM}
    )
    if "{" in path:
        responses.setdefault(
            "404",
            {
                "description": "Unknown id, or another tenant's (they look the same).",
                "content": _PROBLEM,
            },
        )
    if "422" in responses:
        responses["422"] = {
            "description": "Invalid input; `errors` names each offending field.",
            "content": _PROBLEM,
        }
    responses.setdefault(
        "503", {"description": "The router or the vault is unavailable.", "content": _PROBLEM}
    )
    responses.setdefault(
        "429",
        {
            "description": "Too many requests for this API key (or failed authentications from "
            "this address); wait `Retry-After` seconds.",
            "headers": {
                "Retry-After": {"schema": {"type": "integer"}},
                **{name: {"schema": {"type": "integer"}} for name in _RATE_HEADERS},
            },
            "content": _PROBLEM,
        },
    )
    if method != "post":
        return
    parameters = operation.setdefault("parameters", [])
    if any(p.get("name") == rules.HEADER for p in parameters):
        return  # the cached schema was documented already
    parameters.append(
        {
            "name": rules.HEADER,
            "in": "header",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": rules.MAX_KEY_CHARS},
            "description": "Makes a retry safe: the same key and body within 24 hours replays "
            "the first answer (with `Idempotent-Replayed: true`); another body is 422; a "
            "retry while the first is still running is 409.",
        }
    )
    responses.setdefault(
        "409",
        {"description": "A request with this Idempotency-Key is in flight.", "content": _PROBLEM},
    )
    responses.setdefault(
        "400",
        {"description": "The Idempotency-Key header is malformed.", "content": _PROBLEM},
    )
