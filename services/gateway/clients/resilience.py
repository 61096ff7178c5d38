"""Timeouts, bounded retries and a circuit breaker on the gateway's calls to router and vault.

Design
------
* **Timeout.** Every call has the client's timeout (``TASKROUTE_UPSTREAM_TIMEOUT_SECONDS``),
  and the whole call, retries included, fits in that same budget: a retry only starts if time
  is left, and each attempt gets only the time that is left.
* **Retries** happen only where repeating is harmless: reads, and writes the caller marked
  ``idempotent`` (the job id is deterministic, a grant is only signed, a dry run stores
  nothing). They are for failures that say nothing was done or nothing was answered:
  connection errors, timeouts, 502, 503 and 504. At most ``retries`` of them (2 by default),
  after a full-jitter exponential wait (``backoff_base``, doubled, capped). A 4xx is an answer,
  never retried.
* **Circuit breaker**, one per upstream (per gateway process: each replica learns for itself
  that a peer is down, which costs it ``failures`` calls). Closed: calls pass and consecutive
  failed calls (the kinds above, after their retries) are counted; at ``failures`` in a row it
  opens. Open: calls fail at
  once with 503 problem+json and ``Retry-After`` instead of waiting for the timeout. After
  ``reset_seconds`` it is half-open: one call is let through as a trial (a single attempt,
  no retries); success closes it,
  failure opens it for another cool-down, and other calls meanwhile are refused as if open.
  State is exported as ``taskroute_gateway_upstream_circuit_state{upstream}`` (0 closed,
  1 half-open, 2 open); retries and refusals are counted too.

Settings (``TASKROUTE_GATEWAY_UPSTREAM_*``, see docs/operations.md) are read once per process.
The breaker's clock is injectable so tests need no sleeping.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import httpx
from prometheus_client import Counter, Gauge
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ServiceUnavailable
from shared.http import (
    UNREACHABLE_STATUSES,
    UpstreamError,
    UpstreamUnreachable,
    answer_of,
    retry_after_of,
)

# Worth a retry for an idempotent call, and a failure for the breaker.
RETRYABLE_STATUSES = UNREACHABLE_STATUSES
# A retry is not started with less time than this left in the call's budget.
MIN_ATTEMPT_SECONDS = 0.05

CIRCUIT_STATE = Gauge(
    "taskroute_gateway_upstream_circuit_state",
    "Circuit breaker toward an upstream service: 0 closed, 1 half-open, 2 open.",
    ["upstream"],
)
UPSTREAM_RETRIES = Counter(
    "taskroute_gateway_upstream_retries_total",
    "Calls to an upstream service repeated after a connection error, timeout or 502/503/504.",
    ["upstream"],
)
CIRCUIT_REFUSALS = Counter(
    "taskroute_gateway_upstream_circuit_refusals_total",
    "Calls answered 503 at once because the upstream's circuit was open.",
    ["upstream"],
)


class ResilienceSettings(BaseSettings):
    """Retry and breaker settings of the gateway's upstream calls."""

    model_config = SettingsConfigDict(
        env_prefix="TASKROUTE_GATEWAY_UPSTREAM_", env_file=".env", extra="ignore"
    )

    # Extra attempts after the first, for idempotent calls only.
    retries: int = Field(default=2, ge=0, le=5)
    # The first retry waits up to this long (full jitter), doubling per retry.
    backoff_base_seconds: float = Field(default=0.05, gt=0, le=5)
    backoff_max_seconds: float = Field(default=1.0, gt=0, le=30)
    # Consecutive failures that open an upstream's circuit.
    breaker_failures: int = Field(default=5, ge=1, le=1000)
    # How long an open circuit refuses calls before letting one trial through.
    breaker_reset_seconds: float = Field(default=5.0, gt=0, le=3600)


