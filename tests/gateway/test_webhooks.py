"""Webhooks: endpoints, signed job events from the outbox, and a receiver that is down first and
up later (a real HTTP server on a loopback port): nothing is lost."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from services.gateway.domain import webhooks as rules
from tests.e2e.conftest import free_port
from tests.gateway.conftest import Platform, platform_in_process
from tests.gateway.test_api import (
    BOOKKEEPING_JOB,
    BOOKKEEPING_TEAM,
    assert_problem,
    bearer,
    create_tenant,
    raw_rows,
)

# Deliveries normally wait 10 s before the first retry; here 50 ms, so the test stays short.
FAST = {"webhook_backoff_base_seconds": 0.05, "webhook_poll_seconds": 0.05}
# Long enough for a few poll rounds on a loaded machine; the waits end as soon as they can.
WAIT_SECONDS = 8.0


@dataclass
class Receiver:
    """A minimal HTTP/1.1 server that records each request and answers 200."""

    port: int
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.received.append((headers, body))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()


@pytest.fixture
async def fast_platform(databases, keys_dir, tmp_path) -> AsyncIterator[Platform]:
    """The gateway with the real router and vault in-process, retrying webhooks quickly."""
    async with platform_in_process(databases, keys_dir, tmp_path, gateway=FAST) as platform:
        yield platform


async def deliveries(platform: Platform, api_key: str, endpoint_id: str) -> list[dict[str, Any]]:
    answer = await platform.client.get(
        f"/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=bearer(api_key)
    )
    assert answer.status_code == 200, answer.text
    data: list[dict[str, Any]] = answer.json()["data"]
    return data


async def wait_for(check, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_endpoint_lifecycle_and_secret_storage(gateway_alone):
    tenant = await create_tenant(gateway_alone)
    key = bearer(tenant["api_key"])
    created = await gateway_alone.client.post(
        "/v1/webhook-endpoints",
        json={"url": "https://hooks.example.com/taskroute", "description": "ERP"},
        headers=key,
    )
    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert endpoint["secret"].startswith("whsec_")
    listed = await gateway_alone.client.get("/v1/webhook-endpoints", headers=key)
    assert [e["id"] for e in listed.json()["data"]] == [endpoint["id"]]
    assert "secret" not in listed.json()["data"][0]
    assert endpoint["secret"] not in listed.text
    # Stored sealed: no row of the gateway's database holds the secret.
    for row in await raw_rows("gateway", gateway_alone.databases["gateway"]):
        assert endpoint["secret"] not in row
        assert endpoint["secret"][len("whsec_") :] not in row
    # Plain http is for loopback only; operators and members cannot register endpoints.
    plain = await gateway_alone.client.post(
        "/v1/webhook-endpoints", json={"url": "http://hooks.example.com/x"}, headers=key
    )
    assert_problem(plain, 422)
    for internal in (
        "https://169.254.169.254/latest",
        "https://10.0.0.5/hook",
        "https://[fc00::1]/",
        "https://exa mple.com/x",  # no host a client could agree on: it would fail for a day
        "https://hooks.example.com/\u0000",
    ):
        refused = await gateway_alone.client.post(
            "/v1/webhook-endpoints", json={"url": internal}, headers=key
        )
        body = assert_problem(refused, 422)
        assert body["errors"][0]["field"] == "url"
    assert_problem(
        await gateway_alone.client.post(
            "/v1/webhook-endpoints",
            json={"url": "https://hooks.example.com/x"},
            headers=gateway_alone.operator,
        ),
        403,
    )
    deleted = await gateway_alone.client.delete(
        f"/v1/webhook-endpoints/{endpoint['id']}", headers=key
    )
    assert deleted.status_code == 200, deleted.text
    assert (await gateway_alone.client.get("/v1/webhook-endpoints", headers=key)).json()[
        "data"
    ] == []
    again = await gateway_alone.client.delete(
        f"/v1/webhook-endpoints/{endpoint['id']}", headers=key
    )
    assert_problem(again, 404)


async def test_events_reach_a_receiver_that_was_down_first(fast_platform):
    gw = fast_platform.client
    tenant = await create_tenant(fast_platform)
    client_key = tenant["api_key"]
    team = await gw.post("/v1/admin/teams", json=BOOKKEEPING_TEAM, headers=fast_platform.operator)
    assert team.status_code == 201, team.text
    member = await gw.post(
        f"/v1/admin/teams/{team.json()['id']}/members",
        json={"name": "Priya"},
        headers=fast_platform.operator,
    )
    member_key = bearer(member.json()["api_key"])
    receiver = Receiver(port=free_port())  # nothing listens there yet
    created = await gw.post(
        "/v1/webhook-endpoints",
        json={"url": f"http://127.0.0.1:{receiver.port}/hooks"},
        headers=bearer(client_key),
    )
    assert created.status_code == 201, created.text
    endpoint_id, secret = created.json()["id"], created.json()["secret"]

    job = await gw.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=bearer(client_key))
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]

    async def failed_once() -> bool:
        found = await deliveries(fast_platform, client_key, endpoint_id)
        return bool(found) and found[0]["attempts"] >= 1

    await wait_for(failed_once, "a failed attempt while the receiver is down")
    [pending] = await deliveries(fast_platform, client_key, endpoint_id)
    assert pending["status"] == "pending"
    assert pending["event_type"] == "job.queued"
    assert pending["attempt_log"][0]["error"] == "ConnectError"
    assert pending["attempt_log"][0]["status_code"] is None

    await receiver.start()
    try:
        claimed = await gw.post(f"/v1/team/jobs/{job_id}/claim", headers=member_key)
        assert claimed.status_code == 200, claimed.text
        done = await gw.post(
            f"/v1/team/jobs/{job_id}/complete", json={"result": {"ok": True}}, headers=member_key
        )
        assert done.status_code == 200, done.text

        async def all_delivered() -> bool:
            found = await deliveries(fast_platform, client_key, endpoint_id)
            return len(found) == 3 and all(d["status"] == "succeeded" for d in found)

        await wait_for(all_delivered, "every event delivered")
    finally:
        await receiver.stop()

    found = await deliveries(fast_platform, client_key, endpoint_id)
    first = next(d for d in found if d["event_type"] == "job.queued")
    assert first["attempts"] >= 2  # failed while down, delivered once up
    assert first["attempt_log"][-1]["status_code"] == 200
    # Each event arrived signed, with its id and the job as its client sees it.
    types = []
    for headers, body in receiver.received:
        assert rules.verify_signature(secret, headers["taskroute-signature"], body=body)
        assert not rules.verify_signature("whsec_wrong", headers["taskroute-signature"], body=body)
        event = json.loads(body)
        assert event["id"] == headers["taskroute-event-id"]
        assert event["type"] == headers["taskroute-event-type"]
        assert event["data"]["object"]["id"] == job_id
        assert "confidential_ref" not in event["data"]["object"]
        types.append(event["type"])
    assert sorted(set(types)) == ["job.completed", "job.in_progress", "job.queued"]
    assert len({d["event_id"] for d in found}) == 3


def test_retry_schedule_spans_more_than_a_day():
    base = timedelta(seconds=10)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    waits, attempt, at = [], 1, now
    while (following := rules.next_attempt_at(attempt, now=at, base=base)) is not None:
        waits.append(following - at)
        at, attempt = following, attempt + 1
    assert waits[0] == base
    assert waits[1] == 2 * base
    assert max(waits) == rules.MAX_BACKOFF
    assert at - now > timedelta(days=1)
    assert attempt == rules.MAX_ATTEMPTS


def test_signature_is_stripe_style():
    header = rules.signature("whsec_abc", timestamp=1700000000, body=b'{"a":1}')
    assert header.startswith("t=1700000000,v1=")
    assert len(header.split("v1=")[1]) == 64
    assert rules.verify_signature("whsec_abc", header, body=b'{"a":1}')
    assert not rules.verify_signature("whsec_abc", header, body=b'{"a":2}')
    assert not rules.verify_signature("whsec_abc", "garbage", body=b'{"a":1}')


async def test_two_workers_never_claim_the_same_delivery(maker):
    from services.gateway.db.repository import WebhookRepository
    from shared.db import utcnow
    from tests.gateway.factories import make_tenant, make_webhook_endpoint

    async with maker() as session:
        tenant = await make_tenant(session)
        await make_webhook_endpoint(
            session,
            tenant_id=tenant.id,
            url="https://hooks.example.com/x",
            endpoint_id="5f0c7a52-0000-4000-8000-000000000001",
        )
        repository = WebhookRepository(session)
        for n in range(6):
            await repository.enqueue(
                tenant_id=tenant.id,
                event_id=f"event-{n}",
                event_type="job.queued",
                payload="{}",
                now=utcnow(),
            )
        await session.commit()

    async def claim() -> list[str]:
        async with maker() as session:
            claimed = await WebhookRepository(session).claim_due(
                now=utcnow(), lease=timedelta(seconds=60), limit=10
            )
            await session.commit()
            return [delivery.id for delivery, _ in claimed]

    first, second = await asyncio.gather(claim(), claim())
    assert len(first) + len(second) == 6
    assert not set(first) & set(second)
    assert await claim() == []  # all leased; nothing is due until the lease lapses


ENDPOINT_ID = "5f0c7a52-0000-4000-8000-000000000002"


async def one_delivery_to(maker, url: str, *, attempts: int = 0) -> str:
    """A tenant, an endpoint at ``url`` and one due delivery that has had ``attempts``."""
    from services.gateway.db.models import WebhookDelivery
    from services.gateway.db.repository import WebhookRepository
    from shared.db import utcnow
    from tests.gateway.factories import make_tenant, make_webhook_endpoint

    async with maker() as session:
        tenant = await make_tenant(session)
        await make_webhook_endpoint(session, tenant_id=tenant.id, url=url, endpoint_id=ENDPOINT_ID)
        await WebhookRepository(session).enqueue(
            tenant_id=tenant.id,
            event_id="event-1",
            event_type="job.queued",
            payload="{}",
            now=utcnow(),
        )
        await session.commit()
    async with maker() as session:
        [delivery] = (await session.scalars(select(WebhookDelivery))).all()
        delivery.attempts = attempts
        await session.commit()
        delivery_id: str = delivery.id
        return delivery_id


async def read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.decode("latin-1").split("\r\n"):
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    await reader.readexactly(length)


def sender(maker, **options: Any):
    from services.gateway.clients.webhooks import WebhookSender
    from tests.gateway.factories import PEPPER

    return WebhookSender(
        maker=maker, pepper=PEPPER, backoff_base=timedelta(seconds=10), poll_seconds=1, **options
    )


@pytest.mark.parametrize(
    ("taken_over_with", "attempts_before"),
    [
        (b"200 OK", rules.MAX_ATTEMPTS - 1),  # the late 500 would fail it for good
        (b"503 Service Unavailable", 0),  # the late 500 would count and reschedule again
    ],
)
async def test_a_late_attempt_does_not_overwrite_the_one_that_took_over(
    maker, taken_over_with, attempts_before
):
    """A worker that stalled past its claim (a slow receiver, a paused process) finds the
    delivery taken over by another replica, which recorded its own attempt: the late result
    is dropped, not written over the newer one."""
    from services.gateway.db.models import WebhookDelivery
    from shared.db import utcnow

    first_arrived, release_first = asyncio.Event(), asyncio.Event()
    served: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        served.append(len(served))
        status = taken_over_with
        if len(served) == 1:
            first_arrived.set()
            await release_first.wait()
            status = b"500 Internal Server Error"
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    delivery_id = await one_delivery_to(
        maker, f"http://127.0.0.1:{port}/hook", attempts=attempts_before
    )
    stalled, other = sender(maker), sender(maker)
    try:
        first = asyncio.create_task(stalled.deliver_due())
        await first_arrived.wait()
        async with maker() as session:  # the stalled worker's claim lapses
            await session.execute(
                update(WebhookDelivery).values(locked_until=utcnow() - timedelta(seconds=1))
            )
            await session.commit()
        assert await other.deliver_due() == 1
        async with maker() as session:
            recorded = await session.get(WebhookDelivery, delivery_id)
            assert recorded is not None
            newer = (recorded.status, recorded.next_attempt_at, recorded.delivered_at)
        release_first.set()
        assert await first == 1
    finally:
        await stalled.aclose()
        await other.aclose()
        server.close()
    async with maker() as session:
        row = await session.get(WebhookDelivery, delivery_id)
    assert row is not None
    assert (row.status, row.next_attempt_at, row.delivered_at) == newer
    assert row.status == ("succeeded" if taken_over_with == b"200 OK" else "pending")
    assert row.attempts == attempts_before + 1
    assert [attempt["status_code"] for attempt in row.attempt_log] == [
        int(taken_over_with.split()[0])
    ]
    assert row.locked_until is None


async def test_a_receiver_that_trickles_its_answer_is_cut_off(maker):
    """httpx's timeout is per read: a receiver sending a byte every 0.1 s would hold an
    attempt (and its claim) open for as long as it likes. The attempt as a whole is bounded,
    recorded as failed, and retried later."""
    from services.gateway.db.models import WebhookDelivery

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nConnection: close\r\n\r\n")
        try:
            for _ in range(50):  # 5 s in all
                await asyncio.sleep(0.1)
                writer.write(b"x")
                await writer.drain()
        except ConnectionError:
            pass  # cut off by the worker
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    delivery_id = await one_delivery_to(maker, f"http://127.0.0.1:{port}/hook")
    worker = sender(maker, attempt_seconds=0.5)
    started = time.monotonic()
    try:
        assert await worker.deliver_due() == 1
    finally:
        await worker.aclose()
        server.close()
    assert time.monotonic() - started < 3
    async with maker() as session:
        row = await session.get(WebhookDelivery, delivery_id)
    assert row is not None
    assert row.status == "pending"  # retried after its backoff
    assert row.next_attempt_at is not None
    assert [attempt["error"] for attempt in row.attempt_log] == ["no complete answer within 0.5 s"]


async def tenant_event(maker, urls: list[str], prefix: str) -> None:
    """A new tenant with an endpoint at each of ``urls`` and one event queued for them all
    (endpoint ids and the event id made from ``prefix``, two hex digits)."""
    from services.gateway.db.repository import WebhookRepository
    from shared.db import utcnow
    from tests.gateway.factories import make_tenant, make_webhook_endpoint

    async with maker() as session:
        tenant = await make_tenant(session)
        for number, url in enumerate(urls):
            await make_webhook_endpoint(
                session,
                tenant_id=tenant.id,
                url=url,
                endpoint_id=f"5f0c7a52-0000-4000-8000-{prefix}{number:010d}",
            )
        await WebhookRepository(session).enqueue(
            tenant_id=tenant.id,
            event_id=f"event-{prefix}",
            event_type="job.queued",
            payload="{}",
            now=utcnow(),
        )
        await session.commit()


async def test_a_slow_receiver_holds_only_its_own_attempt(maker):
    """The worker keeps attempts in flight and claims new ones meanwhile: an event for another
    tenant is delivered while one tenant's receiver still holds its attempt, not after it."""
    from services.gateway.clients.webhooks import WebhookSender
    from tests.gateway.factories import PEPPER

    held, release = asyncio.Event(), asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        held.set()
        await release.wait()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    slow_server = await asyncio.start_server(slow, "127.0.0.1", 0)
    slow_port = slow_server.sockets[0].getsockname()[1]
    fast = Receiver(port=free_port())
    await fast.start()

    worker = WebhookSender(
        maker=maker, pepper=PEPPER, backoff_base=timedelta(seconds=10), poll_seconds=0.05
    )
    running_worker = asyncio.create_task(worker.run_forever())
    try:
        await tenant_event(maker, [f"http://127.0.0.1:{slow_port}/hook"], "aa")
        await asyncio.wait_for(held.wait(), WAIT_SECONDS)
        await tenant_event(maker, [f"http://127.0.0.1:{fast.port}/hook"], "bb")

        async def fast_delivered() -> bool:
            return len(fast.received) == 1

        await wait_for(fast_delivered, "the other tenant's event, while the slow one is held")
        assert not release.is_set()
    finally:
        release.set()
        running_worker.cancel()
        await asyncio.gather(running_worker, return_exceptions=True)
        await worker.aclose()
        await fast.stop()
        slow_server.close()


