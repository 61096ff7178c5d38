"""Operator routes for the vault's audit log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from services.gateway.api.deps import DEFAULT_LIMIT, CursorQuery, LimitQuery, OperatorDep, VaultDep
from services.gateway.api.routing import public_router
from services.gateway.api.schemas import AuditList, AuditVerification, Uuid

router = public_router(prefix="/v1/admin/audit", tag="admin: audit")


@router.get("", response_model=AuditList)
async def audit_log(
    _operator: OperatorDep,
    vault: VaultDep,
    tenant_id: Annotated[Uuid | None, Query()] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Any:
    """The vault's audit records (every seal and open), optionally for one tenant."""
    return await vault.audit(tenant_id=tenant_id, limit=limit, cursor=cursor)


@router.get("/verify", response_model=AuditVerification)
async def verify_audit(_operator: OperatorDep, vault: VaultDep) -> Any:
    """Check the audit log's hash chain from the first record to the last."""
    return await vault.verify_audit()
