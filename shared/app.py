"""What every service's app factory does the same way: errors, middleware, liveness, metrics."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from shared.db import sqlite_checkpoints
from shared.errors import install_error_handlers
from shared.metrics import MetricsRefresh, install_metrics
from shared.middleware import RequestContextMiddleware
from shared.tracing import SpanRequestIdMiddleware, fastapi_telemetry, provider_for


def create_service_app(
    *,
    title: str,
    description: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    public_docs: bool = True,
    service: str = "service",
    metrics_refresh: MetricsRefresh | None = None,
) -> FastAPI:
    """A FastAPI app with problem+json errors, request ids, ``/healthz`` and ``/metrics``.

    ``service`` labels this app's request metrics; ``metrics_refresh`` runs before each scrape
    (see :mod:`shared.metrics`). With ``TASKROUTE_TRACING_ENABLED`` each request is also a span
    of ``service`` (see :mod:`shared.tracing`); otherwise nothing of tracing is installed.
    """
    tracer_provider = provider_for(service)

    @asynccontextmanager
    async def service_lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(app), sqlite_checkpoints(getattr(app.state, "engine", None)):
            yield

    app = FastAPI(
        title=title,
        description=description,
        version="0.1.0",
        lifespan=service_lifespan,
        docs_url="/docs" if public_docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if public_docs else None,
        telemetry=fastapi_telemetry(tracer_provider),
    )
    install_error_handlers(app)
    if tracer_provider is not None:
        # Inside the request-context middleware (added next, so outside it): the id is set.
        app.add_middleware(SpanRequestIdMiddleware)
    app.add_middleware(RequestContextMiddleware)
    # Added last, so outermost: it also times and counts the 413s and 500s the request-context
    # middleware answers itself.
    install_metrics(app, service=service, refresh=metrics_refresh)

    @app.get("/healthz", tags=["health"], include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers. Checks no dependency."""
        return {"status": "ok"}

    return app


def freeze_heap_after_startup(app: FastAPI) -> None:
    """Once ``app`` has started, collect the garbage and move every object the process holds
    to the collector's permanent generation, for a process that serves one app for its whole
    life. Call it once the app is fully built: a router included later would start after the
    freeze.

    A service's start-up leaves hundreds of thousands of long-lived objects (the router's
    trained classifier, the imported modules, the routes' schemas). The cyclic collector's
    full passes walked all of them: 50-150 ms with the process stopped, a few times a minute
    under load, every request in flight waiting (the unloaded submit's tail, BENCHMARKS.md).
    Frozen, they are never walked again; they still live as long as they are referenced.
    Not for a process that builds many apps (the tests): what freezing keeps is never
    collected as a cycle.
    """
    started = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan_then_freeze(app: Any) -> AsyncIterator[Any]:
        async with started(app) as state:
            gc.collect()
            gc.freeze()
            yield state

    app.router.lifespan_context = lifespan_then_freeze
