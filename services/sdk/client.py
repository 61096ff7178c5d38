"""The Taskroute Python client: :class:`TaskrouteClient` (sync) and :class:`AsyncTaskrouteClient`.

Both are thin: every call is an :class:`~services.sdk._core.Operation` built once in
:mod:`services.sdk.operations`, and retries, parsing and sealing live in :mod:`services.sdk._core`.
Each client only sends, sleeps and loops over pages with its own kind of I/O.

    with TaskrouteClient("http://127.0.0.1:8000", api_key=CLIENT_KEY) as taskroute:
        job = taskroute.submit_job("Code adverse events", "...", confidential={...}, seal=True)
        for job in taskroute.iter_jobs(status="completed"):
            print(job.id, taskroute.get_result(job.id).result)

Every POST carries an ``Idempotency-Key`` made for that one call (or the one you pass), sent
again on each retry, so a retried submission never makes a second job.

Sealing here (``seal=True``) keeps the data from the gateway only if the key it seals to is the
vault's: pass ``vault_public_key`` (the vault's ``vault.pub``, from your operator) and the client
seals only to a key the vault's signed statement names (shared/sealing_statements.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from services.sdk import _core
from services.sdk import operations as ops
from services.sdk._core import Operation, RetryPolicy, Settled
from services.sdk.models import (
    ApiKey,
    ClassifyResult,
    Feedback,
    Job,
    JobEvent,
    JobResult,
    MemberKey,
    Page,
    Tenant,
    TenantKey,
    VaultPublicKeys,
    WebhookDelivery,
    WebhookEndpoint,
)
from shared import sealing_statements

T = TypeVar("T")

# A submission seals at the vault and routes at the router: seconds, not minutes.
DEFAULT_TIMEOUT_SECONDS = 20.0
MEMBER_ACTIONS = ("claim", "heartbeat", "release", "reject")


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "User-Agent": _core.USER_AGENT}


def _key(idempotency_key: str | None) -> str:
    return idempotency_key or _core.new_idempotency_key()


def _pinned(vault_public_key: str | bytes | None) -> Ed25519PublicKey | None:
    """The vault's public key (PEM: the ``vault.pub`` an operator gives you) or None."""
    if vault_public_key is None:
        return None
    return sealing_statements.load_vault_public_key(vault_public_key)


def _opened(answer: dict[str, Any], private_key: X25519PrivateKey | None) -> Any:
    """The plaintext of a member's confidential answer, opening it if it came sealed."""
    if "confidential_sealed" in answer and answer["confidential_sealed"] is not None:
        if private_key is None:
            raise ValueError("the data is sealed to your registered key: pass private_key")
        return _core.open_sealed(answer["confidential_sealed"], private_key)
    return answer.get("confidential")


