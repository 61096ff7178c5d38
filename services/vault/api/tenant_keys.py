"""A tenant's key ring: rotate it, rewrap stored data keys to its newest version, shred it."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body

from services.vault.api.deps import VaultServiceDep
from services.vault.api.schemas import (
    RetireRead,
    RewrapCreate,
    RewrapRead,
    RotationRead,
    ShredRead,
)

router = APIRouter(prefix="/internal/v1/tenants/{tenant_id}/keys", tags=["tenant keys"])


@router.post("/rotate")
async def rotate_tenant_keys(tenant_id: uuid.UUID, vault: VaultServiceDep) -> RotationRead:
    """Add a new key version: new seals use it, data under older versions still opens."""
    result = await vault.rotate(tenant_id=str(tenant_id))
    return RotationRead(
        tenant_id=str(tenant_id),
        key_version=result.key_version,
        sealing_key_id=result.sealing_key_id,
        sealing_version=result.sealing_version,
    )


@router.post("/rewrap")
async def rewrap_tenant_records(
    tenant_id: uuid.UUID,
    vault: VaultServiceDep,
    body: Annotated[RewrapCreate | None, Body()] = None,
) -> RewrapRead:
    """Move one batch of stored data keys to the newest version (no payload is decrypted)."""
    batch = (body or RewrapCreate()).batch_size
    progress = await vault.rewrap(tenant_id=str(tenant_id), batch_size=batch)
    return RewrapRead(
        tenant_id=str(tenant_id),
        rewrapped=progress.rewrapped,
        remaining=progress.remaining,
        done=progress.remaining == 0,
        key_version=progress.key_version,
    )


@router.post("/retire")
async def retire_older_tenant_keys(tenant_id: uuid.UUID, vault: VaultServiceDep) -> RetireRead:
    """Raise the minimum decryption version to the newest (409 until rewrap is done)."""
    result = await vault.retire_older(tenant_id=str(tenant_id))
    return RetireRead(
        tenant_id=str(tenant_id),
        min_key_version=result.min_key_version,
        min_sealing_version=result.min_sealing_version,
        retired=result.retired,
    )


@router.delete("")
async def shred_tenant_keys(tenant_id: uuid.UUID, vault: VaultServiceDep) -> ShredRead:
    """Crypto-shredding: destroy the tenant's keys; its data answers 410 from now on."""
    await vault.shred(tenant_id=str(tenant_id))
    return ShredRead(tenant_id=str(tenant_id), shredded=True)
