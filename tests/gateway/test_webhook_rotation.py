"""Webhook secret rotation: the new secret shown once, both secrets signing deliveries during the
overlap (the SDK's verifier accepts either), only the new one after it; the old one stored sealed
like the current one. And the delivery-time address check (DNS rebinding): a host name is
resolved again before every attempt and refused if it points inside."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from services.gateway.clients.webhooks import (
    REFUSED_ADDRESS,
    delivery_address,
)
from services.gateway.db.models import WebhookEndpoint
from services.sdk.webhooks import verify_signature
from shared.db import create_engine
from tests.e2e.conftest import free_port
from tests.gateway.conftest import Platform
from tests.gateway.test_api import (
    BOOKKEEPING_JOB,
    BOOKKEEPING_TEAM,
    assert_problem,
    bearer,
    create_tenant,
    raw_rows,
)
from tests.gateway.test_webhooks import Receiver, fast_platform, one_delivery_to, sender, wait_for

__all__ = ["fast_platform"]  # the fixture, imported for this module's tests


async def _setup(platform: Platform, receiver: Receiver) -> tuple[str, dict[str, Any]]:
    tenant = await create_tenant(platform, "Acme Rotation")
    team = await platform.client.post(
        "/v1/admin/teams", json=BOOKKEEPING_TEAM, headers=platform.operator
    )
    assert team.status_code == 201, team.text
    created = await platform.client.post(
        "/v1/webhook-endpoints",
        json={"url": f"http://127.0.0.1:{receiver.port}/hooks"},
        headers=bearer(tenant["api_key"]),
    )
    assert created.status_code == 201, created.text
    return tenant["api_key"], created.json()


async def _one_delivery(platform: Platform, key: str, receiver: Receiver) -> tuple[str, bytes]:
    """Submit a job and return the signature header and body of its first delivered event."""
    before = len(receiver.received)
    job = await platform.client.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=bearer(key))
    assert job.status_code == 202, job.text

    async def arrived() -> bool:
        return len(receiver.received) > before

    await wait_for(arrived, "a delivery")
    headers, body = receiver.received[before]
    return headers["taskroute-signature"], body


async def test_rotation_signs_with_both_secrets_during_the_overlap(fast_platform) -> None:
    receiver = Receiver(port=free_port())
    await receiver.start()
    try:
        key, endpoint = await _setup(fast_platform, receiver)
        old = endpoint["secret"]
        path = f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret"
        rotated = await fast_platform.client.post(path, headers=bearer(key))
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["secret"]
        assert new.startswith("whsec_")
        assert new != old
        expires = datetime.fromisoformat(rotated.json()["previous_secret_expires_at"])
        assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24)
        # Neither secret is stored in the clear.
        for row in await raw_rows("gateway", fast_platform.databases["gateway"]):
            for secret in (old, new):
                assert secret[len("whsec_") :] not in row

        header, body = await _one_delivery(fast_platform, key, receiver)
        assert header.count("v1=") == 2
        assert verify_signature(new, header, body=body)
        assert verify_signature(old, header, body=body)
        assert not verify_signature("whsec_" + "A" * 43, header, body=body)

        # The overlap ends (moved into the past in the database): only the new secret signs.
        engine = create_engine(fast_platform.databases["gateway"])
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    update(WebhookEndpoint)
                    .where(WebhookEndpoint.id == endpoint["id"])
                    .values(previous_secret_expires_at=datetime.now(UTC) - timedelta(seconds=1))
                )
        finally:
            await engine.dispose()
        header, body = await _one_delivery(fast_platform, key, receiver)
        assert header.count("v1=") == 1
        assert verify_signature(new, header, body=body)
        assert not verify_signature(old, header, body=body)
    finally:
        await receiver.stop()


async def test_rotation_without_overlap_and_bad_input(fast_platform) -> None:
    receiver = Receiver(port=free_port())
    await receiver.start()
    try:
        key, endpoint = await _setup(fast_platform, receiver)
        path = f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret"
        for bad in ({"overlap_seconds": -1}, {"overlap_seconds": 8 * 86400}, {"other": 1}):
            assert_problem(
                await fast_platform.client.post(path, json=bad, headers=bearer(key)), 422
            )
        # Another tenant's endpoint looks unknown.
        other = await create_tenant(fast_platform, "Other Rotation")
        assert_problem(await fast_platform.client.post(path, headers=bearer(other["api_key"])), 404)
        rotated = await fast_platform.client.post(
            path, json={"overlap_seconds": 0}, headers=bearer(key)
        )
        assert rotated.status_code == 200, rotated.text
        assert rotated.json()["previous_secret_expires_at"] is None
        header, body = await _one_delivery(fast_platform, key, receiver)
        assert header.count("v1=") == 1
        assert verify_signature(rotated.json()["secret"], header, body=body)
        assert not verify_signature(endpoint["secret"], header, body=body)
    finally:
        await receiver.stop()


async def _refusal(url: str, *, allow_loopback: bool = True) -> str | None:
    return (await delivery_address(url, allow_loopback=allow_loopback)).refusal


async def test_delivery_address_rule() -> None:
    assert await _refusal("http://127.0.0.1:9/hook") is None  # as registered
    assert await _refusal("http://[::1]:9/hook") is None
    assert await _refusal("http://localhost:9/hook") is None
    for internal in (
        "https://10.0.0.5/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[fd00:ec2::254]/",
        "https://[::ffff:10.0.0.1]/",
        "https://100.64.0.1/",
    ):
        assert await _refusal(internal) == REFUSED_ADDRESS, internal
    # A name (not "localhost") that resolves to loopback: this machine's own name.
    assert await _refusal(f"https://{socket.gethostname()}/hook") == REFUSED_ADDRESS
    # In production loopback is refused too: the gateway would post into its own host.
    for local in ("http://127.0.0.1:9/hook", "http://[::1]:9/hook", "http://localhost:9/hook"):
        assert await _refusal(local, allow_loopback=False) == REFUSED_ADDRESS


async def _deliver_one_to_hooks_localhost(maker: Any, receiver: Receiver) -> None:
    """One delivery to ``http://hooks.localhost:<receiver's port>/hook`` (however the test has
    the name resolve); it must reach ``receiver``, naming the host."""
    await one_delivery_to(maker, f"http://hooks.localhost:{receiver.port}/hook")
    worker = sender(maker)
    try:
        assert await worker.deliver_due() == 1
    finally:
        await worker.aclose()
        await receiver.stop()
    [(headers, _)] = receiver.received
    assert headers["host"] == f"hooks.localhost:{receiver.port}"


async def test_an_attempt_connects_to_the_address_it_checked(maker, monkeypatch) -> None:
    """A name that answers one address to the check and another to a second lookup (a zero
    TTL, rebinding): the attempt goes to the address checked, naming the host in ``Host``."""
    receiver = Receiver(port=free_port())
    await receiver.start()
    real_lookup = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding_lookup(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "hooks.localhost":
            return real_lookup(host, port, *args, **kwargs)
        lookups.append(host)
        # The first answer is checked; any later one points elsewhere (nothing listens there).
        address = "127.0.0.1" if len(lookups) == 1 else "127.0.0.2"
        return real_lookup(address, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_lookup)
    await _deliver_one_to_hooks_localhost(maker, receiver)
    assert lookups == ["hooks.localhost"]


def test_a_pinned_request_keeps_the_name_for_host_and_tls() -> None:
    import ipaddress

    from services.gateway.clients.webhooks import pinned_request

    v4, v6 = ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("2606:2800:220:1::")
    assert pinned_request("https://hooks.example.com/a?b=1", v4) == (
        "https://93.184.216.34/a?b=1",
        {"Host": "hooks.example.com"},
        {"sni_hostname": "hooks.example.com"},
    )
    assert pinned_request("https://hooks.example.com:8443/a", v6) == (
        "https://[2606:2800:220:1::]:8443/a",
        {"Host": "hooks.example.com:8443"},
        {"sni_hostname": "hooks.example.com"},
    )
    assert pinned_request("https://93.184.216.34/a", None) == ("https://93.184.216.34/a", {}, {})


async def test_production_refuses_a_loopback_endpoint_at_registration(
    production_gateway: Platform,
) -> None:
    client = production_gateway.client
    key = bearer((await create_tenant(production_gateway, "Acme Production Hooks"))["api_key"])
    for url in (
        "http://127.0.0.1:8001/internal/v1/jobs",
        "http://localhost:8000/v1/jobs",
        "https://[::1]/hook",
        "https://admin.localhost/hook",
    ):
        refused = await client.post("/v1/webhook-endpoints", json={"url": url}, headers=key)
        assert assert_problem(refused, 422)["type"].endswith("webhook-endpoint-loopback")
    listed = await client.get("/v1/webhook-endpoints", headers=key)
    assert listed.json()["data"] == []  # nothing stored
    public = await client.post(
        "/v1/webhook-endpoints",
        json={"url": "https://hooks.example.com/taskroute"},
        headers=key,
    )
    assert public.status_code == 201, public.text


async def test_a_name_resolving_inside_is_refused_at_delivery(fast_platform) -> None:
    """Registered under a name (names are not resolved at registration), the endpoint's host
    resolves to loopback when the event is due: the attempt is recorded as failed with the
    reason, and nothing is sent to the address."""
    receiver = Receiver(port=free_port())
    await receiver.start()
    try:
        tenant = await create_tenant(fast_platform, "Acme Rebinding")
        key = tenant["api_key"]
        team = await fast_platform.client.post(
            "/v1/admin/teams", json=BOOKKEEPING_TEAM, headers=fast_platform.operator
        )
        assert team.status_code == 201, team.text
        created = await fast_platform.client.post(
            "/v1/webhook-endpoints",
            json={"url": f"https://{socket.gethostname()}:{receiver.port}/hooks"},
            headers=bearer(key),
        )
        assert created.status_code == 201, created.text
        path = f"/v1/webhook-endpoints/{created.json()['id']}/deliveries"
        job = await fast_platform.client.post("/v1/jobs", json=BOOKKEEPING_JOB, headers=bearer(key))
        assert job.status_code == 202, job.text

        async def attempted() -> bool:
            page = await fast_platform.client.get(path, headers=bearer(key))
            return any(d["attempts"] >= 1 for d in page.json()["data"])

        await wait_for(attempted, "a refused attempt")
        page = await fast_platform.client.get(path, headers=bearer(key))
        attempt = next(d for d in page.json()["data"] if d["attempts"])["attempt_log"][0]
        assert attempt["error"] == REFUSED_ADDRESS
        assert attempt["status_code"] is None
        assert receiver.received == []
    finally:
        await receiver.stop()


def _tls_identity(tmp_path: Any, name: str) -> tuple[Any, Any]:
    """A test CA and a server certificate for ``name`` only: (server context, client context
    trusting the CA)."""
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)

    def certificate(subject: str, key: Any, issuer: Any, issuer_key: Any, *, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Taskroute test CA")])
    ca_cert = certificate("Taskroute test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate(name, key, ca_name, ca_key, ca=False)
    pem = tmp_path / "server.pem"
    pem.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(pem)
    client = ssl.create_default_context(
        cadata=ca_cert.public_bytes(serialization.Encoding.PEM).decode()
    )
    return server, client


async def test_each_pinned_attempt_checks_the_certificate_of_its_own_name(
    maker, monkeypatch, tmp_path
) -> None:
    """Two names pinned to one address, a certificate for the first only: the second attempt
    must not ride on the first's connection, whose certificate was checked for another name."""
    import asyncio

    from services.gateway.clients.webhooks import WebhookSender
    from services.gateway.db.models import WebhookDelivery
    from services.gateway.db.repository import WebhookRepository
    from tests.gateway.factories import PEPPER, make_tenant, make_webhook_endpoint

    server_tls, client_tls = _tls_identity(tmp_path, "hooks-a.localhost")
    received: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:  # keeps the connection open for another request, as servers do
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            lines = head.decode("latin-1").split("\r\n")
            host = next(
                line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("host:")
            )
            length = next(
                int(line.split(":", 1)[1])
                for line in lines
                if line.lower().startswith("content-length:")
            )
            await reader.readexactly(length)
            received.append(host)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    real_lookup = socket.getaddrinfo

    def lookup(host: Any, port_: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("hooks-a.localhost", "hooks-b.localhost"):
            host = "127.0.0.1"
        return real_lookup(host, port_, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    async with maker() as session:
        tenant = await make_tenant(session)
        for letter in "ab":
            await make_webhook_endpoint(
                session,
                tenant_id=tenant.id,
                url=f"https://hooks-{letter}.localhost:{port}/hook",
                endpoint_id=f"5f0c7a52-0000-4000-8000-00000000001{letter}",
            )
        await WebhookRepository(session).enqueue(
            tenant_id=tenant.id,
            event_id="event-1",
            event_type="job.queued",
            payload="{}",
            now=datetime.now(UTC),
        )
        await session.commit()
    worker = WebhookSender(
        maker=maker,
        pepper=PEPPER,
        backoff_base=timedelta(seconds=10),
        poll_seconds=1,
        verify=client_tls,
    )
    try:
        # One at a time, so the second could find the first's connection in a pool.
        async with maker() as session:
            deliveries = (await session.scalars(select(WebhookDelivery))).all()
        for delivery in sorted(deliveries, key=lambda row: row.endpoint_id):
            async with maker() as session:
                endpoint = await session.get(WebhookEndpoint, delivery.endpoint_id)
            await worker._deliver(delivery, endpoint)  # noqa: SLF001 - one attempt, in order
    finally:
        await worker.aclose()
        server.close()
    assert received == [f"hooks-a.localhost:{port}"]
    async with maker() as session:
        outcome = {
            row.endpoint_id[-1]: row.attempt_log[-1]["error"]
            for row in (await session.scalars(select(WebhookDelivery))).all()
        }
    assert outcome["a"] is None
    assert outcome["b"] == "ConnectError"  # the certificate is not for hooks-b


async def test_through_an_egress_proxy_the_name_goes_to_the_proxy(maker) -> None:
    """With TASKROUTE_GATEWAY_WEBHOOK_PROXY_URL the proxy resolves and connects (and filters
    by name): the attempt names the host, not an address the gateway pinned."""
    import asyncio

    from services.gateway.clients.webhooks import WebhookSender
    from tests.gateway.factories import PEPPER

    request_lines: list[str] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_lines.append(head.decode("latin-1").split("\r\n", 1)[0])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    await one_delivery_to(maker, "http://localhost:9/hook")
    worker = WebhookSender(
        maker=maker,
        pepper=PEPPER,
        backoff_base=timedelta(seconds=10),
        poll_seconds=1,
        proxy=f"http://127.0.0.1:{port}",
    )
    try:
        assert await worker.deliver_due() == 1
    finally:
        await worker.aclose()
        server.close()
    assert request_lines == ["POST http://localhost:9/hook HTTP/1.1"]


async def test_an_attempt_tries_each_checked_address_until_one_connects(maker, monkeypatch):
    """A name with two addresses, the first unreachable (an IPv6 address first on a host
    without IPv6, say): the attempt goes on to the next address checked, as a client resolving
    the name itself would."""
    receiver = Receiver(port=free_port())
    await receiver.start()
    real_lookup = socket.getaddrinfo

    def two_addresses(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "hooks.localhost":
            return real_lookup(host, port, *args, **kwargs)
        # Nothing listens on 127.0.0.2: its connection is refused.
        return real_lookup("127.0.0.2", port, *args, **kwargs) + real_lookup(
            "127.0.0.1", port, *args, **kwargs
        )

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
    await _deliver_one_to_hooks_localhost(maker, receiver)
