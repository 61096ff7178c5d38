"""Rate limits shared by every gateway replica (Redis) with a per-process fallback (memory).

Design
------
The algorithm is the *moving window* of the ``limits`` library (a log of hits per key in the
last window: exact, no burst at window edges). With ``TASKROUTE_GATEWAY_REDIS_URL`` set, the log
lives in Redis (an atomic Lua script per hit), so several gateway processes share one limit;
without it, in this process's memory (:class:`MemoryMovingWindow`: the same rule, run inline on
the event loop; the library's memory storage ran an expiry pass on a worker thread per key on
every hit, about 5 % of the gateway's CPU under load).

Redis unreachable: every Redis call is bounded by ``redis_timeout_seconds`` (socket timeouts and
an ``asyncio`` deadline around the whole call). On any failure the limiter answers from its
in-memory limiter instead (each replica then enforces the limit on its own: looser by the
number of replicas, never absent), logs one warning for the outage, and tries Redis again after
``REDIS_RETRY_SECONDS``; when Redis answers again it logs that once too. A rate limit store is
never a reason to answer 500 or to refuse traffic.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import ConnectionPool

logger = logging.getLogger("taskroute.gateway.rate_limits")

# After a Redis failure, requests use the memory limiter for this long before Redis is tried
# again: one slow probe per 5 s instead of one per request while Redis is down.
REDIS_RETRY_SECONDS = 5.0


def parse_limit(value: str) -> RateLimitItem:
    """``"100/minute"`` and friends (the ``limits`` notation); ValueError if malformed."""
    try:
        return parse(value)
    except ValueError:
        raise ValueError(
            "must be a rate such as '100/minute', '10/second' or '1000 per hour'"
        ) from None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    # Seconds until the window frees room again.
    reset_after: int


# How often the in-memory log drops the keys whose hits have all left their window: bounds its
# size by the keys seen in the last window (plus this), e.g. the source addresses of failed
# authentications, without a pass per hit.
MEMORY_SWEEP_SECONDS = 10.0


class MemoryMovingWindow:
    """The moving window of ``limits`` in this process's memory, without threads or tasks.

    Per key, the times of the last ``limit`` hits allowed (oldest first). A hit is refused when
    the ``limit``-th most recent one is still inside the window (the library's rule); the
    remaining count and the reset time are read from the hits inside it. Everything runs on the
    caller's thread in microseconds, so the event loop is the only lock needed.
    """

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}
        # Per key, the window (seconds) its hits are kept for: what the sweep expires them by.
        self._windows: dict[str, int] = {}
        self._next_sweep = time.monotonic() + MEMORY_SWEEP_SECONDS

    def hit(self, item: RateLimitItem, identifiers: tuple[str, ...]) -> Decision:
        now = time.time()
        self._sweep_now_and_then(now)
        window = item.get_expiry()
        if item.amount < 1:  # "0/minute": nothing is allowed, and there is nothing to log
            return Decision(allowed=False, limit=item.amount, remaining=0, reset_after=window)
        key = item.key_for(*identifiers)
        hits = self._hits.get(key)
        if hits is None or hits.maxlen != item.amount:
            hits = self._hits[key] = deque(hits or (), maxlen=item.amount)
            self._windows[key] = window
        start = now - window
        # Full log whose oldest entry is the limit-th most recent hit: refused while it is inside.
        allowed = not (len(hits) == item.amount and hits[0] >= start)
        if allowed:
            hits.append(now)  # the deque's bound drops the oldest
        while hits and hits[0] <= start:
            hits.popleft()
        # The window frees room when its oldest hit leaves it.
        oldest = hits[0] if hits else start
        return Decision(
            allowed=allowed,
            limit=item.amount,
            remaining=max(0, item.amount - len(hits)),
            reset_after=max(0, math.ceil(oldest + window - time.time())),
        )

    def _sweep_now_and_then(self, now: float) -> None:
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + MEMORY_SWEEP_SECONDS
        for key, hits in list(self._hits.items()):
            if not hits or hits[-1] <= now - self._windows[key]:
                del self._hits[key]
                del self._windows[key]

    def __len__(self) -> int:
        """How many keys are held (for tests of the sweep)."""
        return len(self._hits)


class RateLimiter:
    def __init__(self, *, redis_url: str | None, key_prefix: str, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        self._memory = MemoryMovingWindow()
        self._pool: ConnectionPool | None = None
        self._redis: MovingWindowRateLimiter | None = None
        if redis_url:
            self._pool = ConnectionPool.from_url(
                redis_url,
                socket_timeout=timeout_seconds,
                socket_connect_timeout=timeout_seconds,
            )
            storage = RedisStorage(
                "async+redis://",
                implementation="redispy",
                key_prefix=key_prefix,
                # The library types its options as scalars; redis-py takes the pool we own
                # (and close in aclose), which is what the library passes it to.
                connection_pool=self._pool,  # type: ignore[arg-type]
            )
            self._redis = MovingWindowRateLimiter(storage)
        self._redis_down_until = 0.0
        self._outage_logged = False

    @property
    def shared(self) -> bool:
        """Whether limits are currently shared through Redis (False: per process)."""
        return self._redis is not None and time.monotonic() >= self._redis_down_until

    async def hit(self, item: RateLimitItem, *identifiers: str) -> Decision:
        """Count one request against ``item`` for ``identifiers``; never raises for the store."""
        if self._redis is not None and time.monotonic() >= self._redis_down_until:
            try:
                async with asyncio.timeout(self.timeout_seconds):
                    decision = await self._hit(self._redis, item, identifiers)
            except Exception as exc:  # noqa: BLE001 - any store failure means "use memory"
                self._redis_failed(exc)
            else:
                if self._outage_logged:
                    logger.info("rate limit store answering again; limits are shared")
                    self._outage_logged = False
                return decision
        return self._memory.hit(item, identifiers)

    def _redis_failed(self, exc: Exception) -> None:
        self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
        if not self._outage_logged:
            # The type only: a Redis error message can carry the URL and with it a password.
            logger.warning(
                "rate limit store unreachable; limits are per process until it answers",
                extra={"error_type": type(exc).__name__},
            )
            self._outage_logged = True

    @staticmethod
    async def _hit(
        limiter: MovingWindowRateLimiter, item: RateLimitItem, identifiers: tuple[str, ...]
    ) -> Decision:
        allowed = await limiter.hit(item, *identifiers)
        stats = await limiter.get_window_stats(item, *identifiers)
        return Decision(
            allowed=allowed,
            limit=item.amount,
            remaining=max(0, stats.remaining),
            reset_after=max(0, math.ceil(stats.reset_time - time.time())),
        )

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
