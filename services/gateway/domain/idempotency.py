"""Idempotency keys with Stripe's semantics: the rules, without I/O.

Design
------
A client may send ``Idempotency-Key: <up to 255 printable characters>`` with any POST. The
gateway keeps one record per (caller scope, key) for ``RETENTION``:

* **Scope.** A client's keys are scoped to its tenant (two API keys of one tenant share one key
  space, as Stripe scopes keys to the account), a member's to the member, an operator's to the
  API key. The same key in two tenants is two unrelated records.
* **Claim first.** The record is inserted, in its own committed transaction, *before* the route
  calls the router or the vault; a unique constraint on (scope, key digest) lets exactly one of
  several concurrent duplicates win. The losers see the record: ``409`` while it is in flight,
  the stored answer once it is done.
* **Fingerprint.** Method, path and the canonical JSON body are MACed; a retry whose fingerprint
  differs is refused with ``422`` (a reused key names a different request).
* **Resource id.** The claim carries an id made once (a job's id for ``POST /v1/jobs``), so a
  retry after a crash half-way reuses it and the router's idempotency on job ids prevents a
  second job.
* **5xx is not stored**: the claim is released (the resource id kept) so the client may retry.
  A claim in flight for longer than the lock timeout (a crashed replica) may be taken over.

Nothing secret is stored in clear: the key is kept only as an HMAC digest under the API-key
pepper (a client might put anything in it), the fingerprint is a MAC (a bare hash of a body with
a short confidential value could be brute-forced), and the stored answer (which may carry a newly
issued API key) is sealed with AES-256-GCM under a key derived from the pepper *and the
idempotency key itself*, which the database never holds: a stolen database opens no answer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.gateway.domain.api_keys import Role
from services.gateway.domain.errors import (
    IdempotencyInFlight,
    IdempotencyKeyInvalid,
    IdempotencyMismatch,
)
from services.gateway.domain.principal import Principal

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Stripe's length limit; long enough for any UUID or composed key.
MAX_KEY_CHARS = 255
# Stripe keeps keys 24 hours: long enough for any client's retry loop, short enough to bound
# the table to one day of writes.
RETENTION = timedelta(hours=24)
# 12 bytes: the AES-GCM nonce size; random per answer since each key seals one answer at a time.
NONCE_BYTES = 12
# Response headers worth replaying: what a client acts on; the rest is per-response plumbing.
REPLAYED_HEADERS = frozenset({"content-type", "etag", "location"})


class State(StrEnum):
    IN_FLIGHT = "in_flight"
    COMPLETED = "completed"


def check_key(value: str) -> str:
    """The key as given, or :class:`IdempotencyKeyInvalid` (never echoing it)."""
    if not value or len(value) > MAX_KEY_CHARS or not value.isascii() or not value.isprintable():
        raise IdempotencyKeyInvalid()
    return value


def scope_of(principal: Principal) -> str:
    """The key space a caller's idempotency keys live in (see the module docstring)."""
    if principal.role is Role.CLIENT:
        return f"tenant:{principal.tenant}"
    if principal.role is Role.MEMBER:
        return f"member:{principal.member}"
    return f"operator:{principal.key_id}"


def _mac(pepper: bytes, *parts: bytes) -> str:
    return hmac.new(pepper, b"\0".join(parts), hashlib.sha256).hexdigest()


def key_digest(key: str, *, pepper: bytes) -> str:
    return _mac(pepper, b"idempotency-key", key.encode())


def canonical_body(body: bytes) -> bytes:
    """JSON bodies compared by content (key order and spacing do not matter), others as bytes."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body
    return json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode()


def fingerprint(*, method: str, path: str, body: bytes, pepper: bytes) -> str:
    return _mac(
        pepper, b"idempotency-request", method.encode(), path.encode(), canonical_body(body)
    )


def _answer_key(*, scope: str, key: str, pepper: bytes) -> bytes:
    return hmac.new(
        pepper, b"\0".join((b"idempotency-answer", scope.encode(), key.encode())), hashlib.sha256
    ).digest()


@dataclass(frozen=True)
class StoredAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def seal(self, *, scope: str, key: str, pepper: bytes) -> bytes:
        plain = json.dumps(
            {"headers": self.headers, "body": self.body.decode("latin-1")}, separators=(",", ":")
        ).encode()
        nonce = os.urandom(NONCE_BYTES)
        aad = scope.encode()
        return nonce + AESGCM(_answer_key(scope=scope, key=key, pepper=pepper)).encrypt(
            nonce, plain, aad
        )

    @classmethod
    def open(
        cls, sealed: bytes, *, status: int, scope: str, key: str, pepper: bytes
    ) -> StoredAnswer:
        nonce, ciphertext = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        try:
            plain = AESGCM(_answer_key(scope=scope, key=key, pepper=pepper)).decrypt(
                nonce, ciphertext, scope.encode()
            )
        except InvalidTag:
            # Only a different key could get here (the digest matched), i.e. never; refuse
            # rather than replay something unverifiable.
            raise IdempotencyMismatch() from None
        data: dict[str, Any] = json.loads(plain)
        headers = [(str(name), str(value)) for name, value in data["headers"]]
        return cls(status=status, headers=headers, body=str(data["body"]).encode("latin-1"))


@dataclass(frozen=True)
class Existing:
    """What the database holds under a (scope, key) another request claimed first."""

    method: str
    path: str
    fingerprint: str
    state: State
    locked_at: datetime | None
    expires_at: datetime


class Verdict(StrEnum):
    REPLAY = "replay"
    TAKE_OVER = "take_over"
    EXPIRED = "expired"


def judge(
    existing: Existing,
    *,
    method: str,
    path: str,
    request_fingerprint: str,
    now: datetime,
    lock_timeout: timedelta,
) -> Verdict:
    """What to do with a request whose key is already recorded (raises 422 or 409)."""
    if existing.expires_at <= now:
        return Verdict.EXPIRED
    if (existing.method, existing.path, existing.fingerprint) != (
        method,
        path,
        request_fingerprint,
    ):
        raise IdempotencyMismatch()
    if existing.state is State.COMPLETED:
        return Verdict.REPLAY
    if existing.locked_at is None or existing.locked_at <= now - lock_timeout:
        return Verdict.TAKE_OVER
    raise IdempotencyInFlight()
