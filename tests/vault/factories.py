"""Plain factory functions for the vault's tests."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

from shared.result_receipts import RECEIPT_ISSUER, RECEIPT_TYPE
from shared.service_auth import ServiceIdentity


def new_uuid() -> str:
    return str(uuid.uuid4())


def make_grant(
    signer: ServiceIdentity,
    *,
    action: str = "open",
    tenant_id: str,
    job_id: str,
    purpose: str = "job",
    ref: str | None = None,
    subject: str | None = None,
    require_e2e: bool = False,
    ttl_seconds: int = 60,
    typ: str = "grant",
    audience: str = "vault",
    **extra: Any,
) -> str:
    """A grant as the router signs one (docs/architecture.md), any claim overridable."""
    claims: dict[str, Any] = {
        "action": action,
        "tenant_id": tenant_id,
        "job_id": job_id,
        "purpose": purpose,
        "ref": ref,
        "subject": subject or f"member:{new_uuid()}",
        "require_e2e": require_e2e,
        **extra,
    }
    return signer.sign(audience=audience, typ=typ, ttl_seconds=ttl_seconds, claims=claims)


def result_seal_grant(
    signer: ServiceIdentity, *, tenant_id: str, job_id: str, lease: str | None = None
) -> str:
    """A lease holder's grant to seal the job's result, naming the lease as the router does."""
    extra: dict[str, Any] = {} if lease is None else {"lease": lease}
    return make_grant(
        signer, action="seal", tenant_id=tenant_id, job_id=job_id, purpose="result", **extra
    )


def receipt_claims(keys_dir: Path, answer: dict[str, Any]) -> dict[str, Any]:
    """The claims of the receipt in a seal's answer, verified as the router verifies them."""
    router = ServiceIdentity.load(name="router", keys_dir=keys_dir, peers=("vault",))
    claims = router.verify(
        answer["receipt"], typ=RECEIPT_TYPE, allowed_issuers=frozenset({RECEIPT_ISSUER})
    )
    return {name: claims[name] for name in ("tenant_id", "job_id", "lease", "ref")}


def tenant_result_grant(signer: ServiceIdentity, *, tenant_id: str, job_id: str, ref: str) -> str:
    """The tenant's grant to open its job's confidential result."""
    return make_grant(
        signer,
        tenant_id=tenant_id,
        job_id=job_id,
        purpose="result",
        ref=ref,
        subject=f"tenant:{tenant_id}",
    )


async def seal_job_data(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    *,
    data: Any,
    tenant_id: str | None = None,
    job_id: str | None = None,
) -> tuple[str, str, str]:
    """Seal a job's confidential data; returns (tenant_id, job_id, ref)."""
    tenant_id = tenant_id or new_uuid()
    job_id = job_id or new_uuid()
    response = await post_job_data(client, auth, tenant_id=tenant_id, job_id=job_id, data=data)
    assert response.status_code == 201, response.text
    return tenant_id, job_id, response.json()["ref"]


async def post_job_data(
    client: httpx.AsyncClient, auth: dict[str, str], *, tenant_id: str, job_id: str, data: Any
) -> httpx.Response:
    """The vault's answer to sealing ``data`` as the job's confidential data."""
    return await client.post(
        "/internal/v1/records",
        json={"tenant_id": tenant_id, "job_id": job_id, "purpose": "job", "data": data},
        headers=auth,
    )
