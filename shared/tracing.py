"""OpenTelemetry tracing, off unless ``TASKROUTE_TRACING_ENABLED=true``.

What is traced when it is on
----------------------------
* **Incoming requests**: FastAPI's own OpenTelemetry support (``FastAPI(telemetry=...)``) makes
  one SERVER span per request, named ``<METHOD> <route template>`` (``POST /v1/jobs``), continuing
  the caller's W3C ``traceparent``. :class:`SpanRequestIdMiddleware` adds the request id
  (``taskroute.request_id``), so a trace and the JSON logs find each other, and reduces the
  query string FastAPI records to its parameter names.
* **Calls between services**: :func:`traced_transport` wraps the httpx transport of every
  service client (:func:`shared.http.create_service_client`) in a CLIENT span and sends its
  ``traceparent``, so one trace runs gateway → router / vault.
* **Database statements** inside a traced request: one CLIENT span per statement (SQLAlchemy
  cursor events), carrying the statement text with its placeholders, never the bound values.
  Statements outside a request (the pollers' rounds, once a second) make no spans.

Spans carry only what cannot be confidential: methods, route templates, paths (ids only), status
codes, statement text without parameters, error *types*. Never bodies, headers, query values,
parameters or exception messages (FastAPI's own exception logs are switched off).

Off (the default) costs nothing per request: no span, no ``traceparent``, no tracing middleware,
and not even an import of the OpenTelemetry SDK. FastAPI's built-in telemetry is switched off
explicitly, so an OpenTelemetry provider configured globally by some library cannot turn it on.

Export: with ``TASKROUTE_TRACING_OTLP_ENDPOINT`` set, spans are batched to that OTLP/HTTP
(protobuf) traces endpoint (``http://collector:4318/v1/traces``); the exporter also honours the
standard ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` / ``..._CERTIFICATE`` / ``..._TIMEOUT``
variables. Without an endpoint, spans are made and propagated but exported nowhere (one warning
at start-up): the request id stays the way to follow a request.

The settings are read from the environment when an app is built (:func:`provider_for`), like
every ``TASKROUTE_*`` variable; tests install their own provider with :func:`install`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx
from fastapi.telemetry import TelemetryConfig
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.request_context import current_request_id

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.trace import Tracer

logger = logging.getLogger("taskroute.tracing")

# The attribute naming the request id on server, client and database spans.
REQUEST_ID_ATTRIBUTE = "taskroute.request_id"
# Statement text is kept to this many characters (an IN list of many ids can be long).
MAX_STATEMENT_CHARS = 2000

_lock = threading.Lock()
# service name -> its provider (None: tracing is off for it). One entry per process in a
# deployment; tests build several services in one process, each with its own provider.
_providers: dict[str, TracerProvider | None] = {}
# id(resource) of each provider -> its tracer, so a database span joins the provider of the
# request it runs in; the first provider is the fallback.
_tracers_by_resource: dict[int, Tracer] = {}
_database_hooks_installed = False


def fastapi_telemetry(provider: TracerProvider | None) -> TelemetryConfig:
    """The ``telemetry=`` argument for ``FastAPI()``: request spans from ``provider`` or none.

    FastAPI's metrics (we export Prometheus) and logs (they would carry exception messages,
    which can quote input) stay off either way, and so does its environment auto-configuration.
    """
    return {
        "tracing": provider is not None,
        "tracer_provider": provider,
        "metrics": False,
        "logs": False,
        "operation_spans": False,
        "auto_configure": False,
    }


def provider_for(service: str) -> TracerProvider | None:
    """The tracer provider of ``service``, made from the environment on first use; None if off."""
    with _lock:
        if service in _providers:
            return _providers[service]
    from shared.settings import PlatformSettings

    settings = PlatformSettings()
    provider = None
    if settings.tracing_enabled:
        provider = build_provider(
            service,
            processors=export_processors(settings.tracing_otlp_endpoint),
            sample_ratio=settings.tracing_sample_ratio,
        )
    with _lock:
        if service in _providers:  # another thread made it first
            return _providers[service]
    install(service, provider)
    return provider


def build_provider(
    service: str, *, processors: list[SpanProcessor], sample_ratio: float = 1.0
) -> TracerProvider:
    """An SDK provider naming ``service`` (``taskroute-<service>``) with these processors."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    resource = Resource.create(
        {"service.name": f"taskroute-{service}", "service.namespace": "taskroute"}
    )
    provider = TracerProvider(
        resource=resource, sampler=ParentBased(TraceIdRatioBased(sample_ratio))
    )
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def install(service: str, provider: TracerProvider | None) -> None:
    """Use ``provider`` for apps and clients of ``service`` built from now on (None: off)."""
    with _lock:
        _providers[service] = provider
        if provider is None:
            return
        tracer = provider.get_tracer("taskroute")
        _tracers_by_resource[id(provider.resource)] = tracer
        _tracers_by_resource.setdefault(0, tracer)  # the fallback: the first one
    _install_database_hooks()


