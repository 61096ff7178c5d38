"""Retries against the real edge: the real rate limiter's 429s and a real outage's 503s."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from services.sdk import (
    RateLimitError,
    RetryPolicy,
    ServiceUnavailableError,
    TaskrouteClient,
    TaskrouteConnectionError,
)
from tests.e2e.conftest import Platform, free_port
from tests.sdk.conftest import CLINICAL_DESCRIPTION, new_tenancy

pytestmark = pytest.mark.e2e

NO_RETRY = RetryPolicy(max_retries=0)
# Outlasts a few seconds of outage (full jitter: expect about half the cap sum), quick to test.
PATIENT = RetryPolicy(max_retries=10, backoff=0.5, max_backoff=2.0)


@contextmanager
def observed(
    platform: Platform, api_key: str, retry: RetryPolicy, keys: list[str | None] | None = None
) -> Iterator[tuple[TaskrouteClient, list[int]]]:
    """A client, and the status of every answer its HTTP client received.

    With ``keys``, the Idempotency-Key of every request sent is appended to it.
    """
    statuses: list[int] = []
    sent = keys if keys is not None else []
    with (
        httpx.Client(
            base_url=platform.gateway_url,
            timeout=20,
            event_hooks={
                "request": [lambda r: sent.append(r.headers.get("Idempotency-Key"))],
                "response": [lambda r: statuses.append(r.status_code)],
            },
        ) as http,
        TaskrouteClient(platform.gateway_url, api_key, http_client=http, retry=retry) as client,
    ):
        yield client, statuses


def test_429_is_retried_after_retry_after(limited_platform: Platform) -> None:
    tenancy = new_tenancy(limited_platform)
    with observed(limited_platform, tenancy.client_key, PATIENT) as (client, statuses):
        started = time.monotonic()
        for _ in range(12):
            assert client.list_jobs().data == []
        elapsed = time.monotonic() - started
    assert 429 in statuses
    assert statuses.count(200) == 12
    # Each refusal said Retry-After >= 1 s and the client waited at least that long.
    assert elapsed >= 1.0


def _spend_the_budget(client: TaskrouteClient) -> None:
    for _ in range(20):  # 4 a second are allowed: one of these is refused
        client.list_jobs()


def test_429_without_retries_is_a_typed_error(limited_platform: Platform) -> None:
    tenancy = new_tenancy(limited_platform)
    with observed(limited_platform, tenancy.client_key, NO_RETRY) as (client, _):
        with pytest.raises(RateLimitError) as refused:
            _spend_the_budget(client)
    error = refused.value
    assert error.status == 429
    assert error.problem == "rate-limited"
    assert error.retry_after is not None
    assert error.retry_after >= 1
    assert error.request_id


@contextmanager
def router_frozen(platform: Platform, seconds: float) -> Iterator[None]:
    """The router stops answering (SIGSTOP) and resumes by itself ``seconds`` later (SIGCONT).

    A frozen process, unlike a killed one, resumes at once: no restart of a slow start-up. The
    gateway's upstream timeout is short on this platform, so each call meanwhile is a quick 503.
    """
    pid = platform.pid("router")
    os.kill(pid, signal.SIGSTOP)
    thaw = threading.Timer(seconds, os.kill, args=(pid, signal.SIGCONT))
    thaw.start()
    try:
        yield
    finally:
        thaw.cancel()
        os.kill(pid, signal.SIGCONT)


def test_503_without_retries_is_a_typed_error(limited_platform: Platform) -> None:
    tenancy = new_tenancy(limited_platform)
    with (
        router_frozen(limited_platform, seconds=30),
        observed(limited_platform, tenancy.client_key, NO_RETRY) as (client, _),
    ):
        with pytest.raises(ServiceUnavailableError) as down:
            client.list_jobs()
    assert down.value.status == 503
    assert down.value.problem


def test_a_read_during_an_outage_is_retried_until_it_answers(limited_platform: Platform) -> None:
    tenancy = new_tenancy(limited_platform)
    with (
        observed(limited_platform, tenancy.client_key, PATIENT) as (client, statuses),
        router_frozen(limited_platform, seconds=3),
    ):
        assert client.list_jobs().data == []
    assert 503 in statuses  # it met the outage, and waited it out
    assert statuses[-1] == 200


def test_a_post_during_an_outage_is_retried_with_one_idempotency_key(
    limited_platform: Platform,
) -> None:
    # Classify: a POST that goes to the router and changes nothing, so only the retrying shows.
    # (A state change retried after the gateway's own timeout can find the first attempt done
    # after all: the router may still process a request the gateway gave up on.)
    tenancy = new_tenancy(limited_platform)
    keys: list[str | None] = []
    with (
        observed(limited_platform, tenancy.client_key, PATIENT, keys) as (client, statuses),
        router_frozen(limited_platform, seconds=3),
    ):
        [result] = client.classify([{"description": CLINICAL_DESCRIPTION}])
    assert result.domain == "clinical"
    assert 503 in statuses
    assert statuses[-1] == 200
    # Every attempt carried the same key, made for this one call.
    assert len(keys) == len(statuses) > 1
    assert len(set(keys)) == 1
    assert keys[0] is not None


def test_unreachable_gateway_is_a_connection_error() -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    retry = RetryPolicy(max_retries=2, backoff=0.05)
    with TaskrouteClient(closed, "tr_client_x_y", retry=retry) as client:
        with pytest.raises(TaskrouteConnectionError, match="3 attempt"):
            client.list_jobs()
