"""Typed client of the vault's internal API (docs/architecture.md, "Vault").

The gateway hands confidential values to the vault and gets opaque references back; it never
holds a key. Values pass through memory only for the length of one request and are never
logged (``call_service`` logs nothing of bodies either).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.clients.resilience import resilient_call
from shared.errors import ServiceUnavailable

SERVICE = "vault"


class SealedRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ref: str
    key_version: int | str | None = None
    # A result's: the vault's signed proof for the router that it is stored
    # (shared.result_receipts). A bearer of nothing secret, but never logged.
    receipt: str | None = Field(default=None, repr=False)


class VaultClient:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def _call(
        self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any
    ) -> Any:
        """One call through the upstream's breaker, retried if ``idempotent`` (reads are;
        writes only when repeating them cannot do anything twice): clients/resilience.py."""
        return await resilient_call(
            self._client, method, path, service=SERVICE, idempotent=idempotent, **kwargs
        )

    async def ready(self) -> bool:
        """Whether the service can serve: its own readiness (its database answers), not
        merely that its process is up."""
        try:
            response = await self._client.get("/readyz")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def seal(self, *, tenant_id: str, job_id: str, purpose: str, data: Any) -> SealedRecord:
        """Seal a job's confidential data under its tenant's key; returns the reference."""
        body = await self._call(
            "POST",
            "/internal/v1/records",
            json={"tenant_id": tenant_id, "job_id": job_id, "purpose": purpose, "data": data},
            idempotent=True,  # the same data again answers the first record's reference
        )
        return SealedRecord.model_validate(body)

    async def discard_unrouted(self, *, tenant_id: str, job_id: str) -> int:
        """Delete what a submission that never reached the router sealed; how many records."""
        body = await self._call(
            "POST",
            "/internal/v1/records/discard",
            json={"tenant_id": tenant_id, "job_id": job_id},
            idempotent=True,  # deleting what is gone already deletes nothing
        )
        return int(body.get("discarded", 0)) if isinstance(body, dict) else 0

    async def seal_by_grant(self, *, grant: str, data: Any) -> SealedRecord:
        """Seal a result under a router-issued ``seal`` grant."""
        body = await self._call(
            "POST", "/internal/v1/records/sealed-by-grant", json={"grant": grant, "data": data}
        )
        return SealedRecord.model_validate(body)

    async def open(self, *, grant: str) -> Any:
        """Open the record a router-issued ``open`` grant names; returns the plaintext JSON."""
        body = await self._call(
            "POST", "/internal/v1/records/open", json={"grant": grant}, idempotent=True
        )
        if not isinstance(body, dict) or "data" not in body:
            raise ServiceUnavailable("The vault service gave an unexpected answer.")
        return body["data"]

    async def sealing_keys(self, *, tenant_id: str) -> Any:
        """The tenant's public sealing keys (``{"keys": [...]}``); no private half ever."""
        return await self._call("GET", f"/internal/v1/tenants/{tenant_id}/sealing-keys")

    async def sealing_keys_for_grant(self, *, grant: str) -> Any:
        """The sealing keys of the tenant a router-signed seal grant names, with the vault's
        statement for that job (``{"keys": [...], "statement"}``)."""
        return await self._call(
            "POST", "/internal/v1/sealing-keys/by-grant", json={"grant": grant}, idempotent=True
        )

    async def store_sealed(
        self, *, tenant_id: str, job_id: str, envelope: dict[str, Any]
    ) -> SealedRecord:
        """Hand a client-sealed envelope to the vault untouched; returns the reference."""
        body = await self._call(
            "POST",
            "/internal/v1/records/sealed",
            json={"tenant_id": tenant_id, "job_id": job_id, "envelope": envelope},
        )
        return SealedRecord.model_validate(body)

    async def store_sealed_result(self, *, grant: str, envelope: dict[str, Any]) -> SealedRecord:
        """Hand a member's result, sealed for the tenant, to the vault under a seal grant."""
        body = await self._call(
            "POST",
            "/internal/v1/records/sealed/by-grant",
            json={"grant": grant, "envelope": envelope},
        )
        return SealedRecord.model_validate(body)

    async def deliver(self, *, grant: str) -> Any:
        """The record a router grant names, sealed to the member key in that grant."""
        body = await self._call(
            "POST", "/internal/v1/records/deliver", json={"grant": grant}, idempotent=True
        )
        if not isinstance(body, dict) or not isinstance(body.get("envelope"), dict):
            raise ServiceUnavailable("The vault service gave an unexpected answer.")
        return body["envelope"]

    async def rotate_tenant_keys(self, *, tenant_id: str) -> Any:
        return await self._call("POST", f"/internal/v1/tenants/{tenant_id}/keys/rotate")

    async def rewrap_tenant_records(self, *, tenant_id: str, batch_size: int) -> Any:
        return await self._call(
            "POST",
            f"/internal/v1/tenants/{tenant_id}/keys/rewrap",
            json={"batch_size": batch_size},
        )

    async def retire_tenant_keys(self, *, tenant_id: str) -> Any:
        return await self._call("POST", f"/internal/v1/tenants/{tenant_id}/keys/retire")

    async def shred_tenant_keys(self, *, tenant_id: str) -> Any:
        return await self._call("DELETE", f"/internal/v1/tenants/{tenant_id}/keys")

    async def audit(
        self,
        *,
        tenant_id: str | None,
        limit: int,
        cursor: str | None,
        filters: dict[str, Any] | None = None,
    ) -> Any:
        """Audit records; ``filters``: action, outcome (lists), job_id, since, until."""
        params: dict[str, Any] = {"limit": limit}
        for name, value in (filters or {}).items():
            if value is None or value == []:
                continue
            params[name] = value.isoformat() if isinstance(value, datetime) else value
        if tenant_id is not None:
            params["tenant_id"] = tenant_id
        if cursor is not None:
            params["cursor"] = cursor
        return await self._call("GET", "/internal/v1/audit", params=params)

    async def verify_audit(self) -> Any:
        return await self._call("GET", "/internal/v1/audit/verify")