def reset() -> None:
    """Forget every provider and remove the database hooks (tests)."""
    global _database_hooks_installed
    with _lock:
        _providers.clear()
        _tracers_by_resource.clear()
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        if _database_hooks_installed:
            for name, hook in _DATABASE_HOOKS.items():
                event.remove(Engine, name, hook)
            _database_hooks_installed = False
        # Removing a class-level listener leaves the class flagged as listened to: every
        # engine made afterwards would send each statement through SQLAlchemy's event path
        # (shared.statements checks the flag). Cleared only if no code listens on the class
        # any more (engines' own listeners flag the engine itself).
        if not _engine_class_listened():
            Engine._has_events = False  # noqa: SLF001


def _engine_class_listened() -> bool:
    """Whether any listener remains on SQLAlchemy's Engine class itself (SQLAlchemy keeps
    them per class in each event's ``_clslevel``; it offers no public question for this)."""
    from sqlalchemy.engine import Engine

    dispatch = Engine.dispatch
    for name in dispatch._event_names:  # noqa: SLF001
        by_class = getattr(getattr(dispatch, name), "_clslevel", None)
        if by_class is not None and by_class.get(Engine):
            return True
    return False


def export_processors(endpoint: str | None) -> list[SpanProcessor]:
    """A batching OTLP/HTTP exporter to ``endpoint``; none (and a warning) without one."""
    if not endpoint:
        logger.warning(
            "tracing is on without TASKROUTE_TRACING_OTLP_ENDPOINT: spans are propagated, "
            "not exported"
        )
        return []
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    return [BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint))]


# ----------------------------------------------------------------------- incoming requests


