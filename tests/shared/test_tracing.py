"""OpenTelemetry tracing (shared/tracing.py): off by default, one trace across services when on.

The platform runs in process: the real gateway, router and vault apps with their lifespans and
databases, the gateway's service clients sending to the peers through httpx's ASGI transport.
The test's collector is the OpenTelemetry SDK's in-memory span exporter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.gateway.app import create_app as create_gateway_app
from services.router.app import create_app as create_router_app
from services.router.settings import RouterSettings
from services.vault.app import create_app as create_vault_app
from services.vault.settings import VaultSettings
from shared import tracing
from tests.conftest import running
from tests.gateway.conftest import OPERATOR_KEY, gateway_settings

REPO = Path(__file__).resolve().parents[2]
# Appears only in a job's confidential data: no span may carry it.
CANARY = "CANARY-TRACE-4d1e9b-SSN-219-09-9999"
TEAM = {
    "name": "Pune Ledger Ops",
    "country": "IN",
    "timezone": "Asia/Kolkata",
    "working_hours": {"start": "00:00", "end": "23:59", "days": [0, 1, 2, 3, 4, 5, 6]},
    "tier": "BPO",
    "skills": ["bookkeeping", "data_entry"],
    "certifications": ["ISO27001"],
    "languages": ["en"],
    "capacity": 5,
    "hourly_rate": 14.5,
}
JOB = {
    "title": "Reconcile March bookkeeping ledgers",
    "description": "Bookkeeping: reconcile the general ledger with bank statements, post "
    "journal entries and prepare the trial balance for March.",
    "service": "bookkeeping",
}


@dataclass
class Platform:
    client: httpx.AsyncClient
    operator: dict[str, str]
    # The headers of every request the router and the vault received.
    received: dict[str, list[dict[str, str]]] = field(default_factory=dict)


def recording(app: Any, into: list[dict[str, str]]) -> Any:
    """``app`` itself, noting the headers of each HTTP request it is given."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            into.append({k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]})
        await app(scope, receive, send)

    return asgi


@asynccontextmanager
async def platform(databases, keys_dir, tmp_path) -> AsyncIterator[Platform]:
    router_app = create_router_app(
        RouterSettings(
            database_url=databases["router"],
            data_dir=tmp_path,
            service_keys_dir=keys_dir,
            classifier="lexicon",
        )
    )
    vault_app = create_vault_app(
        VaultSettings(database_url=databases["vault"], data_dir=tmp_path, service_keys_dir=keys_dir)
    )
    received: dict[str, list[dict[str, str]]] = {"router": [], "vault": []}
    async with running(router_app), running(vault_app):
        transports = {
            "router": httpx.ASGITransport(app=recording(router_app, received["router"])),
            "vault": httpx.ASGITransport(app=recording(vault_app, received["vault"])),
        }
        app = create_gateway_app(
            gateway_settings(databases, keys_dir, tmp_path), transports=transports
        )
        async with running(app) as client:
            yield Platform(client, {"Authorization": f"Bearer {OPERATOR_KEY}"}, received)


async def submit_a_confidential_job(platform: Platform) -> httpx.Response:
    """Operator: a tenant and a team (gateway → router); client: a job (gateway → vault, router)."""
    tenant = await platform.client.post(
        "/v1/admin/tenants", json={"name": "Acme Health"}, headers=platform.operator
    )
    assert tenant.status_code == 201, tenant.text
    team = await platform.client.post("/v1/admin/teams", json=TEAM, headers=platform.operator)
    assert team.status_code == 201, team.text
    submitted = await platform.client.post(
        "/v1/jobs",
        json={**JOB, "confidential": {"ssn": CANARY, "note": f"patient {CANARY}"}},
        headers={
            "Authorization": f"Bearer {tenant.json()['api_key']}",
            "X-Request-ID": "trace-test-submit-1",
        },
    )
    assert submitted.status_code == 202, submitted.text
    return submitted


