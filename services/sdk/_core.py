"""The sans-I/O core shared by the sync and the async client.

Every API call is described once, as an :class:`Operation`: the request to send and how to read
its answer. The two clients only move bytes (``httpx.Client`` or ``httpx.AsyncClient``) and
sleep (``time.sleep`` or ``asyncio.sleep``); which requests may be retried, how long to wait,
how an answer becomes a model or an error, and how confidential data is sealed live here, so
neither client repeats them.

Retries: a request is retried only when repeating it cannot do something twice: safe methods
(GET, HEAD, OPTIONS), idempotent ones (PUT, DELETE), and POSTs carrying an ``Idempotency-Key``
(the client makes one per logical call and sends the same one on each retry, so the gateway
replays the first answer instead of acting again). Retried answers: 429 (after ``Retry-After``),
503, 409 ``idempotency-in-flight`` (the first attempt is still running), and transport errors.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pydantic import TypeAdapter

from services.sdk.errors import TaskrouteAPIError, TaskrouteConnectionError, parse_retry_after
from services.sdk.models import TenantKey, VaultPublicKey, VaultPublicKeys
from shared import sealed_envelope, sealing_statements

T = TypeVar("T")

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Methods whose repetition has the effect of one call (RFC 9110 section 9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({429, 503})
# Pages as large as the gateway allows (1-100): fewer round trips when walking everything.
MAX_PAGE_SIZE = 100
USER_AGENT = "taskroute-python"


def new_idempotency_key() -> str:
    """A fresh key for one logical call (random: two calls never share one by accident)."""
    return f"tr-sdk-{uuid.uuid4()}"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: Mapping[str, str | int | bool] | None = None
    json: Any = None
    idempotency_key: str | None = None
    has_body: bool = False

    @property
    def retryable(self) -> bool:
        return self.method in IDEMPOTENT_METHODS or self.idempotency_key is not None

    def build(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        headers = {IDEMPOTENCY_HEADER: self.idempotency_key} if self.idempotency_key else {}
        params = {k: _param(v) for k, v in (self.params or {}).items()}
        if self.has_body:
            return http.build_request(
                self.method, self.path, params=params, json=self.json, headers=headers
            )
        return http.build_request(self.method, self.path, params=params, headers=headers)


def _param(value: str | int | bool) -> str | int:
    return ("true" if value else "false") if isinstance(value, bool) else value


@dataclass(frozen=True)
class Operation(Generic[T]):
    """One API call: the request, and how its 2xx answer becomes ``T``."""

    request: Request
    parse: Callable[[Any], T]


def model(kind: type[T]) -> Callable[[Any], T]:
    adapter = TypeAdapter(kind)
    return adapter.validate_python


def decode(response: httpx.Response) -> Any:
    """The JSON of a 2xx answer (None when empty); :class:`TaskrouteAPIError` otherwise."""
    if response.is_success:
        return response.json() if response.content else None
    raise TaskrouteAPIError.from_response(response)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter.

    ``max_retries`` extra attempts at most; the n-th waits a random time in
    ``[0, min(max_backoff, backoff * 2**n)]`` (full jitter spreads clients that failed together);
    a 429's ``Retry-After`` is honoured as the minimum wait, unless it exceeds
    ``max_retry_after``: then waiting is the caller's decision and the error is raised.
    """

    max_retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 60.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, request: Request, attempt: int, outcome: httpx.Response | Exception) -> float:
        """Seconds to wait before retrying, or -1 to stop (``attempt`` counts from 0)."""
        if attempt >= self.max_retries or not request.retryable:
            return -1
        jitter = self.rng.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))
        if isinstance(outcome, Exception):
            return jitter if isinstance(outcome, httpx.TransportError) else -1
        if outcome.status_code == 409 and _problem(outcome) == "idempotency-in-flight":
            return jitter
        if outcome.status_code not in RETRY_STATUSES:
            return -1
        retry_after = parse_retry_after(outcome.headers.get("Retry-After"))
        if retry_after is None:
            return jitter
        if retry_after > self.max_retry_after:
            return -1
        # Retry-After is the earliest useful moment; a little jitter on top spreads the herd.
        return retry_after + self.rng.uniform(0, self.backoff)


