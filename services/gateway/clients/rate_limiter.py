"""Rate limits shared by every gateway replica (Redis) with a per-process fallback (memory).

Design
------
The algorithm is the *moving window* of the ``limits`` library (a log of hits per key in the
last window: exact, no burst at window edges). With ``TASKROUTE_GATEWAY_REDIS_URL`` set, the log
lives in Redis (an atomic Lua script per hit), so several gateway processes share one limit;
without it, in this process's memory.

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
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage
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


class RateLimiter:
    def __init__(self, *, redis_url: str | None, key_prefix: str, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        self._memory = MovingWindowRateLimiter(MemoryStorage())
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
        return await self._hit(self._memory, item, identifiers)

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
