"""The webhook delivery worker: drains the outbox of every gateway replica's database.

Each round claims due deliveries with a conditional UPDATE (see
:class:`services.gateway.db.repository.WebhookRepository`), posts each signed event, and records
the attempt. Runs in the gateway's lifespan; several replicas may run it at once. A claim
outlasts its attempt (bounded as a whole, not per read), and an attempt is recorded only while
its claim holds, so a worker that stalled past its claim cannot overwrite what the replica that
took over recorded. Receivers see each event at least once (a worker that dies after the POST
but before recording the attempt posts it again after its claim lapses), hence
``Taskroute-Event-Id`` for deduplication.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway import metrics as webhook_metrics
from services.gateway.db.models import WebhookDelivery, WebhookEndpoint
from services.gateway.db.repository import WebhookRepository
from services.gateway.domain import webhooks as rules
from shared.db import utcnow

logger = logging.getLogger("taskroute.gateway.webhooks")

# A receiver has this long to answer; Stripe allows a little more, but a receiver should
# acknowledge at once and work afterwards. httpx applies it to each connect, write and read,
# so a receiver trickling its answer would hold an attempt open for ever: the whole attempt
# (name lookup and POST) is bounded by ATTEMPT_SECONDS as well.
DELIVERY_TIMEOUT_SECONDS = 10.0
ATTEMPT_SECONDS = 15.0
# A claim outlives its attempt by this much, room to record it; past it another replica may
# retry, and the late attempt's result is then dropped (see WebhookRepository.record_attempt).
CLAIM_MARGIN_SECONDS = 45.0
# Deliveries per round: a few concurrent POSTs keep one slow receiver from stalling the rest.
BATCH_SIZE = 20
# At most this many of one tenant's attempts in flight per worker: a tenant whose endpoints all
# hang holds a quarter of the slots, never the others' share.
PER_TENANT_IN_FLIGHT = 5
# Only the start of a receiver's error is worth keeping in the attempt log.
MAX_ERROR_CHARS = 200


# Why a delivery was not sent: recorded in the attempt log the tenant reads. The resolved
# address itself is left out: it could be an internal one the tenant should not learn.
REFUSED_ADDRESS = (
    "refused: the endpoint's host resolves to a private, loopback, link-local or reserved address"
)
DNS_FAILED = "DNS lookup of the endpoint's host failed"
LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class DeliveryAddress:
    """Where an attempt may post: the addresses checked, in the resolver's order (none for an
    IP literal, which the URL names itself), or why it must not post at all."""

    refusal: str | None = None
    addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()


async def delivery_address(url: str, *, allow_loopback: bool = True) -> DeliveryAddress:
    """Resolve and check ``url``'s host before an attempt.

    An IP literal was checked at registration; it is checked again here with the same rule (a
    loopback literal stays allowed, as at registration, for local development and tests,
    unless ``allow_loopback`` is off, as in production). A host *name* is resolved now and
    refused if any address it resolves to is internal, loopback included: a name that pointed
    at the internet when it was registered may point inside since (DNS rebinding).
    ``localhost`` names may resolve to loopback only. The attempt then connects to the address
    checked here (:func:`pinned_request`): a second lookup by the HTTP client could answer
    otherwise (a name with a zero TTL that answers an internal address the second time).
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".").lower()
    literal = rules.ip_literal(host)
    if literal is not None:
        if literal.is_loopback:
            return DeliveryAddress(None if allow_loopback else REFUSED_ADDRESS)
        return DeliveryAddress(REFUSED_ADDRESS if rules.is_internal(literal) else None)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        return DeliveryAddress(DNS_FAILED)
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        return DeliveryAddress(DNS_FAILED)
    local_name = host in LOOPBACK_NAMES or host.endswith(".localhost")
    for address in addresses:
        if local_name and address.is_loopback and allow_loopback:
            continue
        if rules.is_internal(address):
            return DeliveryAddress(REFUSED_ADDRESS)
    return DeliveryAddress(addresses=tuple(addresses))


