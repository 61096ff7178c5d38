"""Client-side sealing: a tenant's public sealing keys, and storing client-sealed envelopes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from fastapi import APIRouter, status

from services.vault.api.deps import VaultServiceDep
from services.vault.api.schemas import (
    GrantPresented,
    RecordCreated,
    RecordOpen,
    ResultCreated,
    SealedDelivery,
    SealedRecordCreate,
    SealedResultCreate,
    SealingKeyList,
    SealingKeyRead,
)
from services.vault.db.models import TenantSealingKey
from services.vault.domain.sealing import ALGORITHM
from services.vault.service import VaultService
from shared.sealed_envelope import b64url_encode

router = APIRouter(prefix="/internal/v1", tags=["sealing"])


def _key_list(
    vault: VaultService,
    tenant_id: str,
    rows: Sequence[TenantSealingKey],
    *,
    job_id: str | None = None,
) -> SealingKeyList:
    keys = [
        SealingKeyRead(
            key_id=row.key_id,
            public_key=b64url_encode(row.public_key),
            algorithm=ALGORITHM,
            version=row.version,
            created_at=row.created_at,
        )
        for row in rows
    ]
    statement = vault.sealing_keys_statement(
        tenant_id, [key.model_dump() for key in keys], job_id=job_id
    )
    return SealingKeyList(keys=keys, statement=statement)


@router.get("/tenants/{tenant_id}/sealing-keys")
async def list_sealing_keys(tenant_id: uuid.UUID, vault: VaultServiceDep) -> SealingKeyList:
    """The tenant's current public sealing keys, newest first (version 1 made on first use)."""
    rows = await vault.sealing_keys(tenant_id=str(tenant_id))
    return _key_list(vault, str(tenant_id), rows)


@router.post("/sealing-keys/by-grant")
async def sealing_keys_for_grant(body: GrantPresented, vault: VaultServiceDep) -> SealingKeyList:
    """The sealing keys of the tenant a router-signed seal grant names, with a statement for
    that job: a member sealing a result learns the job's tenant from the router, not from the
    gateway that carries the answer (shared/sealing_statements.py)."""
    grant, rows = await vault.sealing_keys_for_grant(token=body.grant)
    return _key_list(vault, grant.tenant_id, rows, job_id=grant.job_id)


@router.post("/records/sealed", status_code=status.HTTP_201_CREATED)
async def create_sealed_record(body: SealedRecordCreate, vault: VaultServiceDep) -> RecordCreated:
    """Store a client-sealed envelope for a job, after checking it opens for its tenant."""
    result = await vault.store_sealed(
        tenant_id=str(body.tenant_id),
        job_id=str(body.job_id),
        envelope_json=body.envelope,
        subject=f"tenant:{body.tenant_id}",
    )
    return RecordCreated(ref=result.ref, key_version=result.key_version)


@router.post("/records/deliver")
async def deliver_record(body: RecordOpen, vault: VaultServiceDep) -> SealedDelivery:
    """A record sealed to the member key named in a router-signed open grant."""
    return SealedDelivery(envelope=await vault.deliver(token=body.grant))


@router.post("/records/sealed/by-grant", status_code=status.HTTP_201_CREATED)
async def create_sealed_result(body: SealedResultCreate, vault: VaultServiceDep) -> ResultCreated:
    """Store a member's result sealed for the tenant (bound to the job's id) under a seal grant."""
    result = await vault.store_sealed_by_grant(token=body.grant, envelope_json=body.envelope)
    return ResultCreated(ref=result.ref, key_version=result.key_version, receipt=result.receipt)