class CircuitState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitOpen(UpstreamUnreachable):
    """503 at once: the upstream failed repeatedly and its cool-down has not passed."""

    def __init__(self, service: str, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(
            f"The {service} service is unavailable (it failed repeatedly); "
            f"retry in {self.retry_after} s."
        )


@dataclass
class CircuitBreaker:
    """Closed → open after ``failures`` consecutive failures → half-open after ``reset_seconds``
    with a single trial call → closed on its success, open again on its failure."""

    service: str
    failures: int = 5
    reset_seconds: float = 5.0
    clock: Callable[[], float] = time.monotonic
    state: CircuitState = CircuitState.CLOSED
    consecutive_failures: int = 0
    opened_at: float = 0.0
    trial_in_flight: bool = False
    _listeners: list[Callable[[CircuitState], None]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._publish()

    def before_call(self) -> None:
        """Let a call through, or raise :class:`CircuitOpen`."""
        if self.state is CircuitState.CLOSED:
            return
        waited = self.clock() - self.opened_at
        if self.state is CircuitState.OPEN and waited >= self.reset_seconds:
            self._set(CircuitState.HALF_OPEN)
        if self.state is CircuitState.HALF_OPEN and not self.trial_in_flight:
            self.trial_in_flight = True
            return
        CIRCUIT_REFUSALS.labels(self.service).inc()
        raise CircuitOpen(self.service, retry_after=max(self.reset_seconds - waited, 1.0))

    def refusing(self) -> bool:
        """Whether a call now would be refused at once (open and cooling down, or half-open
        with its trial in flight), without counting it as a refusal."""
        if self.state is CircuitState.CLOSED:
            return False
        if self.state is CircuitState.OPEN:
            return self.clock() - self.opened_at < self.reset_seconds
        return self.trial_in_flight

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self.trial_in_flight = False
        if self.state is not CircuitState.CLOSED:
            self._set(CircuitState.CLOSED)

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        was_trial = self.state is CircuitState.HALF_OPEN
        self.trial_in_flight = False
        if was_trial or self.consecutive_failures >= self.failures:
            self.opened_at = self.clock()
            self._set(CircuitState.OPEN)

    def release_trial(self) -> None:
        """A trial call that ended without telling anything (cancelled): let another try."""
        self.trial_in_flight = False

    def _set(self, state: CircuitState) -> None:
        self.state = state
        self._publish()

    def _publish(self) -> None:
        CIRCUIT_STATE.labels(self.service).set(int(self.state))


# One breaker per upstream HTTP client, i.e. per upstream per gateway process (the app builds
# one client per peer at start-up). Weak keys: a test's client and its breaker go together.
_BREAKERS: weakref.WeakKeyDictionary[httpx.AsyncClient, CircuitBreaker] = (
    weakref.WeakKeyDictionary()
)
_SETTINGS: ResilienceSettings | None = None


def resilience_settings() -> ResilienceSettings:
    global _SETTINGS
    if _SETTINGS is None:
        _SETTINGS = ResilienceSettings()
    return _SETTINGS


def breaker_for(client: httpx.AsyncClient, service: str) -> CircuitBreaker:
    """The breaker of the upstream ``client`` talks to (created on first use)."""
    breaker = _BREAKERS.get(client)
    if breaker is None:
        breaker = _BREAKERS[client] = new_breaker(service)
    return breaker


def new_breaker(service: str) -> CircuitBreaker:
    """A breaker with the configured thresholds. ``service`` names it in the metrics; a
    background worker polling an upstream gets its own (``router-feed``), so its failures
    neither open the circuit requests go through nor wait on it."""
    settings = resilience_settings()
    return CircuitBreaker(
        service=service,
        failures=settings.breaker_failures,
        reset_seconds=settings.breaker_reset_seconds,
    )


def install_breaker(client: httpx.AsyncClient, breaker: CircuitBreaker) -> None:
    """Use ``breaker`` for ``client``'s upstream (tests: a breaker on a controlled clock)."""
    _BREAKERS[client] = breaker


def circuit_state(client: httpx.AsyncClient, service: str) -> str:
    """The circuit state of ``client``'s upstream, as a health detail: closed, half_open or
    open."""
    return breaker_for(client, service).state.name.lower()


class _Retryable(Exception):
    """An attempt failed in a way a retry may fix (connection error, timeout, 502-504)."""

    def __init__(self, error: ServiceUnavailable) -> None:
        super().__init__(str(error))
        self.error = error


def _budget(client: httpx.AsyncClient) -> float:
    """The whole call's time budget: the client's configured (read) timeout."""
    timeout = client.timeout
    return float(timeout.read or timeout.connect or 10.0)


async def resilient_call(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    *,
    service: str,
    idempotent: bool | None = None,
    breaker: CircuitBreaker | None = None,
    settings: ResilienceSettings | None = None,
    sleep: Callable[[float], Any] = asyncio.sleep,
    **kwargs: Any,
) -> Any:
    """Send one logical request to ``service``: breaker first, bounded retries if idempotent
    (reads are, writes only when the caller says so), all within the client's timeout."""
    settings = settings or resilience_settings()
    breaker = breaker or breaker_for(client, service)
    if idempotent is None:
        idempotent = method.upper() in {"GET", "HEAD", "OPTIONS", "PUT", "DELETE"}
    breaker.before_call()
    # A half-open circuit's trial is one attempt: it only has to tell whether the peer is back.
    trial = breaker.state is CircuitState.HALF_OPEN
    attempts = 1 + (settings.retries if idempotent and not trial else 0)
    budget = _budget(client)
    started = time.monotonic()
    try:
        for attempt in range(attempts):
            remaining = budget - (time.monotonic() - started)
            try:
                result = await _attempt(
                    client, method, path, service=service, timeout=remaining, **kwargs
                )
            except _Retryable as failure:
                wait = random.uniform(
                    0,
                    min(settings.backoff_max_seconds, settings.backoff_base_seconds * 2**attempt),
                )
                left = budget - (time.monotonic() - started) - wait
                if attempt + 1 >= attempts or left < MIN_ATTEMPT_SECONDS:
                    breaker.record_failure()  # one failed call, however many attempts
                    raise failure.error from None
                UPSTREAM_RETRIES.labels(service).inc()
                await sleep(wait)
                continue
            breaker.record_success()
            return result
    except UpstreamError:
        breaker.record_success()  # a 4xx is an answer: the upstream is up
        raise
    except ServiceUnavailable:
        if breaker.trial_in_flight:
            breaker.release_trial()
        raise
    except BaseException:
        # Neither an outage nor an answer (bad JSON, a cancelled request): the breaker learns
        # nothing from it, but a trial must not stay in flight for ever.
        breaker.release_trial()
        raise
    raise AssertionError("unreachable")  # pragma: no cover


async def _attempt(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    *,
    service: str,
    timeout: float,
    **kwargs: Any,
) -> Any:
    seconds = max(timeout, MIN_ATTEMPT_SECONDS)
    connect = min(seconds, client.timeout.connect or seconds)
    try:
        response = await client.request(
            method,
            _absolute_url(client.base_url, path),
            timeout=httpx.Timeout(seconds, connect=connect),
            **kwargs,
        )
    except httpx.TransportError as exc:
        error = UpstreamUnreachable(f"The {service} service is unreachable.")
        error.__cause__ = exc
        raise _Retryable(error) from exc
    if response.status_code in RETRYABLE_STATUSES:
        raise _Retryable(
            UpstreamUnreachable(
                f"The {service} service failed to answer.", retry_after=retry_after_of(response)
            )
        )
    return answer_of(response, service)


@functools.lru_cache(maxsize=1024)
def _absolute_url(base_url: httpx.URL, path: str) -> httpx.URL:
    """``path`` under the client's base URL, exactly as httpx merges a relative one, kept:
    httpx parses and merges a relative URL on every request (a third of building one), and
    the hot paths (submit, seal) are always the same. Bounded, so paths carrying ids only
    cycle through."""
    relative = httpx.URL(path)
    return base_url.copy_with(raw_path=base_url.raw_path + relative.raw_path.lstrip(b"/"))
