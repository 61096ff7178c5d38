"""Timeouts, bounded retries and the circuit breaker toward router and vault, against real HTTP
servers on loopback ports (a small asyncio server whose answers a test scripts, and the real
router app under uvicorn) and a breaker on a clock the test moves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest
import uvicorn

from services.gateway.app import create_app
from services.gateway.clients.resilience import (
    CircuitBreaker,
    CircuitState,
    ResilienceSettings,
    install_breaker,
)
from services.gateway.clients.router import RouterClient
from services.router.app import create_app as create_router_app
from services.router.settings import RouterSettings
from shared.errors import ServiceUnavailable
from shared.http import UpstreamError
from tests.conftest import running
from tests.e2e.conftest import free_port
from tests.gateway.conftest import OPERATOR_KEY, gateway_settings
from tests.gateway.test_api import assert_problem

FAST = ResilienceSettings(retries=2, backoff_base_seconds=0.01, backoff_max_seconds=0.02)


class Clock:
    """A monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class ScriptedServer:
    """An HTTP/1.1 server on a loopback port answering each request with the next scripted
    status (then 200 ``{}``), or never answering (``hang``)."""

    port: int
    script: list[int] = field(default_factory=list)
    hang: bool = False
    # Sent as Retry-After with every non-2xx answer, if set.
    retry_after: str | None = None
    requests: list[str] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                await reader.readexactly(length)
                self.requests.append(lines[0])
                if self.hang:
                    await asyncio.sleep(30)
                status = self.script.pop(0) if self.script else 200
                body = b'{"data": [], "has_more": false, "next_cursor": null}'
                pace = (
                    f"Retry-After: {self.retry_after}\r\n"
                    if self.retry_after is not None and status >= 300
                    else ""
                )
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{pace}"
                    # Latin-1: a header byte above 0x7f goes out as that one byte.
                    f"Content-Length: {len(body)}\r\n\r\n".encode("latin-1")
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def scripted(**options: object) -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer(port=free_port(), **options)  # type: ignore[arg-type]
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _client(port: int, timeout: float = 2.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=timeout)


def test_breaker_opens_after_consecutive_failures_and_lets_one_trial_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(service="router", failures=3, reset_seconds=5, clock=clock)
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    breaker.before_call()
    breaker.record_success()  # a success resets the count
    assert not breaker.refusing()
    for _ in range(3):
        breaker.before_call()
        breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    assert breaker.refusing()
    with pytest.raises(ServiceUnavailable) as refused:
        breaker.before_call()
    assert refused.value.headers() == {"Retry-After": "5"}
    clock.now += 5
    assert not breaker.refusing()  # cooled down: the next call is the trial
    breaker.before_call()  # the trial
    assert breaker.state.name == "HALF_OPEN"  # (mypy narrowed the state to OPEN above)
    assert breaker.refusing()
    with pytest.raises(ServiceUnavailable):
        breaker.before_call()  # only one trial at a time
    breaker.record_failure()  # the trial failed: open for another cool-down
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(ServiceUnavailable):
        breaker.before_call()
    clock.now += 5
    breaker.before_call()
    breaker.record_success()
    assert breaker.state.name == "CLOSED"
    breaker.before_call()


async def test_reads_are_retried_on_503_and_writes_are_not() -> None:
    async with scripted(script=[503, 502]) as server, _client(server.port) as http:
        breaker = CircuitBreaker(service="router", failures=10)
        install_breaker(http, breaker)
        router = RouterClient(http)
        page = await router.list_teams(limit=5, cursor=None, active=None, tier=None)
        assert page["data"] == []
        assert len(server.requests) == 3  # two retries, then the answer
        assert breaker.state is CircuitState.CLOSED

        server.script = [503]
        server.requests.clear()
        with pytest.raises(ServiceUnavailable):
            await router.cancel_job(
                "00000000-0000-4000-8000-000000000000", tenant_id="t", reason=None
            )
        assert len(server.requests) == 1  # a cancel is not repeated blindly

        server.script = [404]
        server.requests.clear()
        with pytest.raises(UpstreamError):
            await router.get_job("00000000-0000-4000-8000-000000000000", tenant_id="t")
        assert len(server.requests) == 1  # an answer is not retried


