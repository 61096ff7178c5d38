"""Operators: a tenant's vault keys: rotate, rewrap stored data keys, retire, crypto-shred.

These are the tenant's *encryption* keys in the vault, not its API keys. The gateway checks the
tenant exists and passes the request on; the vault does the work and audits it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.api.deps import OperatorDep, SessionDep, VaultDep
from services.gateway.api.routing import public_router
from services.gateway.db.repository import TenantRepository
from services.gateway.domain.errors import TenantNotFound

router = public_router(prefix="/v1/admin/tenants", tag="admin: tenants")

# As the vault's own default and bound (services/vault/api/schemas.py).
DEFAULT_REWRAP_BATCH = 100
MAX_REWRAP_BATCH = 1000


class RewrapRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(default=DEFAULT_REWRAP_BATCH, ge=1, le=MAX_REWRAP_BATCH)


class VaultKeyRotation(BaseModel):
    tenant_id: str
    key_version: int
    sealing_key_id: str
    sealing_version: int


class VaultRewrapProgress(BaseModel):
    tenant_id: str
    rewrapped: int
    remaining: int
    done: bool
    key_version: int | None


class VaultKeyRetired(BaseModel):
    tenant_id: str
    min_key_version: int
    min_sealing_version: int
    retired: int


class VaultKeyShredded(BaseModel):
    tenant_id: str
    shredded: bool


async def _tenant_id(session: SessionDep, tenant_id: str) -> str:
    tenant = await TenantRepository(session).get(tenant_id)
    if tenant is None:
        raise TenantNotFound()
    return tenant.id


@router.post("/{tenant_id}/vault-key/rotate", response_model=VaultKeyRotation)
async def rotate_vault_key(
    tenant_id: str, _operator: OperatorDep, session: SessionDep, vault: VaultDep
) -> dict[str, Any]:
    """Rotate the tenant's vault keys: new seals use the new version; old data still opens."""
    answer: dict[str, Any] = await vault.rotate_tenant_keys(
        tenant_id=await _tenant_id(session, tenant_id)
    )
    return answer


@router.post("/{tenant_id}/vault-key/rewrap", response_model=VaultRewrapProgress)
async def rewrap_vault_key(
    tenant_id: str,
    _operator: OperatorDep,
    session: SessionDep,
    vault: VaultDep,
    body: Annotated[RewrapRequest | None, Body()] = None,
) -> dict[str, Any]:
    """Rewrap one batch of stored data keys to the newest version; repeat until done."""
    answer: dict[str, Any] = await vault.rewrap_tenant_records(
        tenant_id=await _tenant_id(session, tenant_id),
        batch_size=(body or RewrapRequest()).batch_size,
    )
    return answer


@router.post("/{tenant_id}/vault-key/retire", response_model=VaultKeyRetired)
async def retire_vault_key_versions(
    tenant_id: str, _operator: OperatorDep, session: SessionDep, vault: VaultDep
) -> dict[str, Any]:
    """Retire every vault key version but the newest (409 until a rewrap has finished)."""
    answer: dict[str, Any] = await vault.retire_tenant_keys(
        tenant_id=await _tenant_id(session, tenant_id)
    )
    return answer


@router.delete("/{tenant_id}/vault-key", response_model=VaultKeyShredded)
async def shred_vault_key(
    tenant_id: str, _operator: OperatorDep, session: SessionDep, vault: VaultDep
) -> dict[str, Any]:
    """Crypto-shredding: destroy the tenant's vault keys; its confidential data answers 410."""
    answer: dict[str, Any] = await vault.shred_tenant_keys(
        tenant_id=await _tenant_id(session, tenant_id)
    )
    return answer
