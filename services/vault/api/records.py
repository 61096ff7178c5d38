"""Sealed records: seal job data, seal results under a grant, open under a grant."""

from __future__ import annotations

from fastapi import APIRouter, status

from services.vault.api.deps import RecordVaultServiceDep, VaultServiceDep
from services.vault.api.schemas import (
    RecordCreate,
    RecordCreateByGrant,
    RecordCreated,
    RecordData,
    RecordDiscard,
    RecordOpen,
    RecordsDiscarded,
    ResultCreated,
)
from shared.failpoints import failpoint

router = APIRouter(prefix="/internal/v1/records", tags=["records"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_record(body: RecordCreate, vault: RecordVaultServiceDep) -> RecordCreated:
    """Seal a job's confidential data for its tenant; 409 if the job already has it."""
    result = await vault.seal(
        tenant_id=str(body.tenant_id),
        job_id=str(body.job_id),
        purpose=body.purpose,
        data=body.data,
        subject=f"tenant:{body.tenant_id}",
    )
    failpoint("vault.seal.before_commit")  # sealed and audited, not yet committed
    return RecordCreated(ref=result.ref, key_version=result.key_version)


@router.post("/sealed-by-grant", status_code=status.HTTP_201_CREATED)
async def create_record_by_grant(
    body: RecordCreateByGrant, vault: RecordVaultServiceDep
) -> ResultCreated:
    """Seal a job's confidential result under a router-signed seal grant."""
    result = await vault.seal_by_grant(token=body.grant, data=body.data)
    return ResultCreated(ref=result.ref, key_version=result.key_version, receipt=result.receipt)


@router.post("/open")
async def open_record(body: RecordOpen, vault: RecordVaultServiceDep) -> RecordData:
    """Decrypt the record a router-signed open grant names (audited, refusals too)."""
    return RecordData(data=await vault.open(token=body.grant))


@router.post("/discard")
async def discard_records(body: RecordDiscard, vault: VaultServiceDep) -> RecordsDiscarded:
    """Delete the job data a submission that never reached the router left (audited)."""
    count = await vault.discard_unrouted(tenant_id=str(body.tenant_id), job_id=str(body.job_id))
    return RecordsDiscarded(discarded=count)
