"""The audit log: read it, and verify its hash chain."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from services.vault.api.deps import VaultServiceDep
from services.vault.api.schemas import AuditRecordList, AuditRecordRead, AuditVerificationRead
from services.vault.domain.errors import InvalidCursor

router = APIRouter(prefix="/internal/v1/audit", tags=["audit"])

# Page sizes as everywhere in Taskroute's lists: 20 by default, at most 100.
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def _parse_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit() or not 0 < int(cursor) < 2**63:
        raise InvalidCursor
    return int(cursor)


@router.get("")
async def list_audit_records(
    vault: VaultServiceDep,
    tenant_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
) -> AuditRecordList:
    """Audit records, newest first, optionally for one tenant."""
    page = await vault.audit_page(
        tenant_id=str(tenant_id) if tenant_id else None, limit=limit, cursor=_parse_cursor(cursor)
    )
    return AuditRecordList(
        data=[AuditRecordRead.model_validate(row) for row in page.records],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get("/verify")
async def verify_audit_chain(vault: VaultServiceDep) -> AuditVerificationRead:
    """Recompute the audit chain and say whether, and where, it was tampered with."""
    result = await vault.verify_audit()
    return AuditVerificationRead(
        valid=result.valid,
        records=result.records,
        first_invalid=result.first_invalid,
        problem=result.problem,
    )