def _problem(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    kind = body.get("type") if isinstance(body, dict) else None
    return str(kind).rsplit("/", 1)[-1] if kind else None


# -- sealing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settled(Generic[T]):
    value: T


def settle(
    operation: Operation[T],
    policy: RetryPolicy,
    attempt: int,
    outcome: httpx.Response | httpx.TransportError,
) -> Settled[T] | float:
    """The call's result, or the seconds to wait before attempt ``attempt + 1``.

    Raises :class:`TaskrouteAPIError` or :class:`TaskrouteConnectionError` once retrying is over.
    """
    if isinstance(outcome, httpx.Response) and outcome.is_success:
        return Settled(operation.parse(decode(outcome)))
    wait = policy.delay(operation.request, attempt, outcome)
    if wait >= 0:
        return wait
    if isinstance(outcome, httpx.Response):
        raise TaskrouteAPIError.from_response(outcome)
    raise TaskrouteConnectionError(
        f"could not reach the gateway ({type(outcome).__name__}) after {attempt + 1} attempt(s)"
    ) from outcome


# -- sealing --------------------------------------------------------------------------------


def newest_key(keys: VaultPublicKeys) -> VaultPublicKey:
    if not keys.keys:
        raise ValueError("the vault offered no public key to seal to")
    return keys.keys[0]  # newest first: new data goes to the newest key


def seal_to(
    confidential: Any,
    *,
    key_id: str,
    public_key: str,
    tenant_id: str,
    job_ref: str,
    statement: str | None = None,
    vault_key: Ed25519PublicKey | None = None,
    job_id: str | None = None,
) -> dict[str, Any]:
    """Seal a JSON value to a tenant vault key, bound to (tenant, job_ref, key id).

    With ``vault_key`` (the vault's public key, pinned by the caller) only to a key the vault's
    signed ``statement`` names for the tenant (and for ``job_id``, a member's result): the
    gateway that carried the key is not trusted with it (shared/sealing_statements.py)."""
    if vault_key is not None:
        sealing_statements.require_vouched(
            statement,
            vault_key,
            tenant_id=tenant_id,
            key_id=key_id,
            public_key=public_key,
            job_id=job_id,
        )
    loaded = sealed_envelope.load_public_key(public_key)
    if sealed_envelope.key_id_for(loaded) != key_id:
        # The id is derived from the key: a mismatch means the answer was tampered with.
        raise ValueError("the vault public key does not match its key id")
    envelope = sealed_envelope.seal_json(
        confidential, public_key=loaded, tenant_id=tenant_id, job_ref=job_ref, key_id=key_id
    )
    return envelope.to_json()


def seal_result(
    confidential: Any, key: TenantKey, *, job_id: str, vault_key: Ed25519PublicKey | None
) -> dict[str, Any]:
    """A member's confidential result sealed to the job's tenant key (``key``, the answer of
    ``GET /v1/team/jobs/{id}/tenant-key``), bound to the job.

    The member cannot know the job's tenant. With ``vault_key`` pinned, the vault's statement
    must name this job: the vault signs one only for a seal grant the router gave for it, so
    the tenant is the router's word, not the gateway's."""
    job_id = str(uuid.UUID(job_id))  # as the API names jobs (the gateway took this one)
    if key.job_ref != job_id:
        raise sealing_statements.UnverifiedSealingKey("the key was given for another job")
    return seal_to(
        confidential,
        key_id=key.key_id,
        public_key=key.public_key,
        tenant_id=key.tenant_id,
        job_ref=job_id,
        statement=key.statement,
        vault_key=vault_key,
        job_id=job_id,
    )


def new_job_ref() -> str:
    """A client job reference for an envelope: unique per job, as the vault requires."""
    return f"sdk-{uuid.uuid4()}"


def open_sealed(envelope: Mapping[str, Any], private_key: X25519PrivateKey) -> Any:
    """Open an envelope sealed to ``private_key`` (a member's delivered confidential data)."""
    return sealed_envelope.open_json(sealed_envelope.parse(envelope), private_key)


def public_key_text(key: X25519PrivateKey | str) -> str:
    """A member's public key as the API takes it (base64url raw X25519)."""
    if isinstance(key, str):
        sealed_envelope.load_public_key(key)  # refuse a malformed key before sending it
        return key
    return sealed_envelope.b64url_encode(sealed_envelope.public_raw(key.public_key()))