def pinned_request(
    url: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL to post to, with its extra headers and httpx extensions: to ``address`` when
    the host is a name, keeping the name for the ``Host`` header and for TLS (server name and
    certificate check), so the connection goes where :func:`delivery_address` looked."""
    if address is None:
        return url, {}, {}
    parts = urlsplit(url)
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    host = parts.hostname or ""
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    pinned = urlunsplit(parts._replace(netloc=netloc))
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return pinned, {"Host": host_header}, extensions


def signing_secrets(endpoint: WebhookEndpoint, *, pepper: bytes, now: datetime) -> list[str]:
    """The secrets a delivery to ``endpoint`` is signed with now: the current one, and the one
    a rotation replaced while its overlap lasts."""
    secrets = [
        rules.open_secret(
            endpoint.sealed_secret,
            endpoint_id=endpoint.id,
            tenant_id=endpoint.tenant_id,
            pepper=pepper,
        )
    ]
    expires_at = endpoint.previous_secret_expires_at
    if endpoint.previous_sealed_secret is not None and expires_at is not None and now < expires_at:
        secrets.append(
            rules.open_secret(
                endpoint.previous_sealed_secret,
                endpoint_id=endpoint.id,
                tenant_id=endpoint.tenant_id,
                pepper=pepper,
            )
        )
    return secrets


def signature_header(
    endpoint: WebhookEndpoint, *, pepper: bytes, body: bytes, now: datetime
) -> str:
    """``Taskroute-Signature`` for ``body``: one ``v1=`` per secret in use (see above)."""
    return rules.signatures(
        signing_secrets(endpoint, pepper=pepper, now=now), timestamp=int(time.time()), body=body
    )


class WebhookSender:
    def __init__(
        self,
        *,
        maker: async_sessionmaker[AsyncSession],
        pepper: bytes,
        backoff_base: timedelta,
        poll_seconds: float,
        transport: httpx.AsyncBaseTransport | None = None,
        attempt_seconds: float = ATTEMPT_SECONDS,
        allow_loopback: bool = True,
        proxy: str | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.maker = maker
        # Attempts under way per tenant, for its share (run_forever).
        self.attempts_by_tenant: Counter[str] = Counter()
        # Through an egress proxy the proxy resolves names and connects: nothing to pin.
        self.proxy = proxy
        # Off in production: a tenant's endpoint must not reach the gateway's own host.
        self.allow_loopback = allow_loopback
        self.pepper = pepper
        self.backoff_base = backoff_base
        self.poll_seconds = poll_seconds
        self.attempt_seconds = attempt_seconds
        self.lease = timedelta(seconds=attempt_seconds + CLAIM_MARGIN_SECONDS)
        if transport is None:
            # No connection is kept for another attempt: a pooled connection is matched by
            # address alone, so an attempt to another name pinned to the same address would
            # ride on a TLS session whose certificate was checked for the first name.
            transport = httpx.AsyncHTTPTransport(
                limits=httpx.Limits(max_keepalive_connections=0), proxy=proxy, verify=verify
            )
        self.http = httpx.AsyncClient(
            timeout=DELIVERY_TIMEOUT_SECONDS,
            follow_redirects=False,  # a redirect could point the signed event anywhere
            transport=transport,
            headers={"User-Agent": "taskroute-webhooks"},
            # The proxy is the setting's alone: one from the environment would tunnel to the
            # pinned address and check its certificate against the address, not the name.
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def run_forever(self) -> None:
        """Up to ``BATCH_SIZE`` attempts in flight; every poll claims what there is room for.
        A slow receiver holds its own attempt (at most ``attempt_seconds``), never the others:
        waiting for a whole round let one tenant's unreachable endpoints delay every tenant's
        events by the slowest attempt."""
        in_flight: set[asyncio.Task[None]] = set()
        per_tenant = self.attempts_by_tenant

        def done(task: asyncio.Task[None], tenant_id: str) -> None:
            in_flight.discard(task)
            per_tenant[tenant_id] -= 1
            if per_tenant[tenant_id] <= 0:
                del per_tenant[tenant_id]  # held only for tenants with attempts under way

        try:
            while True:
                try:
                    room = BATCH_SIZE - len(in_flight)
                    claimed = await self._claim(room, in_flight=per_tenant) if room else []
                    for delivery, endpoint in claimed:
                        task = asyncio.create_task(self._deliver(delivery, endpoint))
                        in_flight.add(task)
                        per_tenant[delivery.tenant_id] += 1
                        task.add_done_callback(partial(done, tenant_id=delivery.tenant_id))
                    await webhook_metrics.WEBHOOK_OUTBOX.refresh(self.maker)  # at most every 15 s
                except Exception as exc:  # noqa: BLE001 - retried next poll; never kill the worker
                    logger.warning("webhook round failed", extra={"error_type": type(exc).__name__})
                await asyncio.sleep(self.poll_seconds)
        finally:
            # Stopping: an attempt cut short is not recorded, and its claim lapses, so another
            # worker (or this one after a restart) sends it again: receivers deduplicate.
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def deliver_due(self) -> int:
        """One round: claim, send and record what is due now, waiting for every attempt; how
        many were attempted."""
        claimed = await self._claim(BATCH_SIZE)
        await asyncio.gather(*(self._deliver(delivery, endpoint) for delivery, endpoint in claimed))
        return len(claimed)

    async def _claim(
        self, limit: int, *, in_flight: Counter[str] | None = None
    ) -> list[tuple[WebhookDelivery, WebhookEndpoint]]:
        """Claim up to ``limit`` due deliveries; with ``in_flight`` (the attempts under way per
        tenant), each tenant's share is bounded by ``PER_TENANT_IN_FLIGHT``."""
        async with self.maker() as session:
            claimed = await WebhookRepository(session).claim_due(
                now=utcnow(),
                lease=self.lease,
                limit=limit,
                per_tenant=None if in_flight is None else PER_TENANT_IN_FLIGHT,
                in_flight=in_flight,
            )
            await session.commit()
        return claimed

    async def _post(
        self, url: str, checked: DeliveryAddress, body: bytes, headers: dict[str, str]
    ) -> httpx.Response:
        """Post to the addresses checked, in turn until one connects (as a client resolving the
        name itself would: an IPv6 address first on a host without IPv6, say); through a proxy,
        or for an IP literal, to the URL as it is."""
        pins: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address | None, ...] = (
            (None,) if self.proxy or not checked.addresses else checked.addresses
        )
        for address in pins[:-1]:
            # Refused, or silent until the connect timeout (a dead IPv6 route): the next one.
            with contextlib.suppress(httpx.ConnectError, httpx.ConnectTimeout):
                return await self._post_to(url, address, body, headers)
        return await self._post_to(url, pins[-1], body, headers)

    async def _post_to(
        self,
        url: str,
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
        body: bytes,
        headers: dict[str, str],
    ) -> httpx.Response:
        target, host, extensions = pinned_request(url, address)
        return await self.http.post(
            target, content=body, headers={**headers, **host}, extensions=extensions
        )

    async def _deliver(self, delivery: WebhookDelivery, endpoint: WebhookEndpoint) -> None:
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        if endpoint.deleted_at is not None:
            error = "endpoint deleted"
        else:
            body = delivery.payload.encode()
            headers = {
                "Content-Type": "application/json",
                rules.SIGNATURE_HEADER: signature_header(
                    endpoint, pepper=self.pepper, body=body, now=utcnow()
                ),
                rules.EVENT_ID_HEADER: delivery.event_id,
                rules.EVENT_TYPE_HEADER: delivery.event_type,
            }
            try:
                async with asyncio.timeout(self.attempt_seconds):
                    # Names are resolved again now, not trusted from registration (rebinding),
                    # and the attempt goes to the address checked.
                    checked = await delivery_address(
                        endpoint.url, allow_loopback=self.allow_loopback
                    )
                    error = checked.refusal
                    if error is None:
                        response = await self._post(endpoint.url, checked, body, headers)
                        status_code = response.status_code
                        if not response.is_success:
                            error = f"HTTP {status_code}"
            except httpx.HTTPError as exc:
                # The error's type only: its text can quote the URL, which may carry a token.
                error = type(exc).__name__
            except TimeoutError:
                error = f"no complete answer within {self.attempt_seconds:g} s"
        now = utcnow()
        succeeded = error is None
        attempt = {
            "at": now.isoformat(),
            "status_code": status_code,
            "error": error[:MAX_ERROR_CHARS] if error else None,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        retry_at = (
            None
            if succeeded or endpoint.deleted_at is not None
            else rules.next_attempt_at(delivery.attempts + 1, now=now, base=self.backoff_base)
        )
        webhook_metrics.observe_delivery_attempt(
            endpoint_deleted=endpoint.deleted_at is not None,
            status_code=status_code,
            error=error,
            seconds=time.perf_counter() - started,
            final=retry_at is None,
        )
        async with self.maker() as session:
            recorded = await WebhookRepository(session).record_attempt(
                delivery, attempt=attempt, succeeded=succeeded, retry_at=retry_at, now=now
            )
            await session.commit()
        if not recorded:
            # The claim lapsed (this worker stalled) and another took the delivery, or its
            # endpoint and tenant were deleted: the row is someone else's to settle now.
            logger.warning("webhook attempt not recorded", extra={"delivery_id": delivery.id})
            return
        logger.info(
            "webhook attempt",
            extra={
                "delivery_id": delivery.id,
                "event_type": delivery.event_type,
                "status_code": status_code,
                "succeeded": succeeded,
            },
        )