class TaskrouteClient:
    """Synchronous client. Use as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retry: RetryPolicy | None = None,
        tenant_id: str | None = None,
        http_client: httpx.Client | None = None,
        vault_public_key: str | bytes | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.tenant_id = tenant_id
        self._vault_key = _pinned(vault_public_key)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(base_url=base_url, timeout=timeout)
        self._http.headers.update(_headers(api_key))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def send(self, operation: Operation[T]) -> T:
        """Send one operation with the retry policy; its parsed answer or a typed error."""
        attempt = 0
        while True:
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = self._http.send(operation.request.build(self._http))
            except httpx.TransportError as exc:
                outcome = exc
            step = _core.settle(operation, self.retry, attempt, outcome)
            if isinstance(step, Settled):
                return step.value
            time.sleep(step)
            attempt += 1

    def _pages(self, first: Callable[[str | None], Operation[Page[T]]]) -> Iterator[T]:
        cursor: str | None = None
        while True:
            page = self.send(first(cursor))
            yield from page.data
            if not page.has_more or not page.next_cursor:
                return
            cursor = page.next_cursor

    # -- clients --------------------------------------------------------------------------

    def vault_public_keys(self) -> VaultPublicKeys:
        return self.send(ops.vault_public_keys())

    def submit_job(
        self,
        title: str,
        description: str,
        *,
        confidential: Any = None,
        seal: bool = False,
        job_ref: str | None = None,
        service: str | None = None,
        priority: str | None = None,
        due_at: datetime | str | None = None,
        data_policy: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submit a job; ``seal=True`` seals the confidential data here, not at the gateway.

        Sealed data is bound to ``job_ref`` (made for you if not given): neither the gateway
        nor the router ever sees it in plaintext.
        """
        sealed = None
        if seal and confidential is not None:
            keys = self.send(ops.vault_public_keys())
            key = _core.newest_key(keys)
            sealed = _core.seal_to(
                confidential,
                key_id=key.key_id,
                public_key=key.public_key,
                tenant_id=_sealing_tenant(self.tenant_id, keys, pinned=self._vault_key),
                job_ref=job_ref or _core.new_job_ref(),
                statement=keys.statement,
                vault_key=self._vault_key,
            )
            confidential = None
        return self.send(
            ops.submit_job(
                title=title,
                description=description,
                confidential=confidential,
                confidential_sealed=sealed,
                service=service,
                priority=priority,
                due_at=due_at,
                data_policy=data_policy,
                metadata=metadata,
                callback_url=callback_url,
                idempotency_key=_key(idempotency_key),
            )
        )

    def get_job(self, job_id: str) -> Job:
        return self.send(ops.get_job(job_id))

    def list_jobs(
        self,
        *,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        **filters: str | None,
    ) -> Page[Job]:
        """One page of the tenant's jobs, newest first; ``filters``: ``priority``, ``tier``,
        ``domain``, ``created_after``, ``created_before`` (a cursor needs the same filters)."""
        return self.send(ops.list_jobs(status=status, limit=limit, cursor=cursor, **filters))

    def iter_jobs(
        self, *, status: str | None = None, page_size: int = _core.MAX_PAGE_SIZE
    ) -> Iterator[Job]:
        """Every job of the tenant, newest first, fetching pages as the iteration needs them."""
        return self._pages(lambda c: ops.list_jobs(status=status, limit=page_size, cursor=c))

    def job_events(self, job_id: str) -> list[JobEvent]:
        return self.send(ops.job_events(job_id))

    def job_routing(self, job_id: str) -> dict[str, Any]:
        return self.send(ops.job_routing(job_id))

    def cancel_job(
        self, job_id: str, *, reason: str | None = None, idempotency_key: str | None = None
    ) -> Job:
        return self.send(
            ops.cancel_job(job_id, reason=reason, idempotency_key=_key(idempotency_key))
        )

    def get_result(self, job_id: str) -> JobResult:
        return self.send(ops.job_result(job_id))

    def send_feedback(
        self,
        job_id: str,
        *,
        rating: int,
        comment: str | None = None,
        idempotency_key: str | None = None,
    ) -> Feedback:
        """Rate a completed job 1-5, once (moves the team's quality)."""
        return self.send(
            ops.job_feedback(
                job_id, rating=rating, comment=comment, idempotency_key=_key(idempotency_key)
            )
        )

    def classify(
        self, items: list[dict[str, Any]], *, idempotency_key: str | None = None
    ) -> list[ClassifyResult]:
        """Dry run: how each ``{"title"?, "description"}`` would be classified and routed."""
        return self.send(ops.classify(items, idempotency_key=_key(idempotency_key)))

    def create_webhook_endpoint(
        self, url: str, *, description: str | None = None, idempotency_key: str | None = None
    ) -> WebhookEndpoint:
        """Register an endpoint; its ``secret`` is in this answer only."""
        return self.send(
            ops.create_webhook_endpoint(
                url=url, description=description, idempotency_key=_key(idempotency_key)
            )
        )

    def iter_webhook_endpoints(self) -> Iterator[WebhookEndpoint]:
        return self._pages(
            lambda c: ops.list_webhook_endpoints(limit=_core.MAX_PAGE_SIZE, cursor=c)
        )

    def rotate_webhook_secret(
        self,
        endpoint_id: str,
        *,
        overlap_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> WebhookEndpoint:
        """A new signing secret (``secret``, in this answer only); deliveries carry both
        signatures for ``overlap_seconds`` (a day by default)."""
        return self.send(
            ops.rotate_webhook_secret(
                endpoint_id, overlap_seconds=overlap_seconds, idempotency_key=_key(idempotency_key)
            )
        )

    def delete_webhook_endpoint(self, endpoint_id: str) -> WebhookEndpoint:
        return self.send(ops.delete_webhook_endpoint(endpoint_id))

    def iter_webhook_deliveries(self, endpoint_id: str) -> Iterator[WebhookDelivery]:
        return self._pages(
            lambda c: ops.list_webhook_deliveries(endpoint_id, limit=_core.MAX_PAGE_SIZE, cursor=c)
        )

    # -- team members ---------------------------------------------------------------------

    def team_jobs(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Page[Job]:
        return self.send(ops.team_jobs(status=status, limit=limit, cursor=cursor))

    def iter_team_jobs(self, *, status: str | None = None) -> Iterator[Job]:
        return self._pages(
            lambda c: ops.team_jobs(status=status, limit=_core.MAX_PAGE_SIZE, cursor=c)
        )

    def claim(self, job_id: str, *, idempotency_key: str | None = None) -> Job:
        return self.send(ops.member_action(job_id, "claim", idempotency_key=_key(idempotency_key)))

    def heartbeat(self, job_id: str, *, idempotency_key: str | None = None) -> Job:
        return self.send(
            ops.member_action(job_id, "heartbeat", idempotency_key=_key(idempotency_key))
        )

    def release(
        self, job_id: str, *, reason: str | None = None, idempotency_key: str | None = None
    ) -> Job:
        return self.send(
            ops.member_action(
                job_id, "release", reason=reason, idempotency_key=_key(idempotency_key)
            )
        )

    def reject(self, job_id: str, *, reason: str, idempotency_key: str | None = None) -> Job:
        return self.send(
            ops.member_action(
                job_id, "reject", reason=reason, idempotency_key=_key(idempotency_key)
            )
        )

    def read_confidential(self, job_id: str, *, private_key: X25519PrivateKey | None = None) -> Any:
        """The job's confidential data (lease holder only), opened locally if sealed to you."""
        return _opened(self.send(ops.confidential(job_id)), private_key)

    def tenant_key(self, job_id: str) -> TenantKey:
        return self.send(ops.tenant_key(job_id))

    def complete(
        self,
        job_id: str,
        *,
        result: dict[str, Any],
        confidential_result: Any = None,
        seal: bool = False,
        idempotency_key: str | None = None,
    ) -> Job:
        """Complete a job; with ``seal=True`` the confidential result is sealed here."""
        sealed = None
        if seal and confidential_result is not None:
            key = self.send(ops.tenant_key(job_id))
            sealed = _core.seal_result(
                confidential_result, key, job_id=job_id, vault_key=self._vault_key
            )
            confidential_result = None
        return self.send(
            ops.complete(
                job_id,
                result=result,
                confidential_result=confidential_result,
                confidential_result_sealed=sealed,
                idempotency_key=_key(idempotency_key),
            )
        )

    def register_key(
        self, key: X25519PrivateKey | str, *, endorsement: str | None = None
    ) -> MemberKey:
        """Register the member's public key (give the private key or the public key text),
        with the endorsement an operator made for it (``taskroute members endorse``) where the
        vault requires one; the same key again with a new endorsement renews it."""
        return self.send(ops.register_member_key(_core.public_key_text(key), endorsement))

    # -- operators ------------------------------------------------------------------------

    def create_tenant(
        self,
        name: str,
        *,
        policy: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Tenant:
        """Register a tenant; its first client API key is in this answer only."""
        return self.send(
            ops.create_tenant(name=name, policy=policy, idempotency_key=_key(idempotency_key))
        )

    def iter_tenants(self) -> Iterator[Tenant]:
        return self._pages(lambda c: ops.list_tenants(limit=_core.MAX_PAGE_SIZE, cursor=c))

    def get_tenant(self, tenant_id: str) -> Tenant:
        return self.send(ops.get_tenant(tenant_id))

    def create_api_key(self, tenant_id: str, *, idempotency_key: str | None = None) -> ApiKey:
        """Issue another client key for a tenant; the key is in this answer only."""
        return self.send(ops.create_api_key(tenant_id, idempotency_key=_key(idempotency_key)))

    def list_api_keys(self, tenant_id: str, *, revoked: bool | None = None) -> list[ApiKey]:
        """Every API key of the tenant (all pages), newest first; ``revoked`` narrows it."""
        return list(
            self._pages(
                lambda c: ops.list_api_keys(
                    tenant_id, limit=_core.MAX_PAGE_SIZE, cursor=c, revoked=revoked
                )
            )
        )

    def revoke_api_key(self, tenant_id: str, key_id: str) -> ApiKey:
        return self.send(ops.revoke_api_key(tenant_id, key_id))

    def create_team(
        self, team: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        return self.send(ops.create_team(team, idempotency_key=_key(idempotency_key)))

    def create_member(
        self, team_id: str, name: str, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Add a member to a team; the member's API key is in this answer only."""
        return self.send(
            ops.create_member(team_id, name=name, idempotency_key=_key(idempotency_key))
        )


class AsyncTaskrouteClient:
    """Asynchronous client, call for call the same as :class:`TaskrouteClient`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retry: RetryPolicy | None = None,
        tenant_id: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        vault_public_key: str | bytes | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.tenant_id = tenant_id
        self._vault_key = _pinned(vault_public_key)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(base_url=base_url, timeout=timeout)
        self._http.headers.update(_headers(api_key))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def send(self, operation: Operation[T]) -> T:
        """Send one operation with the retry policy; its parsed answer or a typed error."""
        attempt = 0
        while True:
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = await self._http.send(operation.request.build(self._http))
            except httpx.TransportError as exc:
                outcome = exc
            step = _core.settle(operation, self.retry, attempt, outcome)
            if isinstance(step, Settled):
                return step.value
            await asyncio.sleep(step)
            attempt += 1

    async def _pages(self, first: Callable[[str | None], Operation[Page[T]]]) -> AsyncIterator[T]:
        cursor: str | None = None
        while True:
            page = await self.send(first(cursor))
            for item in page.data:
                yield item
            if not page.has_more or not page.next_cursor:
                return
            cursor = page.next_cursor

    # -- clients --------------------------------------------------------------------------

    async def vault_public_keys(self) -> VaultPublicKeys:
        return await self.send(ops.vault_public_keys())

    async def submit_job(
        self,
        title: str,
        description: str,
        *,
        confidential: Any = None,
        seal: bool = False,
        job_ref: str | None = None,
        service: str | None = None,
        priority: str | None = None,
        due_at: datetime | str | None = None,
        data_policy: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submit a job; see :meth:`TaskrouteClient.submit_job`."""
        sealed = None
        if seal and confidential is not None:
            keys = await self.send(ops.vault_public_keys())
            key = _core.newest_key(keys)
            sealed = _core.seal_to(
                confidential,
                key_id=key.key_id,
                public_key=key.public_key,
                tenant_id=_sealing_tenant(self.tenant_id, keys, pinned=self._vault_key),
                job_ref=job_ref or _core.new_job_ref(),
                statement=keys.statement,
                vault_key=self._vault_key,
            )
            confidential = None
        return await self.send(
            ops.submit_job(
                title=title,
                description=description,
                confidential=confidential,
                confidential_sealed=sealed,
                service=service,
                priority=priority,
                due_at=due_at,
                data_policy=data_policy,
                metadata=metadata,
                callback_url=callback_url,
                idempotency_key=_key(idempotency_key),
            )
        )

    async def get_job(self, job_id: str) -> Job:
        return await self.send(ops.get_job(job_id))

    async def list_jobs(
        self,
        *,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        **filters: str | None,
    ) -> Page[Job]:
        return await self.send(ops.list_jobs(status=status, limit=limit, cursor=cursor, **filters))

    def iter_jobs(
        self, *, status: str | None = None, page_size: int = _core.MAX_PAGE_SIZE
    ) -> AsyncIterator[Job]:
        return self._pages(lambda c: ops.list_jobs(status=status, limit=page_size, cursor=c))

    async def job_events(self, job_id: str) -> list[JobEvent]:
        return await self.send(ops.job_events(job_id))

    async def job_routing(self, job_id: str) -> dict[str, Any]:
        return await self.send(ops.job_routing(job_id))

    async def cancel_job(
        self, job_id: str, *, reason: str | None = None, idempotency_key: str | None = None
    ) -> Job:
        return await self.send(
            ops.cancel_job(job_id, reason=reason, idempotency_key=_key(idempotency_key))
        )

    async def get_result(self, job_id: str) -> JobResult:
        return await self.send(ops.job_result(job_id))

    async def send_feedback(
        self,
        job_id: str,
        *,
        rating: int,
        comment: str | None = None,
        idempotency_key: str | None = None,
    ) -> Feedback:
        return await self.send(
            ops.job_feedback(
                job_id, rating=rating, comment=comment, idempotency_key=_key(idempotency_key)
            )
        )

    async def classify(
        self, items: list[dict[str, Any]], *, idempotency_key: str | None = None
    ) -> list[ClassifyResult]:
        return await self.send(ops.classify(items, idempotency_key=_key(idempotency_key)))

    async def create_webhook_endpoint(
        self, url: str, *, description: str | None = None, idempotency_key: str | None = None
    ) -> WebhookEndpoint:
        return await self.send(
            ops.create_webhook_endpoint(
                url=url, description=description, idempotency_key=_key(idempotency_key)
            )
        )

    async def rotate_webhook_secret(
        self,
        endpoint_id: str,
        *,
        overlap_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> WebhookEndpoint:
        return await self.send(
            ops.rotate_webhook_secret(
                endpoint_id, overlap_seconds=overlap_seconds, idempotency_key=_key(idempotency_key)
            )
        )

    def iter_webhook_endpoints(self) -> AsyncIterator[WebhookEndpoint]:
        return self._pages(
            lambda c: ops.list_webhook_endpoints(limit=_core.MAX_PAGE_SIZE, cursor=c)
        )

    async def delete_webhook_endpoint(self, endpoint_id: str) -> WebhookEndpoint:
        return await self.send(ops.delete_webhook_endpoint(endpoint_id))

    def iter_webhook_deliveries(self, endpoint_id: str) -> AsyncIterator[WebhookDelivery]:
        return self._pages(
            lambda c: ops.list_webhook_deliveries(endpoint_id, limit=_core.MAX_PAGE_SIZE, cursor=c)
        )

    # -- team members ---------------------------------------------------------------------

    async def team_jobs(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Page[Job]:
        return await self.send(ops.team_jobs(status=status, limit=limit, cursor=cursor))

    def iter_team_jobs(self, *, status: str | None = None) -> AsyncIterator[Job]:
        return self._pages(
            lambda c: ops.team_jobs(status=status, limit=_core.MAX_PAGE_SIZE, cursor=c)
        )

    async def claim(self, job_id: str, *, idempotency_key: str | None = None) -> Job:
        return await self.send(
            ops.member_action(job_id, "claim", idempotency_key=_key(idempotency_key))
        )

    async def heartbeat(self, job_id: str, *, idempotency_key: str | None = None) -> Job:
        return await self.send(
            ops.member_action(job_id, "heartbeat", idempotency_key=_key(idempotency_key))
        )

    async def release(
        self, job_id: str, *, reason: str | None = None, idempotency_key: str | None = None
    ) -> Job:
        return await self.send(
            ops.member_action(
                job_id, "release", reason=reason, idempotency_key=_key(idempotency_key)
            )
        )

    async def reject(self, job_id: str, *, reason: str, idempotency_key: str | None = None) -> Job:
        return await self.send(
            ops.member_action(
                job_id, "reject", reason=reason, idempotency_key=_key(idempotency_key)
            )
        )

    async def read_confidential(
        self, job_id: str, *, private_key: X25519PrivateKey | None = None
    ) -> Any:
        return _opened(await self.send(ops.confidential(job_id)), private_key)

    async def tenant_key(self, job_id: str) -> TenantKey:
        return await self.send(ops.tenant_key(job_id))

    async def complete(
        self,
        job_id: str,
        *,
        result: dict[str, Any],
        confidential_result: Any = None,
        seal: bool = False,
        idempotency_key: str | None = None,
    ) -> Job:
        sealed = None
        if seal and confidential_result is not None:
            key = await self.send(ops.tenant_key(job_id))
            sealed = _core.seal_result(
                confidential_result, key, job_id=job_id, vault_key=self._vault_key
            )
            confidential_result = None
        return await self.send(
            ops.complete(
                job_id,
                result=result,
                confidential_result=confidential_result,
                confidential_result_sealed=sealed,
                idempotency_key=_key(idempotency_key),
            )
        )

    async def register_key(
        self, key: X25519PrivateKey | str, *, endorsement: str | None = None
    ) -> MemberKey:
        return await self.send(ops.register_member_key(_core.public_key_text(key), endorsement))

    # -- operators ------------------------------------------------------------------------

    async def create_tenant(
        self,
        name: str,
        *,
        policy: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Tenant:
        return await self.send(
            ops.create_tenant(name=name, policy=policy, idempotency_key=_key(idempotency_key))
        )

    def iter_tenants(self) -> AsyncIterator[Tenant]:
        return self._pages(lambda c: ops.list_tenants(limit=_core.MAX_PAGE_SIZE, cursor=c))

    async def get_tenant(self, tenant_id: str) -> Tenant:
        return await self.send(ops.get_tenant(tenant_id))

    async def create_api_key(self, tenant_id: str, *, idempotency_key: str | None = None) -> ApiKey:
        return await self.send(ops.create_api_key(tenant_id, idempotency_key=_key(idempotency_key)))

    async def list_api_keys(self, tenant_id: str, *, revoked: bool | None = None) -> list[ApiKey]:
        """Every API key of the tenant (all pages), newest first; ``revoked`` narrows it."""
        pages = self._pages(
            lambda c: ops.list_api_keys(
                tenant_id, limit=_core.MAX_PAGE_SIZE, cursor=c, revoked=revoked
            )
        )
        return [key async for key in pages]

    async def revoke_api_key(self, tenant_id: str, key_id: str) -> ApiKey:
        return await self.send(ops.revoke_api_key(tenant_id, key_id))

    async def create_team(
        self, team: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        return await self.send(ops.create_team(team, idempotency_key=_key(idempotency_key)))

    async def create_member(
        self, team_id: str, name: str, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        return await self.send(
            ops.create_member(team_id, name=name, idempotency_key=_key(idempotency_key))
        )


def _sealing_tenant(
    tenant_id: str | None, keys: VaultPublicKeys, *, pinned: Ed25519PublicKey | None
) -> str:
    """The tenant to seal for: the client's own, else the gateway's answer, which a pinned
    client does not take (a gateway could answer another tenant's genuine keys)."""
    if tenant_id is not None:
        return tenant_id
    if pinned is not None or keys.tenant_id is None:
        raise ValueError("sealing needs the tenant id: pass tenant_id to the client")
    return keys.tenant_id
