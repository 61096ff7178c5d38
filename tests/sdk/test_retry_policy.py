"""The retry rules of the client's core, on real request and response values (no I/O)."""

from __future__ import annotations

import random

import httpx
import pytest

from services.sdk import RetryPolicy, ServiceUnavailableError, TaskrouteConnectionError
from services.sdk._core import Operation, Request, Settled, settle

GET = Request("GET", "/v1/jobs")
POST_WITH_KEY = Request("POST", "/v1/jobs", idempotency_key="k-1", has_body=True)
POST_WITHOUT_KEY = Request("POST", "/v1/jobs", has_body=True)


def answer(
    status: int, headers: dict[str, str] | None = None, problem: str = "x"
) -> httpx.Response:
    body = {"type": f"https://taskroute.dev/problems/{problem}", "title": "t", "status": status}
    return httpx.Response(status, json=body, headers=headers)


def policy(**overrides: float) -> RetryPolicy:
    return RetryPolicy(rng=random.Random(7), **overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize("request_", [GET, POST_WITH_KEY])
def test_retryable_answers_are_retried_with_bounded_backoff(request_: Request) -> None:
    rules = policy(backoff=1.0, max_backoff=4.0)
    for attempt in range(3):
        wait = rules.delay(request_, attempt, answer(503))
        assert 0 <= wait <= min(4.0, 2**attempt)
    assert rules.delay(request_, 3, answer(503)) == -1  # max_retries spent


def test_a_post_without_idempotency_key_is_never_retried() -> None:
    rules = policy()
    assert rules.delay(POST_WITHOUT_KEY, 0, answer(503)) == -1
    assert rules.delay(POST_WITHOUT_KEY, 0, httpx.ConnectError("refused")) == -1


def test_retry_after_is_honoured_and_a_long_one_is_left_to_the_caller() -> None:
    rules = policy(backoff=0.5, max_retry_after=60.0)
    wait = rules.delay(GET, 0, answer(429, {"Retry-After": "3"}))
    assert 3.0 <= wait <= 3.5
    assert rules.delay(GET, 0, answer(429, {"Retry-After": "120"})) == -1


def test_only_the_in_flight_conflict_is_retried() -> None:
    rules = policy()
    assert rules.delay(POST_WITH_KEY, 0, answer(409, problem="idempotency-in-flight")) >= 0
    assert rules.delay(POST_WITH_KEY, 0, answer(409, problem="invalid-transition")) == -1
    for status in (400, 401, 403, 404, 422, 500):
        assert rules.delay(GET, 0, answer(status)) == -1


def test_settle_returns_the_value_a_wait_or_a_typed_error() -> None:
    operation = Operation(GET, lambda body: body["n"])
    rules = policy(max_retries=1)
    assert settle(operation, rules, 0, httpx.Response(200, json={"n": 3})) == Settled(3)
    assert isinstance(settle(operation, rules, 0, answer(503)), float)
    with pytest.raises(ServiceUnavailableError) as down:
        settle(operation, rules, 1, answer(503, {"X-Request-ID": "r-1"}))
    assert down.value.request_id == "r-1"
    with pytest.raises(TaskrouteConnectionError, match="2 attempt"):
        settle(operation, rules, 1, httpx.ConnectError("refused"))
