"""Request metrics of every service app: latency by route template, status class, /metrics."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from shared.app import create_service_app
from shared.metrics import UNMATCHED_ROUTE, route_template, sample_value, status_class
from tests.conftest import running

COUNT = "taskroute_http_request_duration_seconds_count"


def build_app(service: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield

    app = create_service_app(title="t", description="d", lifespan=lifespan, service=service)

    @app.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        """One thing."""
        return {"id": thing_id}

    @app.get("/boom")
    async def boom() -> None:
        """Fails."""
        raise RuntimeError("boom")

    return app


def labels(service: str, route: str, status: str, method: str = "GET") -> dict[str, str]:
    return {"service": service, "method": method, "route": route, "status_class": status}


async def test_requests_are_counted_by_route_template_not_raw_path():
    service = "metrics-template"
    before = sample_value(COUNT, labels(service, "/things/{thing_id}", "2xx"))
    async with running(build_app(service)) as client:
        for thing_id in ("a1", "b2", "c3"):
            assert (await client.get(f"/things/{thing_id}")).status_code == 200
        scraped = await client.get("/metrics")
    assert sample_value(COUNT, labels(service, "/things/{thing_id}", "2xx")) == before + 3
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert 'route="/things/{thing_id}"' in scraped.text
    for thing_id in ("a1", "b2", "c3"):
        assert f"/things/{thing_id}" not in scraped.text  # no raw path, ever
    names = {family.name for family in text_string_to_metric_families(scraped.text)}
    assert "taskroute_http_request_duration_seconds" in names


async def test_unmatched_paths_share_one_series_and_errors_count_as_5xx():
    service = "metrics-errors"
    unmatched = labels(service, UNMATCHED_ROUTE, "4xx")
    failed = labels(service, "/boom", "5xx")
    before_unmatched, before_failed = sample_value(COUNT, unmatched), sample_value(COUNT, failed)
    async with running(build_app(service)) as client:
        assert (await client.get("/no/such/path/1")).status_code == 404
        assert (await client.get("/no/such/path/2")).status_code == 404
        assert (await client.get("/boom")).status_code == 500
    assert sample_value(COUNT, unmatched) == before_unmatched + 2
    assert sample_value(COUNT, failed) == before_failed + 1


async def test_metrics_stays_out_of_the_openapi_schema():
    async with running(build_app("metrics-schema")) as client:
        schema = (await client.get("/openapi.json")).json()
    assert "/metrics" not in schema["paths"]
    assert "/things/{thing_id}" in schema["paths"]


def test_status_classes():
    assert [status_class(s) for s in (200, 201, 302, 404, 503, 99, 600)] == [
        "2xx",
        "2xx",
        "3xx",
        "4xx",
        "5xx",
        "5xx",
        "5xx",
    ]
    assert route_template({"type": "http"}) == UNMATCHED_ROUTE
