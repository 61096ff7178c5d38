"""The common edge: problem+json for every error, request ids, body limits."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from pydantic import BaseModel

from shared.app import create_service_app
from shared.errors import Conflict
from shared.middleware import RequestContextMiddleware
from tests.conftest import running


class Thing(BaseModel):
    count: int


def build_app() -> FastAPI:
    async def lifespan(_: FastAPI):
        yield

    from contextlib import asynccontextmanager

    app = create_service_app(title="t", description="d", lifespan=asynccontextmanager(lifespan))

    @app.post("/things")
    async def make(thing: Thing) -> Thing:
        return thing

    @app.get("/conflict")
    async def conflict() -> None:
        raise Conflict("already claimed")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret-value-in-exception")

    return app


async def test_errors_are_problem_json_with_the_request_id():
    async with running(build_app()) as client:
        response = await client.get("/conflict", headers={"X-Request-ID": "abc-123"})
        assert response.status_code == 409
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["x-request-id"] == "abc-123"
        body = response.json()
        assert body["status"] == 409
        assert body["detail"] == "already claimed"
        assert body["request_id"] == "abc-123"
        assert body["type"].endswith("/conflict")


async def test_framework_errors_are_problem_json_too():
    async with running(build_app()) as client:
        missing = await client.get("/nowhere")
        wrong_method = await client.delete("/things")
        invalid = await client.post("/things", json={"count": "many"})
    assert missing.status_code == 404
    assert missing.json()["title"] == "Not found"
    assert wrong_method.status_code == 405
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["field"] == "count"
    assert "many" not in invalid.text  # the offending value is not echoed
    for response in (missing, wrong_method, invalid):
        assert response.headers["content-type"] == "application/problem+json"


async def test_an_unexpected_error_is_a_500_problem_and_its_text_is_not_logged(caplog):
    caplog.set_level(logging.INFO)
    async with running(build_app()) as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert "secret-value-in-exception" not in response.text
    assert "secret-value-in-exception" not in caplog.text
    assert response.json()["request_id"]


async def test_a_bad_request_id_is_replaced():
    async with running(build_app()) as client:
        response = await client.get("/conflict", headers={"X-Request-ID": "bad id\twith spaces"})
    assert response.headers["x-request-id"] != "bad id\twith spaces"
    assert len(response.headers["x-request-id"]) == 32


async def test_bodies_over_the_limit_are_refused_with_413():
    app = build_app()
    app.user_middleware.clear()
    app.add_middleware(RequestContextMiddleware, max_body_bytes=64)
    async with running(app) as client:
        response = await client.post("/things", content=b'{"count": 1' + b" " * 100 + b"}")
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
