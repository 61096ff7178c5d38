"""Prometheus metrics common to every service: request latency by route template, ``/metrics``.

Design
------
* **One registry per process.** Each service runs as its own process (one per container, or one
  per ``taskroute up`` child), so the process-wide default registry of ``prometheus_client`` is
  that service's registry: no multiprocess mode, no shared files. It also carries the client's
  own process collectors (CPU, memory, open files) for free.
* **Pure ASGI middleware** (no ``BaseHTTPMiddleware``, whose task hop costs more than a small
  request) that observes every HTTP request once, after the app answered.
* **Bounded labels.** The route label is the route *template* FastAPI matched
  (``/v1/jobs/{job_id}``), never the raw path, so ids cannot explode the number of series; a
  request that matched no route is labelled ``<unmatched>``. Status is a class (``2xx`` ...).
* **Scrape-time values.** A service may give :func:`create_service_app` a refresh hook that reads
  what it wants to export (counts from its database, say) just before ``/metrics`` renders; the
  hook owns its own errors and timeouts so a slow database never breaks the scrape.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Histogram, generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The label for a request no route matched (404 scans, typos): one series instead of one per path.
UNMATCHED_ROUTE = "<unmatched>"

# Request latency buckets in seconds: from a cached read (5 ms) to the upstream timeout (10 s);
# the 0.25-1 s range is dense because that is where the gateway's p95/p99 objectives sit.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)

REQUEST_SECONDS = Histogram(
    "taskroute_http_request_duration_seconds",
    "Time from receiving a request to the end of its response, by route template.",
    ["service", "method", "route", "status_class"],
    buckets=LATENCY_BUCKETS,
)

MetricsRefresh = Callable[[FastAPI], Awaitable[None]]


def status_class(status: int) -> str:
    """``2xx``, ``4xx`` ... for a status code (anything odd is ``5xx``: it is a server fault)."""
    if 100 <= status <= 599:
        return f"{status // 100}xx"
    return "5xx"


def route_template(scope: Scope) -> str:
    """The path template of the route the router matched for ``scope``, or ``<unmatched>``."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else UNMATCHED_ROUTE


class MetricsMiddleware:
    """Observe each HTTP request's latency in :data:`REQUEST_SECONDS` (installed outermost)."""

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless the app starts a response, the client sees a failure

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            REQUEST_SECONDS.labels(
                service=self.service,
                method=scope["method"],
                route=route_template(scope),
                status_class=status_class(status),
            ).observe(time.perf_counter() - started)


def install_metrics(app: FastAPI, *, service: str, refresh: MetricsRefresh | None = None) -> None:
    """Add the latency middleware and a ``GET /metrics`` (outside the OpenAPI schema)."""
    app.add_middleware(MetricsMiddleware, service=service)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus metrics of this process, in the text exposition format."""
        if refresh is not None:
            await refresh(app)
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def sample_value(name: str, labels: dict[str, str] | None = None) -> float:
    """The current value of one sample of the process registry (0 if absent); for tests and
    checks, e.g. ``sample_value("taskroute_http_request_duration_seconds_count", {...})``."""
    value: Any = REGISTRY.get_sample_value(name, labels or {})
    return float(value) if value is not None else 0.0