async def test_one_tenant_s_hanging_endpoints_take_only_its_share_of_the_slots(maker):
    """Twenty-five endpoints of one tenant that never answer, then one event of another tenant:
    the worker holds five of the first tenant's attempts (its share) and delivers the other's
    meanwhile, not after the first tenant's attempts time out."""
    from services.gateway.clients.webhooks import PER_TENANT_IN_FLIGHT, WebhookSender
    from tests.gateway.factories import PEPPER

    held: list[asyncio.StreamWriter] = []
    release = asyncio.Event()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        held.append(writer)
        await release.wait()
        writer.close()

    hanging = await asyncio.start_server(hang, "127.0.0.1", 0)
    hanging_port = hanging.sockets[0].getsockname()[1]
    fast = Receiver(port=free_port())
    await fast.start()

    await tenant_event(maker, [f"http://127.0.0.1:{hanging_port}/hook"] * 25, "aa")
    await tenant_event(maker, [f"http://127.0.0.1:{fast.port}/hook"], "bb")
    worker = WebhookSender(
        maker=maker, pepper=PEPPER, backoff_base=timedelta(seconds=10), poll_seconds=0.05
    )
    running_worker = asyncio.create_task(worker.run_forever())
    try:

        async def other_tenant_delivered() -> bool:
            return len(fast.received) == 1

        await wait_for(other_tenant_delivered, "the other tenant's event")
        await asyncio.sleep(0.3)  # a few more polls: the share stays five
        assert len(held) == PER_TENANT_IN_FLIGHT
    finally:
        release.set()
        running_worker.cancel()
        await asyncio.gather(running_worker, return_exceptions=True)
        # Every attempt ended (answered or cut off): nothing is held for any tenant.
        assert not worker.attempts_by_tenant
        await worker.aclose()
        await fast.stop()
        hanging.close()