class SpanRequestIdMiddleware:
    """Put the request id on the request's server span (installed only when tracing is on,
    inside :class:`shared.middleware.RequestContextMiddleware`, which sets the id)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            from opentelemetry import trace

            span = trace.get_current_span()
            if span.is_recording():
                request_id = current_request_id()
                if request_id:
                    span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
                if scope.get("query_string"):
                    # FastAPI records the query with its values: keep the parameter names only.
                    span.set_attribute("url.query", redacted_query(scope["query_string"]))
        await self.app(scope, receive, send)


def redacted_query(query_string: bytes) -> str:
    """``a=1&b=x`` -> ``a=REDACTED&b=REDACTED``: which parameters, never their values."""
    names = [part.split("=", 1)[0] for part in query_string.decode("latin-1").split("&") if part]
    return "&".join(f"{name}=REDACTED" for name in names)


# ----------------------------------------------------------------------- calls between services


def traced_transport(
    transport: httpx.AsyncBaseTransport, *, service: str, peer: str
) -> httpx.AsyncBaseTransport:
    """``transport`` itself when ``service`` is not traced; else wrapped in client spans."""
    provider = provider_for(service)
    if provider is None:
        return transport
    return _TracingTransport(transport, provider.get_tracer("taskroute"), peer=peer)


class _TracingTransport(httpx.AsyncBaseTransport):
    """One CLIENT span per call to a peer, its context sent as the W3C ``traceparent``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, tracer: Tracer, *, peer: str) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.inner = inner
        self.tracer = tracer
        self.peer = peer
        self.propagator = TraceContextTextMapPropagator()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, StatusCode

        attributes: dict[str, Any] = {
            "http.request.method": request.method,
            "server.address": request.url.host,
            "url.path": request.url.path,  # ids only; the query is left out
            "peer.service": f"taskroute-{self.peer}",
        }
        if request.url.port is not None:
            attributes["server.port"] = request.url.port
        request_id = current_request_id()
        if request_id:
            attributes[REQUEST_ID_ATTRIBUTE] = request_id
        span = self.tracer.start_span(
            f"{request.method} {self.peer}", kind=SpanKind.CLIENT, attributes=attributes
        )
        try:
            self.propagator.inject(request.headers, context=trace.set_span_in_context(span))
            try:
                response = await self.inner.handle_async_request(request)
            except BaseException as exc:
                # The type only: a transport error's text can quote the URL.
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(StatusCode.ERROR)
                raise
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_attribute("error.type", str(response.status_code))
                span.set_status(StatusCode.ERROR)
            return response
        finally:
            span.end()

    async def aclose(self) -> None:
        await self.inner.aclose()


# ----------------------------------------------------------------------- database statements

_SPAN_KEY = "_taskroute_span"


def _before_cursor_execute(
    conn: Any, _cursor: Any, statement: str, _parameters: Any, context: Any, _many: bool
) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    parent = trace.get_current_span()
    if context is None or not parent.is_recording():
        return  # only statements inside a traced request
    resource = getattr(parent, "resource", None)
    tracer = _tracers_by_resource.get(id(resource)) or _tracers_by_resource.get(0)
    if tracer is None:
        return
    operation = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
    system = conn.dialect.name
    attributes: dict[str, Any] = {
        "db.system.name": "postgresql" if system == "postgresql" else system,
        "db.operation.name": operation,
        "db.query.text": statement[:MAX_STATEMENT_CHARS],  # placeholders, never the values
    }
    request_id = current_request_id()
    if request_id:
        attributes[REQUEST_ID_ATTRIBUTE] = request_id
    setattr(
        context,
        _SPAN_KEY,
        tracer.start_span(f"{operation} {system}", kind=SpanKind.CLIENT, attributes=attributes),
    )


def _after_cursor_execute(
    _conn: Any, _cursor: Any, _statement: str, _parameters: Any, context: Any, _many: bool
) -> None:
    span = getattr(context, _SPAN_KEY, None)
    if span is not None:
        setattr(context, _SPAN_KEY, None)
        span.end()


def _handle_error(exception_context: Any) -> None:
    from opentelemetry.trace import StatusCode

    context = exception_context.execution_context
    span = getattr(context, _SPAN_KEY, None) if context is not None else None
    if span is not None:
        setattr(context, _SPAN_KEY, None)
        span.set_attribute("error.type", type(exception_context.original_exception).__name__)
        span.set_status(StatusCode.ERROR)
        span.end()


_DATABASE_HOOKS: Mapping[str, Any] = {
    "before_cursor_execute": _before_cursor_execute,
    "after_cursor_execute": _after_cursor_execute,
    "handle_error": _handle_error,
}


def _install_database_hooks() -> None:
    """Listen to every engine's statements (once per process, only once tracing is on)."""
    global _database_hooks_installed
    with _lock:
        if _database_hooks_installed:
            return
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        for name, hook in _DATABASE_HOOKS.items():
            event.listen(Engine, name, hook)
        _database_hooks_installed = True
