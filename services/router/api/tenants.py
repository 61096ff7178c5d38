"""Tenants' data policies, pushed by the gateway when an operator changes one.

The gateway owns tenants; the router keeps each tenant's policy only to hold the jobs it already
has to a change (services/router/db/models.py, ``TenantPolicy``).
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends

from services.router.api.deps import JobsDep, NowDep, require_gateway
from services.router.api.schemas import TenantPolicyApplied, TenantPolicyPut
from services.router.domain.routing import DataPolicy

router = APIRouter(
    prefix="/internal/v1/tenants", tags=["tenants"], dependencies=[Depends(require_gateway)]
)


@router.put("/{tenant_id}/policy")
async def put_tenant_policy(
    tenant_id: uuid.UUID, body: TenantPolicyPut, jobs: JobsDep, now: NowDep
) -> TenantPolicyApplied:
    """The tenant's policy changed: hold every active job of the tenant to it."""
    change = await jobs.apply_tenant_policy(
        str(tenant_id),
        version=body.version,
        policy=DataPolicy.from_json(body.policy.model_dump()),
        now=now,
    )
    return TenantPolicyApplied(
        tenant_id=str(tenant_id),
        version=body.version,
        applied=change.applied,
        tightened=change.tightened,
        moved=change.moved,
    )