@pytest.mark.parametrize(
    ("upstream_says", "client_is_told"),
    [
        (None, "2"),
        ("7", "7"),
        ("0", "1"),
        ("86400", "300"),
        ("Wed, 21 Oct 2026 07:28:00 GMT", "2"),
        ("\u00b2", "2"),  # a digit to str.isdigit(), not to int()
    ],
)
async def test_a_503_says_when_to_retry_passing_on_the_upstreams_own_pace(
    upstream_says: str | None, client_is_told: str
) -> None:
    """Every 503 carries Retry-After: the upstream's own (in seconds, bounded), else ours."""
    async with scripted(script=[503], retry_after=upstream_says) as server:
        async with _client(server.port) as http:
            install_breaker(http, CircuitBreaker(service="router", failures=10))
            with pytest.raises(ServiceUnavailable) as refused:
                await RouterClient(http).cancel_job(
                    "00000000-0000-4000-8000-000000000000", tenant_id="t", reason=None
                )
    assert refused.value.headers() == {"Retry-After": client_is_told}


async def test_a_hanging_upstream_costs_one_timeout_budget_not_three() -> None:
    async with scripted(hang=True) as server, _client(server.port, timeout=0.3) as http:
        install_breaker(http, CircuitBreaker(service="router", failures=10))
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            await RouterClient(http).list_teams(limit=5, cursor=None, active=None, tier=None)
        elapsed = time.monotonic() - started
        assert elapsed < 0.6, elapsed  # retries share the 0.3 s budget


@pytest.fixture
def router_port() -> int:
    return free_port()


async def test_a_dead_router_answers_503_at_once_then_heals(
    databases, keys_dir, tmp_path, router_port
) -> None:
    """The gateway toward a closed port: after a few failures the circuit opens and requests
    are refused at once; a router started meanwhile is not called until the cool-down passes;
    then one trial closes the circuit again."""
    settings = gateway_settings(databases, keys_dir, tmp_path)
    settings.router_url = f"http://127.0.0.1:{router_port}"
    app = create_app(settings, transports={})
    clock = Clock()
    async with running(app) as client:
        breaker = CircuitBreaker(service="router", failures=3, reset_seconds=10, clock=clock)
        install_breaker(app.state.router_http, breaker)
        operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
        for _ in range(3):  # three failed calls (each of three refused attempts) open it
            assert breaker.state is CircuitState.CLOSED
            failed = await client.get("/v1/admin/teams", headers=operator)
            assert "unreachable" in assert_problem(failed, 503)["detail"]
            assert failed.headers["Retry-After"] == "2"
        assert breaker.state is CircuitState.OPEN

        router_app = create_router_app(
            RouterSettings(
                database_url=databases["router"], data_dir=tmp_path, service_keys_dir=keys_dir
            )
        )
        server = uvicorn.Server(
            uvicorn.Config(router_app, host="127.0.0.1", port=router_port, log_level="warning")
        )
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:
                await asyncio.sleep(0.02)
            started = time.monotonic()
            refused = await client.get("/v1/admin/teams", headers=operator)
            assert time.monotonic() - started < 0.5
            problem = assert_problem(refused, 503)
            assert "failed repeatedly" in problem["detail"]
            assert refused.headers["Retry-After"] == "10"

            clock.now += 10  # the cool-down passes: one trial goes to the (now running) router
            healed = await client.get("/v1/admin/teams", headers=operator)
            assert healed.status_code == 200, healed.text
            assert breaker.state.name == "CLOSED"
            metrics = await client.get("/metrics")
            assert 'taskroute_gateway_upstream_circuit_state{upstream="router"} 0.0' in (
                metrics.text
            )
        finally:
            server.should_exit = True
            await serving