@pytest.fixture
def collector() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the three services, every span into one in-memory exporter."""
    exporter = InMemorySpanExporter()
    tracing.reset()
    for service in ("gateway", "router", "vault"):
        provider = tracing.build_provider(service, processors=[SimpleSpanProcessor(exporter)])
        tracing.install(service, provider)
    try:
        yield exporter
    finally:
        tracing.reset()


def test_reset_leaves_engines_made_afterwards_without_statement_hooks(collector) -> None:
    """Tracing listens to every engine's statements; once reset, engines made later (other
    tests', in this process) run prebuilt statements on the driver again (shared.statements)."""
    from sqlalchemy.engine import Engine

    assert Engine._has_events  # noqa: SLF001 - on: statements go through SQLAlchemy's events
    tracing.reset()
    assert not Engine._has_events  # noqa: SLF001


def test_reset_leaves_other_class_level_statement_hooks_working(collector) -> None:
    """Should other code listen on the Engine class too, its hooks keep firing on engines
    made after the reset."""
    from sqlalchemy import create_engine as create_sync_engine
    from sqlalchemy import event, text
    from sqlalchemy.engine import Engine

    seen: list[str] = []

    def hook(*_args: Any) -> None:
        seen.append("statement")

    event.listen(Engine, "before_cursor_execute", hook)
    try:
        tracing.reset()
        engine = create_sync_engine("sqlite://")
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    finally:
        event.remove(Engine, "before_cursor_execute", hook)
    assert seen == ["statement"]


@pytest.fixture
def tracing_from_environment() -> Iterator[None]:
    """Providers made from the (cleaned) environment, as a deployment makes them."""
    tracing.reset()
    try:
        yield
    finally:
        tracing.reset()


def service_of(span: ReadableSpan) -> str:
    return str(span.resource.attributes["service.name"])


def by_id(spans: list[ReadableSpan]) -> dict[int, ReadableSpan]:
    return {span.context.span_id: span for span in spans}


