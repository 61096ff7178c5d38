"""Webhook delivery metrics: attempts by outcome, settled deliveries, latency, outbox backlog.

The delivery worker posts to real receivers on loopback ports (one answering 200, one 503, one
port nobody listens on) from the real outbox in the gateway's database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from services.gateway import metrics
from services.gateway.clients.webhooks import WebhookSender
from services.gateway.db.repository import WebhookRepository
from shared.db import utcnow
from shared.metrics import sample_value
from tests.e2e.conftest import free_port
from tests.gateway.factories import PEPPER, make_tenant, make_webhook_endpoint

ATTEMPTS = "taskroute_gateway_webhook_attempts_total"
SETTLED = "taskroute_gateway_webhook_deliveries_total"
SECONDS = "taskroute_gateway_webhook_attempt_duration_seconds_count"


async def answer(status: int) -> asyncio.Server:
    """A loopback HTTP/1.1 receiver answering every request with ``status``."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.decode("latin-1").split("\r\n"):
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        await reader.readexactly(length)
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", free_port())


@pytest.fixture
async def receivers() -> AsyncIterator[dict[str, str]]:
    up, down = await answer(200), await answer(503)
    urls = {
        "up": f"http://127.0.0.1:{up.sockets[0].getsockname()[1]}/hooks",
        "down": f"http://127.0.0.1:{down.sockets[0].getsockname()[1]}/hooks",
        "closed": f"http://127.0.0.1:{free_port()}/hooks",
    }
    try:
        yield urls
    finally:
        for server in (up, down):
            server.close()
            await server.wait_closed()


def counts() -> dict[str, float]:
    values = {o: sample_value(ATTEMPTS, {"outcome": o}) for o in metrics.OUTCOMES}
    values |= {f"seconds:{o}": sample_value(SECONDS, {"outcome": o}) for o in metrics.OUTCOMES}
    values |= {r: sample_value(SETTLED, {"result": r}) for r in ("delivered", "failed")}
    return values


async def test_attempts_outcomes_latency_and_backlog(maker, receivers):
    async with maker() as session:
        tenant = await make_tenant(session)
        for n, url in enumerate(receivers.values()):
            await make_webhook_endpoint(
                session,
                tenant_id=tenant.id,
                url=url,
                endpoint_id=f"5f0c7a52-0000-4000-8000-00000000000{n}",
            )
        queued = await WebhookRepository(session).enqueue(
            tenant_id=tenant.id,
            event_id="event-1",
            event_type="job.queued",
            payload="{}",
            now=utcnow(),
        )
        await session.commit()
    assert queued == 3

    assert await metrics.WEBHOOK_OUTBOX.refresh(maker, force=True)
    assert sample_value("taskroute_gateway_webhook_outbox_backlog") == 3
    assert sample_value("taskroute_gateway_webhook_outbox_oldest_age_seconds") >= 0
    # Within the refresh interval the worker does not count again.
    assert not await metrics.WEBHOOK_OUTBOX.refresh(maker)

    before = counts()
    sender = WebhookSender(
        maker=maker, pepper=PEPPER, backoff_base=timedelta(seconds=10), poll_seconds=1.0
    )
    try:
        assert await sender.deliver_due() == 3
    finally:
        await sender.aclose()
    after = counts()
    delta = {name: after[name] - before[name] for name in after}
    assert delta == {
        "succeeded": 1,
        "http_error": 1,
        "transport_error": 1,
        "endpoint_deleted": 0,
        "seconds:succeeded": 1,
        "seconds:http_error": 1,
        "seconds:transport_error": 1,
        "seconds:endpoint_deleted": 0,
        "delivered": 1,
        "failed": 0,  # the other two are retried later
    }

    # Two stay in the outbox for their retries.
    assert await metrics.WEBHOOK_OUTBOX.refresh(maker, force=True)
    assert sample_value("taskroute_gateway_webhook_outbox_backlog") == 2


async def test_the_gateway_exports_the_webhook_metrics(gateway_alone):
    response = await gateway_alone.client.get("/metrics")
    assert response.status_code == 200
    for name in (
        'taskroute_gateway_webhook_attempts_total{outcome="transport_error"}',
        'taskroute_gateway_webhook_deliveries_total{result="failed"}',
        "taskroute_gateway_webhook_attempt_duration_seconds_bucket",
        "taskroute_gateway_webhook_outbox_backlog ",
        "taskroute_gateway_webhook_outbox_oldest_age_seconds ",
    ):
        assert name in response.text
