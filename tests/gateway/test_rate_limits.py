"""Rate limits (services/gateway/api/edge.py, clients/rate_limiter.py): in memory, shared through
the machine's Redis by two real gateway processes, the fallback when Redis is unreachable, and a
Redis of the test's own (``redis-server``) stopped mid-run and started again.

Redis is ``TASKROUTE_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``); every test uses its
own key prefix. An unreachable Redis fails these tests (the fixture pings it), never skips them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import redis

from services.gateway.app import create_app
from services.gateway.clients import rate_limiter
from services.gateway.clients.rate_limiter import parse_limit
from services.gateway.settings import GatewaySettings
from tests.conftest import running
from tests.e2e.conftest import REPO_ROOT, free_port
from tests.gateway.conftest import OPERATOR_KEY, Platform, gateway_settings
from tests.gateway.test_api import assert_problem

REDIS_URL = os.environ.get("TASKROUTE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Two processes starting uvicorn and the gateway's lifespan take about a second each.
START_TIMEOUT_SECONDS = 30


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in the real Redis, deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
    client.ping()  # unreachable Redis: the test errors here, it is never skipped
    prefix = f"taskroute-test-{uuid.uuid4().hex}"
    try:
        yield prefix
    finally:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()


def limited_settings(databases, keys_dir, tmp_path, **fields) -> GatewaySettings:
    base = gateway_settings(databases, keys_dir, tmp_path)
    # Validated again (model_copy would not), so strings become the secrets they stand for.
    return GatewaySettings.model_validate({**base.model_dump(), **fields})


@pytest.fixture
async def small_limits(databases, keys_dir, tmp_path) -> AsyncIterator[Platform]:
    """The gateway alone, in memory, with 3 requests per key and 2 failed logins per address."""
    settings = limited_settings(
        databases, keys_dir, tmp_path, rate_limit="3/minute", failed_auth_rate_limit="2/minute"
    )
    app = create_app(settings)
    async with running(app) as client:
        yield Platform(app, client, databases, {"Authorization": f"Bearer {OPERATOR_KEY}"})


async def test_per_key_limit_with_headers_then_429(small_limits):
    answers = [
        await small_limits.client.get("/v1/admin/tenants", headers=small_limits.operator)
        for _ in range(4)
    ]
    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    assert [a.headers["RateLimit-Remaining"] for a in answers[:3]] == ["2", "1", "0"]
    for answer in answers[:3]:
        assert answer.headers["RateLimit-Limit"] == "3"
        assert 0 <= int(answer.headers["RateLimit-Reset"]) <= 60
    refused = answers[3]
    body = assert_problem(refused, 429)
    assert body["type"].endswith("rate-limited")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["RateLimit-Remaining"] == "0"
    # Health and docs are not limited.
    assert (await small_limits.client.get("/healthz")).status_code == 200


async def test_keys_have_separate_budgets(small_limits):
    created = await small_limits.client.post(
        "/v1/admin/tenants", json={"name": "Acme"}, headers=small_limits.operator
    )
    assert created.status_code == 201
    client_key = {"Authorization": f"Bearer {created.json()['api_key']}"}
    for _ in range(2):
        assert (
            await small_limits.client.get("/v1/admin/tenants", headers=small_limits.operator)
        ).status_code == 200
    assert_problem(
        await small_limits.client.get("/v1/admin/tenants", headers=small_limits.operator), 429
    )
    # The client's key still has its own budget (403: its role, not a limit).
    assert (
        await small_limits.client.get("/v1/admin/tenants", headers=client_key)
    ).status_code == 403


async def test_failed_authentication_is_limited_per_address(small_limits):
    bad = {"Authorization": "Bearer tr_client_aaaaaaaaaaaaaaaa_" + "a" * 52}
    first = await small_limits.client.get("/v1/admin/tenants", headers=bad)
    second = await small_limits.client.get("/v1/admin/tenants", headers={})
    third = await small_limits.client.get("/v1/admin/tenants", headers=bad)
    assert_problem(first, 401)
    assert_problem(second, 401)
    assert_problem(third, 429)
    assert "Retry-After" in third.headers
    # A valid key from the same address is not affected.
    ok = await small_limits.client.get("/v1/admin/tenants", headers=small_limits.operator)
    assert ok.status_code == 200


def test_memory_window_moves_and_forgets_idle_keys(monkeypatch):
    """The in-process moving window: refused while the limit-th last hit is inside the window,
    room again as each hit leaves it, and keys idle past their window dropped by the sweep."""
    clock = {"wall": 1_000_000.0, "mono": 500.0}
    # The module's clock only (its ``time`` import), not the test run's.
    monkeypatch.setattr(
        rate_limiter,
        "time",
        SimpleNamespace(time=lambda: clock["wall"], monotonic=lambda: clock["mono"]),
    )
    window = rate_limiter.MemoryMovingWindow()
    item = parse_limit("3/minute")

    def hit(who: str = "a") -> tuple[bool, int, int]:
        decision = window.hit(item, ("key", who))
        return decision.allowed, decision.remaining, decision.reset_after

    assert hit() == (True, 2, 60)
    clock["wall"] += 10
    assert [hit(), hit()] == [(True, 1, 50), (True, 0, 50)]
    assert hit() == (False, 0, 50)  # three in the last minute
    assert hit("b") == (True, 2, 60)  # another key, its own budget
    clock["wall"] += 51  # the first hit has left the window: room for one
    assert hit() == (True, 0, 9)
    assert hit() == (False, 0, 9)
    clock["wall"] += 61
    assert hit() == (True, 2, 60)  # everything before has left the window
    # Only "a" hit in the last minute: the sweep forgets "b".
    clock["mono"] += rate_limiter.MEMORY_SWEEP_SECONDS + 1
    hit()
    assert len(window) == 1
    assert window.hit(parse_limit("0/minute"), ("key", "a")).allowed is False


async def test_unreachable_redis_falls_back_to_memory_and_logs_once(
    databases, keys_dir, tmp_path, caplog
):
    closed_port = free_port()  # nothing listens there
    settings = limited_settings(
        databases,
        keys_dir,
        tmp_path,
        rate_limit="3/minute",
        redis_url=f"redis://127.0.0.1:{closed_port}/0",
    )
    app = create_app(settings)
    caplog.set_level(logging.INFO, logger="taskroute.gateway.rate_limits")
    async with running(app) as client:
        operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
        answers = [await client.get("/v1/admin/tenants", headers=operator) for _ in range(4)]
        assert app.state.rate_limiter.shared is False
    # Never a 500: the process enforces the limit on its own.
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1
    assert str(closed_port) not in caplog.text


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    """A Redis server of this test's own (the machine's must stay up for the other tests)."""
    program = shutil.which("redis-server")
    if program is None:
        pytest.fail("redis-server not found: the outage test stops and starts a Redis of its own")
    process = subprocess.Popen(
        [program, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
        finally:
            client.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait(timeout=10)


async def test_a_redis_outage_mid_run_falls_back_then_shares_again(
    databases, keys_dir, tmp_path, caplog, monkeypatch
):
    # Long enough that the four requests after the failure stay inside it on a slow machine.
    monkeypatch.setattr(rate_limiter, "REDIS_RETRY_SECONDS", 1.5)
    port = free_port()
    server = _start_redis(port)
    try:
        settings = limited_settings(
            databases,
            keys_dir,
            tmp_path,
            rate_limit="3/minute",
            redis_url=f"redis://127.0.0.1:{port}/0",
        )
        app = create_app(settings)
        caplog.set_level(logging.INFO, logger="taskroute.gateway.rate_limits")
        operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
        async with running(app) as client:
            limiter = app.state.rate_limiter

            async def statuses(count: int) -> list[int]:
                return [
                    (await client.get("/v1/admin/tenants", headers=operator)).status_code
                    for _ in range(count)
                ]

            assert await statuses(2) == [200, 200]
            assert limiter.shared is True
            _stop(server)  # mid-run: the pool holds connections to a server that is gone
            # Per process from here, its own count starting afresh; never a 500.
            assert await statuses(4) == [200, 200, 200, 429]
            assert limiter.shared is False
            server = _start_redis(port)  # an empty Redis: the shared count starts afresh too
            await asyncio.sleep(1.6)  # past the retry period
            assert await statuses(4) == [200, 200, 200, 429]
            assert limiter.shared is True
    finally:
        _stop(server)
    messages = [record.getMessage() for record in caplog.records]
    assert sum("unreachable" in message for message in messages) == 1
    assert sum("answering again" in message for message in messages) == 1
    assert str(port) not in caplog.text


# --- two real gateway processes, one Redis --------------------------------------------------


def _start_gateway(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "serve", "gateway", "--no-migrate"],
            cwd=REPO_ROOT,
            env={**env, "TASKROUTE_GATEWAY_PORT": str(port)},
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def _wait_alive(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"gateway not up in time:\n{log.read_text()[-3000:]}")


@pytest.mark.e2e
def test_two_gateway_processes_share_one_limit(databases, keys_dir, tmp_path, redis_prefix):
    """The sum of requests both replicas allow equals the one configured limit."""
    limit = 7
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKROUTE_")}
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "TASKROUTE_DATA_DIR": str(tmp_path),
            "TASKROUTE_SERVICE_KEYS_DIR": str(keys_dir),
            "TASKROUTE_GATEWAY_DATABASE_URL": databases["gateway"],
            "TASKROUTE_BOOTSTRAP_OPERATOR_KEY": OPERATOR_KEY,
            "TASKROUTE_GATEWAY_REDIS_URL": REDIS_URL,
            "TASKROUTE_GATEWAY_REDIS_KEY_PREFIX": redis_prefix,
            "TASKROUTE_GATEWAY_RATE_LIMIT": f"{limit}/minute",
            "TASKROUTE_LOG_LEVEL": "WARNING",
        }
    )
    ports = [free_port(), free_port()]
    logs = [tmp_path / f"gateway-{i}.log" for i in range(2)]
    processes = [_start_gateway(env, port, log) for port, log in zip(ports, logs, strict=True)]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url, process, log in zip(urls, processes, logs, strict=True):
            _wait_alive(url, process, log)
        allowed = dict.fromkeys(urls, 0)
        refused = 0
        headers = {"Authorization": f"Bearer {OPERATOR_KEY}"}
        for i in range(3 * limit):
            url = urls[i % 2]
            answer = httpx.get(f"{url}/v1/admin/tenants", headers=headers, timeout=10)
            if answer.status_code == 200:
                allowed[url] += 1
            else:
                assert answer.status_code == 429, answer.text
                refused += 1
        assert sum(allowed.values()) == limit, allowed
        assert all(count > 0 for count in allowed.values())  # both replicas served
        assert refused == 2 * limit
        for log in logs:
            assert "unreachable" not in log.read_text()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