def ancestors(span: ReadableSpan, index: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = []
    while span.parent is not None and span.parent.span_id in index:
        span = index[span.parent.span_id]
        chain.append(span)
    return chain


# ----------------------------------------------------------------------------- off


async def test_off_no_provider_and_no_traceparent_between_services(
    tracing_from_environment, databases, keys_dir, tmp_path
):
    async with platform(databases, keys_dir, tmp_path) as plat:
        await submit_a_confidential_job(plat)
    assert plat.received["router"]
    assert plat.received["vault"]
    for headers in plat.received["router"] + plat.received["vault"]:
        assert "traceparent" not in headers
        assert headers["x-request-id"]  # the request id still travels
    for service in ("gateway", "router", "vault"):
        assert tracing.provider_for(service) is None


def test_off_imports_no_sdk_and_ignores_a_global_provider():
    """In a fresh interpreter: building and serving an app with tracing off imports nothing of
    the OpenTelemetry SDK, and even a global SDK provider (some library's) records no span."""
    script = textwrap.dedent(
        """
        import asyncio, json, sys
        from contextlib import asynccontextmanager
        import httpx
        from shared.app import create_service_app

        @asynccontextmanager
        async def lifespan(app):
            yield

        app = create_service_app(title="t", description="d", lifespan=lifespan, service="probe")

        @app.get("/v1/things/{thing_id}")
        async def thing(thing_id: str) -> dict[str, str]:
            return {"id": thing_id}

        async def call() -> int:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return (await client.get("/v1/things/1")).status_code

        status = asyncio.run(call())
        sdk_loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk"))

        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        status2 = asyncio.run(call())
        print(json.dumps({"status": [status, status2], "sdk_loaded": sdk_loaded,
                          "spans": len(exporter.get_finished_spans())}))
        """
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TASKROUTE_", "OTEL_"))}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"status": [200, 200], "sdk_loaded": [], "spans": 0}


def test_on_from_the_environment_without_an_endpoint_makes_a_provider(
    tracing_from_environment, monkeypatch
):
    monkeypatch.setenv("TASKROUTE_TRACING_ENABLED", "true")
    monkeypatch.setenv("TASKROUTE_TRACING_SAMPLE_RATIO", "0.25")
    provider = tracing.provider_for("router")
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "taskroute-router"
    assert "0.25" in provider.sampler.get_description()
    assert tracing.provider_for("router") is provider  # made once


def test_on_with_an_endpoint_exports_over_otlp_http(caplog):
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    [processor] = tracing.export_processors("http://127.0.0.1:4318/v1/traces")
    assert isinstance(processor, BatchSpanProcessor)
    processor.shutdown()  # type: ignore[no-untyped-call]  # nothing was sent: no span made
    assert tracing.export_processors(None) == []
    assert "not exported" in caplog.text


# ----------------------------------------------------------------------------- on


async def test_one_trace_spans_gateway_router_and_vault(collector, databases, keys_dir, tmp_path):
    async with platform(databases, keys_dir, tmp_path) as plat:
        collector.clear()
        submitted = await submit_a_confidential_job(plat)
    spans = list(collector.get_finished_spans())
    index = by_id(spans)

    [submit] = [
        s
        for s in spans
        if s.kind == SpanKind.SERVER
        and s.name == "POST /v1/jobs"
        and service_of(s).endswith("gateway")
    ]
    assert submit.attributes is not None
    assert submit.attributes["http.route"] == "/v1/jobs"
    assert submit.attributes["http.response.status_code"] == 202
    assert submit.attributes[tracing.REQUEST_ID_ATTRIBUTE] == "trace-test-submit-1"
    assert submitted.headers["X-Request-ID"] == "trace-test-submit-1"
    trace_id = submit.context.trace_id
    in_trace = [s for s in spans if s.context.trace_id == trace_id]

    # The router and the vault each served part of this request, as children of the gateway's
    # client spans, which are children of the gateway's server span.
    for peer in ("router", "vault"):
        served = [
            s
            for s in in_trace
            if s.kind == SpanKind.SERVER and service_of(s) == f"taskroute-{peer}"
        ]
        assert served, f"no {peer} span in the trace"
        for span in served:
            assert span.parent is not None
            assert span.parent.is_remote
            caller = index[span.parent.span_id]
            assert caller.kind == SpanKind.CLIENT
            assert service_of(caller) == "taskroute-gateway"
            assert caller.attributes is not None
            assert caller.attributes["peer.service"] == f"taskroute-{peer}"
            assert submit in ancestors(caller, index)
            assert span.attributes is not None
            assert span.attributes[tracing.REQUEST_ID_ATTRIBUTE] == "trace-test-submit-1"
            assert str(span.attributes["http.route"]).startswith("/")
            assert (
                span.name
                == f"{span.attributes['http.request.method']} {span.attributes['http.route']}"
            )

    # What the router received carried this trace's context.
    parents = {
        h["traceparent"].split("-")[1] for h in plat.received["router"] if "traceparent" in h
    }
    assert f"{trace_id:032x}" in parents

    # Database statements of each service, inside the trace, without their values.
    statements = [s for s in in_trace if "db.query.text" in (s.attributes or {})]
    assert {service_of(s) for s in statements} >= {"taskroute-gateway", "taskroute-router"}
    assert all(submit in ancestors(s, index) for s in statements)


async def test_no_confidential_value_reaches_any_span(collector, databases, keys_dir, tmp_path):
    async with platform(databases, keys_dir, tmp_path) as plat:
        submitted = await submit_a_confidential_job(plat)
        job_id = submitted.json()["id"]
        # Reading it back passes the sealed reference through the router and the gateway too.
        assert (await plat.client.get(f"/v1/admin/jobs/{job_id}", headers=plat.operator)).is_success
        # A value in a query string (here a made-up cursor) is not recorded either.
        await plat.client.get("/v1/admin/tenants", params={"cursor": CANARY}, headers=plat.operator)
    spans = list(collector.get_finished_spans())
    assert len(spans) > 20
    queries = [s.attributes["url.query"] for s in spans if "url.query" in (s.attributes or {})]
    # The request's own, and any the gateway's background feed made meanwhile (limit=...):
    # every value redacted.
    assert "cursor=REDACTED" in queries
    for query in queries:
        assert {part.split("=", 1)[1] for part in query.split("&")} == {"REDACTED"}, query
    for span in spans:
        text = json.dumps(
            {
                "name": span.name,
                "attributes": dict(span.attributes or {}),
                "events": [(e.name, dict(e.attributes or {})) for e in span.events],
                "resource": dict(span.resource.attributes),
                "status": span.status.description,
            },
            default=str,
        )
        assert CANARY not in text, span.name
        assert "219-09-9999" not in text
        assert OPERATOR_KEY not in text
        assert "Bearer" not in text
