"""Webhooks: signing secrets, signatures, the retry schedule and event names, without I/O.

Design
------
* **Signing secret.** ``whsec_`` + 32 random bytes (base64url), shown once when the endpoint is
  created. The gateway must *use* it for every delivery, so a one-way digest (as for API keys)
  cannot work; it is stored sealed with AES-256-GCM under a key derived from the API-key pepper
  (which lives outside the database), with the endpoint and tenant ids as associated data. A
  stolen database or backup alone therefore cannot forge a signature, and a sealed secret moved
  to another endpoint row does not open.
* **Signature** (Stripe's scheme): ``Taskroute-Signature: t=<unix seconds>,v1=<hex
  HMAC-SHA256(secret, "<t>.<raw body>")>``. Receivers recompute it over the raw body, compare in
  constant time and refuse timestamps older than a few minutes (replays). ``Taskroute-Event-Id``
  lets them drop duplicates: delivery is at least once.
* **Retries**: exponential backoff from ``base`` seconds, doubling per attempt, each wait capped
  at ``MAX_BACKOFF``; ``MAX_ATTEMPTS`` makes the schedule span more than a day with the default
  10-second base (about 26 hours), after which the delivery is marked failed (still listed).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import secrets
import socket
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SECRET_PREFIX = "whsec_"
# 32 bytes = 256 bits, the strength of HMAC-SHA256 itself.
SECRET_BYTES = 32
SIGNATURE_HEADER = "Taskroute-Signature"
EVENT_ID_HEADER = "Taskroute-Event-Id"
EVENT_TYPE_HEADER = "Taskroute-Event-Type"
# 12 bytes: the AES-GCM nonce size, random per sealed secret.
NONCE_BYTES = 12
# With a 10 s base the waits run 10 s, 20 s ... 4 h, 4 h ...: the 16 waits between 17 attempts
# span ~26 hours, "at least a day" for a receiver that is down overnight or over a deploy.
MAX_ATTEMPTS = 17
# No wait longer than 4 hours, so a receiver back after an outage hears from us the same day.
MAX_BACKOFF = timedelta(hours=4)
# Event names of the job statuses a client can be told about.
JOB_EVENT_STATUSES = frozenset(
    {
        "queued",
        "in_progress",
        "in_review",
        "completed",
        "cancelled",
        "triage",
        "unroutable",
        "pending",
    }
)


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


def new_secret() -> str:
    raw = secrets.token_bytes(SECRET_BYTES)
    return SECRET_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _sealing_key(pepper: bytes) -> bytes:
    return hmac.new(pepper, b"taskroute webhook signing secrets v1", hashlib.sha256).digest()


def _aad(endpoint_id: str, tenant_id: str) -> bytes:
    return f"webhook-secret\0{endpoint_id}\0{tenant_id}".encode()


def seal_secret(secret: str, *, endpoint_id: str, tenant_id: str, pepper: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(_sealing_key(pepper)).encrypt(
        nonce, secret.encode(), _aad(endpoint_id, tenant_id)
    )


def open_secret(sealed: bytes, *, endpoint_id: str, tenant_id: str, pepper: bytes) -> str:
    nonce, ciphertext = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
    return (
        AESGCM(_sealing_key(pepper))
        .decrypt(nonce, ciphertext, _aad(endpoint_id, tenant_id))
        .decode()
    )


def signature(secret: str, *, timestamp: int, body: bytes) -> str:
    """The ``Taskroute-Signature`` header value for ``body`` sent at ``timestamp``."""
    signed = str(timestamp).encode() + b"." + body
    mac = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def signatures(secrets_: list[str], *, timestamp: int, body: bytes) -> str:
    """One ``Taskroute-Signature`` header signing ``body`` with each secret in turn:
    ``t=<t>,v1=<mac under the first>,v1=<mac under the second>``. During a secret rotation's
    overlap a delivery carries both, so a receiver holding either secret accepts it (Stripe's
    scheme; receivers compare against every ``v1``)."""
    macs = [
        signature(secret, timestamp=timestamp, body=body).split(",", 1)[1] for secret in secrets_
    ]
    return ",".join([f"t={timestamp}", *macs])


# How long the replaced secret still signs deliveries after a rotation, unless the request
# names another overlap: a day covers a receiver's deploy; a week at most.
DEFAULT_SECRET_OVERLAP = timedelta(hours=24)
MAX_SECRET_OVERLAP = timedelta(days=7)


def verify_signature(secret: str, header: str, *, body: bytes) -> bool:
    """Whether ``header`` signs ``body`` under ``secret`` (for receivers and tests)."""
    pairs = [part.split("=", 1) for part in header.split(",") if "=" in part]
    try:
        (timestamp,) = [int(value) for name, value in pairs if name == "t"]
    except ValueError:
        return False
    expected = signature(secret, timestamp=timestamp, body=body)
    matched = False
    for mac in (value for name, value in pairs if name == "v1"):  # several during a rotation
        matched |= hmac.compare_digest(expected, f"t={timestamp},v1={mac}")
    return matched


def backoff(attempts: int, *, base: timedelta) -> timedelta:
    """The wait after the ``attempts``-th failed attempt (1-based)."""
    wait: timedelta = base * (2 ** max(0, attempts - 1))
    return min(wait, MAX_BACKOFF)


def next_attempt_at(attempts: int, *, now: datetime, base: timedelta) -> datetime | None:
    """When to try again after ``attempts`` failures; None once the schedule is spent."""
    if attempts >= MAX_ATTEMPTS:
        return None
    return now + backoff(attempts, base=base)


def job_event_type(status: str) -> str | None:
    """``job.<status>`` for a status clients are told about, else None."""
    return f"job.{status}" if status in JOB_EVENT_STATUSES else None


def check_endpoint_url(value: str) -> str:
    """Refuse an endpoint addressed to a private, link-local or reserved IP literal.

    The gateway posts to the URL from inside the platform's network: such an address would make
    it a probe of internal services (cloud metadata at 169.254.169.254, say). Loopback stays
    allowed for local development (the URL rules of ``check_callback_url`` already limit plain
    http to it). Host *names* are resolved only at delivery; production should send webhooks
    through an egress proxy that refuses internal ranges.
    """
    # A trailing dot ("169.254.169.254.") is the same address to resolvers and to the client.
    host = (urlsplit(value).hostname or "").rstrip(".")
    address = _ip_literal(host)
    if address is None or address.is_loopback:
        return value
    if is_internal(address):
        raise ValueError("must not point at a private, link-local or reserved address")
    return value


# NAT64's well-known prefix (RFC 6052): the last 32 bits are the IPv4 address reached.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def is_internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """An address a webhook must never reach: anything not globally routable (private,
    loopback, link-local including cloud metadata, shared 100.64/10, documentation, reserved)
    or multicast, including an IPv4 address carried inside an IPv6 one (mapped, 6to4, NAT64),
    which reaches that IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        carried = address.ipv4_mapped or address.sixtofour
        if carried is None and address in _NAT64:
            carried = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if carried is not None:
            return is_internal(carried)
    return not address.is_global or address.is_multicast


def on_loopback(url: str) -> bool:
    """Whether ``url``'s host is a loopback literal or a ``localhost`` name."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    address = _ip_literal(host)
    if address is not None:
        return address.is_loopback
    return host == "localhost" or host.endswith(".localhost")


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``host`` names literally (see :func:`_ip_literal`), or None for a name."""
    return _ip_literal(host)


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names literally, including IPv4 shorthand resolvers accept.

    ``10.1``, ``2130706433`` and ``0x7f000001`` are IPv4 addresses to inet_aton (and so to the
    HTTP client), though not to ``ipaddress``: they must not slip past the checks as "names".
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(part.isalnum() for part in host.split(".")) and host[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None
