"""Operator routes for the vault's audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import StringConstraints

from services.gateway.api.deps import DEFAULT_LIMIT, CursorQuery, LimitQuery, OperatorDep, VaultDep
from services.gateway.api.list_filters import time_range
from services.gateway.api.routing import public_router
from services.gateway.api.schemas import AuditList, AuditVerification, Uuid

# Audit actions and outcomes are short lowercase words (`seal`, `open`, `denied`).
# The vault knows its vocabulary (and refuses another word, 422 naming it); this only keeps
# anything but a short lowercase word from leaving the gateway.
AuditWord = Annotated[str, StringConstraints(pattern=r"^[a-z_-]{1,16}$")]

router = public_router(prefix="/v1/admin/audit", tag="admin: audit")


@router.get("", response_model=AuditList)
async def audit_log(
    _operator: OperatorDep,
    vault: VaultDep,
    tenant_id: Annotated[Uuid | None, Query(description="Only this tenant's records.")] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
    action: Annotated[
        list[AuditWord] | None,
        Query(max_length=20, description="Only this action (`seal`, `open`, ...); repeatable."),
    ] = None,
    outcome: Annotated[
        list[AuditWord] | None,
        Query(max_length=10, description="Only this outcome (`ok`, `denied`, ...); repeatable."),
    ] = None,
    job_id: Annotated[Uuid | None, Query(description="Only records about this job.")] = None,
    since: Annotated[
        datetime | None, Query(description="Only records at or after this time (RFC 3339).")
    ] = None,
    until: Annotated[
        datetime | None, Query(description="Only records before this time (RFC 3339).")
    ] = None,
) -> Any:
    """The vault's audit records (every seal and open), newest first, narrowed by the
    filters given (all must hold; the cursor is bound to them)."""
    start, end = time_range(since, until, after_name="since", before_name="until")
    return await vault.audit(
        tenant_id=tenant_id,
        limit=limit,
        cursor=cursor,
        filters={
            "action": sorted(set(action or ())),
            "outcome": sorted(set(outcome or ())),
            "job_id": job_id,
            "since": start,
            "until": end,
        },
    )


@router.get("/verify", response_model=AuditVerification)
async def verify_audit(_operator: OperatorDep, vault: VaultDep) -> Any:
    """Check the audit log's hash chain from the first record to the last."""
    return await vault.verify_audit()
