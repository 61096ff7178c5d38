"""The gateway's app factory and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, cast

import httpx
from fastapi import FastAPI
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.middleware import Middleware

from services.gateway.api import (
    admin_audit,
    admin_jobs,
    admin_teams,
    admin_tenants,
    admin_vault_keys,
    classify,
    edge,
    health,
    jobs,
    member_keys,
    openapi_docs,
    reviews,
    team_jobs,
    vault_keys,
    webhooks,
)
from services.gateway.api.job_events import JobEventsMiddleware
from services.gateway.clients.webhooks import WebhookSender
from services.gateway.console import install_console
from services.gateway.db.repository import ApiKeyRepository
from services.gateway.domain import api_keys
from services.gateway.settings import GatewaySettings
from services.gateway.submissions import create_sweeper
from shared.app import create_service_app
from shared.db import create_engine, create_sessionmaker
from shared.http import create_service_client
from shared.middleware import RequestContextMiddleware
from shared.service_auth import ServiceIdentity

logger = logging.getLogger("taskroute.gateway")

# Replicas starting together race to insert the bootstrap key; one retry always suffices (the
# loser then finds the winner's row), a third attempt covers a racing rotation.
BOOTSTRAP_ATTEMPTS = 3

DESCRIPTION = """\
Taskroute's public API: clients submit KPO/BPO jobs with confidential data, team members work
them under leases, operators manage tenants, teams, triage and audit.

Authenticate with `Authorization: Bearer <api key>`. Errors are `application/problem+json`.
"""

OPENAPI_TAGS = [
    {"name": "jobs", "description": "Clients: submit jobs and follow them."},
    {"name": "team", "description": "Team members: the team's queue and leased work."},
    {"name": "vault", "description": "Clients: the tenant's public keys for sealed envelopes."},
    {"name": "webhooks", "description": "Clients: signed job events pushed to your endpoints."},
    {"name": "admin: tenants", "description": "Operators: tenants, client keys, policies."},
    {"name": "admin: teams", "description": "Operators: teams and their members."},
    {"name": "admin: jobs", "description": "Operators: triage, manual routing, statistics."},
    {"name": "admin: audit", "description": "Operators: the vault's audit log."},
    {"name": "health", "description": "Liveness and readiness."},
]


async def store_bootstrap_operator_key(
    maker: async_sessionmaker[AsyncSession], key: str, *, pepper: bytes
) -> bool:
    """Make ``key`` an operator key (idempotent); True if the database changed."""
    new_key = api_keys.bootstrap_key(key, pepper=pepper)
    for attempt in range(BOOTSTRAP_ATTEMPTS):
        async with maker() as session:
            try:
                changed = await ApiKeyRepository(session).ensure_bootstrap_operator(new_key)
                await session.commit()
            except IntegrityError:
                await session.rollback()
                if attempt + 1 == BOOTSTRAP_ATTEMPTS:
                    raise
                continue
            return changed
    raise AssertionError("unreachable")


class _NoCookies(http.cookiejar.CookieJar):
    """The peers' clients' cookie jar: router and vault set no cookies, and httpx's parse of
    every answer for them was ~1 % of a submit's CPU."""

    def extract_cookies(self, response: Any, request: Any) -> None:  # noqa: ARG002
        return None


def create_app(
    settings: GatewaySettings | None = None,
    *,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
) -> FastAPI:
    settings = settings or GatewaySettings()
    transports = transports or {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pepper = settings.resolved_api_key_pepper()
        engine = create_engine(settings.resolved_database_url())
        maker = create_sessionmaker(engine)
        identity = ServiceIdentity.load(
            name="gateway", keys_dir=settings.keys_dir(), peers=("router", "vault")
        )
        router_http = create_service_client(
            base_url=settings.router_url,
            identity=identity,
            audience="router",
            timeout_seconds=settings.upstream_timeout_seconds,
            transport=transports.get("router"),
        )
        vault_http = create_service_client(
            base_url=settings.vault_url,
            identity=identity,
            audience="vault",
            timeout_seconds=settings.upstream_timeout_seconds,
            transport=transports.get("vault"),
        )
        for peer in (router_http, vault_http):
            peer.cookies = _NoCookies()
        rate_limiter = edge.create_rate_limiter(settings)
        purger = asyncio.create_task(edge.purge_expired_forever(maker))
        sender = WebhookSender(
            maker=maker,
            pepper=pepper,
            backoff_base=timedelta(seconds=settings.webhook_backoff_base_seconds),
            poll_seconds=settings.webhook_poll_seconds,
            transport=transports.get("webhooks"),
            allow_loopback=not settings.is_production(),
            proxy=settings.webhook_proxy_url,
        )
        webhook_worker = asyncio.create_task(sender.run_forever())
        # Started once app.state is complete: it uses the peers' clients from there.
        submission_worker: asyncio.Task[None] | None = None
        try:
            if settings.bootstrap_operator_key is not None:
                changed = await store_bootstrap_operator_key(
                    maker, settings.bootstrap_operator_key.get_secret_value(), pepper=pepper
                )
                logger.info("bootstrap operator key", extra={"stored": changed})
            app.state.settings = settings
            app.state.pepper = pepper
            app.state.engine = engine
            app.state.sessionmaker = maker
            app.state.identity = identity
            app.state.router_http = router_http
            app.state.vault_http = vault_http
            app.state.rate_limiter = rate_limiter
            # Also used by requests, to forward a tenant's pending jobs before a list or action.
            app.state.submission_sweeper = sweeper = create_sweeper(app)
            app.state.tenant_policies = sweeper.policies
            submission_worker = asyncio.create_task(sweeper.run_forever())
            yield
        finally:
            for task in (purger, webhook_worker, submission_worker):
                if task is None:
                    continue
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await sender.aclose()
            await rate_limiter.aclose()
            await router_http.aclose()
            await vault_http.aclose()
            await engine.dispose()

    app = create_service_app(
        title="Taskroute gateway", description=DESCRIPTION, lifespan=lifespan, service="gateway"
    )
    app.openapi_tags = OPENAPI_TAGS
    _limit_bodies(app, settings.max_body_bytes)
    edge.install_edge(app, settings)
    openapi_docs.install(app)
    app.user_middleware.append(Middleware(JobEventsMiddleware))  # innermost, see edge.py
    for module in (jobs, team_jobs, admin_tenants, admin_teams, admin_jobs, admin_audit, health):
        app.include_router(module.router)
    app.include_router(vault_keys.router)
    app.include_router(member_keys.router)
    app.include_router(admin_vault_keys.router)
    app.include_router(webhooks.router)
    app.include_router(classify.router)
    app.include_router(reviews.router)
    install_console(app)  # /console: the web workspace (services/gateway/console)
    return app


def _limit_bodies(app: FastAPI, max_body_bytes: int) -> None:
    """Apply the configured body limit to the request-context middleware already installed.

    ``create_service_app`` installs the middleware with the platform default; the gateway is the
    only public service, so its limit is configurable. Replacing the entry (the stack is built on
    the first request) keeps one middleware layer instead of stacking a second.
    """
    for index, entry in enumerate(app.user_middleware):
        if cast(object, entry.cls) is RequestContextMiddleware:
            app.user_middleware[index] = Middleware(
                RequestContextMiddleware, max_body_bytes=max_body_bytes
            )
            return
    app.add_middleware(RequestContextMiddleware, max_body_bytes=max_body_bytes)
