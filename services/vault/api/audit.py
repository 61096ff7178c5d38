"""The audit log: read it, and verify its hash chain."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from pydantic import AfterValidator
from sqlalchemy import select

from services.vault.api.deps import VaultServiceDep
from services.vault.api.schemas import (
    AuditAnchorRead,
    AuditRecordList,
    AuditRecordRead,
    AuditVerificationRead,
)
from services.vault.db.models import AuditRecord
from services.vault.domain import audit
from services.vault.domain.errors import InvalidCursor
from shared.errors import BadRequest
from shared.list_filters import as_utc, filters_fingerprint, one_of

router = APIRouter(prefix="/internal/v1/audit", tags=["audit"])

# Page sizes as everywhere in Taskroute's lists: 20 by default, at most 100.
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


# Filter words: an audit record's actions and outcomes are a fixed vocabulary.
AuditAction = Annotated[str, AfterValidator(one_of(audit.ACTIONS))]
AuditOutcome = Annotated[str, AfterValidator(one_of(audit.OUTCOMES))]


class CursorFiltersChanged(BadRequest):
    problem = "invalid-cursor"

    def __init__(self) -> None:
        super().__init__(
            "The cursor was issued for other filters; repeat the first request's filters "
            "or start again without a cursor."
        )


def _parse_cursor(cursor: str | None, *, fingerprint: str | None = None) -> int | None:
    """The ``seq`` a cursor continues before: ``<seq>`` without filters, ``<seq>.<digest>``
    with them; a cursor of other filters is refused (400) rather than silently mixed."""
    if cursor is None:
        return None
    seq, dot, issued_under = cursor.partition(".")
    if (
        not (seq.isascii() and seq.isdigit())
        or not 0 < int(seq) < 2**63
        or (dot and not issued_under)
    ):
        raise InvalidCursor
    if (issued_under or None) != fingerprint:
        raise CursorFiltersChanged
    return int(seq)


@router.get("")
async def list_audit_records(
    vault: VaultServiceDep,
    tenant_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[list[AuditAction] | None, Query(max_length=20)] = None,
    outcome: Annotated[list[AuditOutcome] | None, Query(max_length=10)] = None,
    job_id: Annotated[str | None, Query(max_length=64)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AuditRecordList:
    """Audit records, newest first, narrowed by the filters (all must hold; a repeated
    ``action``/``outcome`` matches any). ``since`` is inclusive, ``until`` exclusive."""
    since, until = as_utc(since, name="since"), as_utc(until, name="until")
    filters: dict[str, Any] = {
        "tenant_id": str(tenant_id) if tenant_id else None,
        "action": sorted(set(action or ())),
        "outcome": sorted(set(outcome or ())),
        "job_id": job_id,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
    }
    fingerprint = filters_fingerprint(filters)
    before = _parse_cursor(cursor, fingerprint=fingerprint)
    # The filtered read, in the query itself so that pagination stays exact.
    query = select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(limit + 1)
    if filters["tenant_id"] is not None:
        query = query.where(AuditRecord.tenant_id == filters["tenant_id"])
    if filters["action"]:
        query = query.where(AuditRecord.action.in_(filters["action"]))
    if filters["outcome"]:
        query = query.where(AuditRecord.outcome.in_(filters["outcome"]))
    if job_id is not None:
        query = query.where(AuditRecord.job_id == job_id)
    if since is not None:
        query = query.where(AuditRecord.at >= since)
    if until is not None:
        query = query.where(AuditRecord.at < until)
    if before is not None:
        query = query.where(AuditRecord.seq < before)
    rows = list((await vault.session.execute(query)).scalars().all())
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if has_more and rows:
        last = str(rows[-1].seq)
        next_cursor = last if fingerprint is None else f"{last}.{fingerprint}"
    return AuditRecordList(
        data=[AuditRecordRead.model_validate(row) for row in rows],
        has_more=has_more,
        next_cursor=next_cursor,
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
        anchors=result.anchors,
        anchoring=vault.anchors is not None,
    )


@router.post("/anchors", status_code=status.HTTP_201_CREATED)
async def anchor_audit_head(vault: VaultServiceDep, response: Response) -> AuditAnchorRead:
    """Anchor the chain's current head outside the database now (also done periodically).

    201 with the anchor; 200 with ``anchored: false`` while the chain is empty; 409 when no
    anchor store is configured.
    """
    anchor = await vault.anchor_audit_head()
    if anchor is None:
        response.status_code = status.HTTP_200_OK
        return AuditAnchorRead(anchored=False, seq=0, hash=None, at=None)
    return AuditAnchorRead(anchored=True, seq=anchor.seq, hash=anchor.hash, at=anchor.at)
