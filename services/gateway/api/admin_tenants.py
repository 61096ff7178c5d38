"""Operator routes for tenants, their client API keys and their data policies."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, Header, Query, Request, Response, status

from services.gateway.api.deps import (
    DEFAULT_LIMIT,
    CursorQuery,
    LimitQuery,
    OperatorDep,
    RouterDep,
    SessionDep,
)
from services.gateway.api.etags import etag, not_modified, parse_if_match
from services.gateway.api.list_filters import (
    CreatedAfterQuery,
    CreatedBeforeQuery,
    NameQuery,
    created_range,
)
from services.gateway.api.routing import public_router
from services.gateway.api.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyRead,
    DataPolicy,
    TenantCreate,
    TenantCreated,
    TenantList,
    TenantRead,
)
from services.gateway.clients.router import RouterClient
from services.gateway.db.models import ApiKey, Tenant
from services.gateway.db.repository import ApiKeyRepository, TenantRepository
from services.gateway.domain import api_keys
from services.gateway.domain.api_keys import Role
from services.gateway.domain.errors import (
    ApiKeyNotFound,
    PreconditionFailed,
    ReviewTeamUnknown,
    TenantNotFound,
)
from services.gateway.domain.policy import DataPolicy as PolicyRule
from services.gateway.tenant_policies import TenantPolicyPusher
from shared.http import UpstreamError

router = public_router(prefix="/v1/admin/tenants", tag="admin: tenants")


def _tenant(tenant: Tenant) -> dict[str, Any]:
    return {
        "id": tenant.id,
        "name": tenant.name,
        "policy": tenant.policy,
        "version": tenant.version,
        "created_at": tenant.created_at,
        "updated_at": tenant.updated_at,
    }


def _key(row: ApiKey) -> dict[str, Any]:
    return {
        "id": row.id,
        "role": row.role,
        "lookup_prefix": row.lookup_prefix,
        "tenant_id": row.tenant_id,
        "team_id": row.team_id,
        "member_id": row.member_id,
        "created_at": row.created_at,
        "revoked_at": row.revoked_at,
    }


def _canonical(policy: DataPolicy | None) -> dict[str, Any]:
    if policy is None:
        return PolicyRule().to_json()
    return PolicyRule.from_parts(
        allowed_countries=policy.allowed_countries,
        required_certifications=policy.required_certifications,
        require_e2e=policy.require_e2e,
        require_review=policy.require_review,
        review_team_id=policy.review_team_id,
    ).to_json()


async def _check_review_team(router_: RouterClient, policy: DataPolicy | None) -> None:
    """A reviewer team must exist when the policy is stored, not be found missing at review."""
    if policy is None or policy.review_team_id is None:
        return
    try:
        await router_.get_team(str(policy.review_team_id))
    except UpstreamError as error:
        if error.status == 404:
            raise ReviewTeamUnknown() from None
        raise


async def _existing(session: SessionDep, tenant_id: str) -> Tenant:
    tenant = await TenantRepository(session).get(tenant_id)
    if tenant is None:
        raise TenantNotFound()
    return tenant


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TenantCreated)
async def create_tenant(
    body: TenantCreate,
    _operator: OperatorDep,
    session: SessionDep,
    request: Request,
    router_: RouterDep,
) -> dict[str, Any]:
    """Register a tenant (a client company) and issue its first client API key."""
    await _check_review_team(router_, body.policy)
    tenant = await TenantRepository(session).create(name=body.name, policy=_canonical(body.policy))
    new_key = api_keys.generate_key(Role.CLIENT, pepper=request.app.state.pepper)
    row = await ApiKeyRepository(session).add(new_key, role=Role.CLIENT, tenant_id=tenant.id)
    return {**_tenant(tenant), "api_key": new_key.plaintext, "api_key_id": row.id}


@router.get("", response_model=TenantList)
async def list_tenants(
    _operator: OperatorDep,
    session: SessionDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
    name: NameQuery = None,
    created_after: CreatedAfterQuery = None,
    created_before: CreatedBeforeQuery = None,
) -> dict[str, Any]:
    """List tenants, newest first, narrowed by the filters given (all must hold)."""
    page = await TenantRepository(session).list(
        limit=limit,
        cursor=cursor,
        name=name,
        created=created_range(created_after, created_before),
    )
    return {
        "data": [_tenant(t) for t in page.items],
        "has_more": page.has_more,
        "next_cursor": page.next_cursor,
    }


@router.get("/{tenant_id}", response_model=TenantRead)
async def get_tenant(
    tenant_id: str,
    _operator: OperatorDep,
    session: SessionDep,
    request: Request,
    response: Response,
) -> Any:
    """Read one tenant and its default data policy (304 when `If-None-Match` names its ETag)."""
    tenant = await _existing(session, tenant_id)
    unchanged = not_modified(request, tenant.version)
    if unchanged is not None:
        return unchanged
    response.headers["ETag"] = etag(tenant.version)
    return _tenant(tenant)


@router.put("/{tenant_id}/policy", response_model=TenantRead)
async def set_policy(
    tenant_id: str,
    body: DataPolicy,
    _operator: OperatorDep,
    session: SessionDep,
    response: Response,
    router_: RouterDep,
    request: Request,
    if_match: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Replace the tenant's default data policy: new jobs get it, and the tenant's active jobs
    are held to it (tightened; moved off a team it excludes). A loosening reaches new jobs only."""
    expected = parse_if_match(if_match)
    await _check_review_team(router_, body)
    policy = _canonical(body)
    current = await _existing(session, tenant_id)
    if current.policy == policy and expected in (None, current.version):
        # Nothing changes: no new version (nobody's If-Match goes stale), nothing to push.
        response.headers["ETag"] = etag(current.version)
        return _tenant(current)
    repository = TenantRepository(session)
    tenant = await repository.set_policy(tenant_id, policy=policy, expected_version=expected)
    if tenant is None:  # it exists (read above): its version moved on
        raise PreconditionFailed("The tenant changed since you read it; read it again.")
    response.headers["ETag"] = etag(tenant.version)
    answer = _tenant(tenant)
    # Committed first: the router must never hold a version the gateway might not keep. Not
    # taken now (the router away), it is pushed by the background worker (tenant_policies.py).
    await session.commit()
    pusher: TenantPolicyPusher = request.app.state.tenant_policies
    await pusher.push(tenant)
    return answer


@router.post("/{tenant_id}/keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
async def create_key(
    tenant_id: str,
    _operator: OperatorDep,
    session: SessionDep,
    request: Request,
    _body: Annotated[ApiKeyCreate | None, Body()] = None,
) -> dict[str, Any]:
    """Issue another client API key for the tenant (for rotation: revoke the old one after)."""
    tenant = await _existing(session, tenant_id)
    new_key = api_keys.generate_key(Role.CLIENT, pepper=request.app.state.pepper)
    row = await ApiKeyRepository(session).add(new_key, role=Role.CLIENT, tenant_id=tenant.id)
    return {**_key(row), "api_key": new_key.plaintext}


@router.get("/{tenant_id}/keys", response_model=ApiKeyList)
async def list_keys(
    tenant_id: str,
    _operator: OperatorDep,
    session: SessionDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
    revoked: Annotated[
        bool | None, Query(description="Only revoked (true) or live (false) keys.")
    ] = None,
    created_after: CreatedAfterQuery = None,
    created_before: CreatedBeforeQuery = None,
) -> dict[str, Any]:
    """List the tenant's API keys, newest first (prefixes and dates; the keys themselves are
    never shown), narrowed by the filters given."""
    await _existing(session, tenant_id)
    page = await ApiKeyRepository(session).page_for_tenant(
        tenant_id,
        limit=limit,
        cursor=cursor,
        revoked=revoked,
        created=created_range(created_after, created_before),
    )
    return {
        "data": [_key(r) for r in page.items],
        "has_more": page.has_more,
        "next_cursor": page.next_cursor,
    }


@router.delete("/{tenant_id}/keys/{key_id}", response_model=ApiKeyRead)
async def revoke_key(
    tenant_id: str, key_id: str, _operator: OperatorDep, session: SessionDep
) -> dict[str, Any]:
    """Revoke a client API key; it is refused from the next request on."""
    row = await ApiKeyRepository(session).revoke(key_id, tenant_id=tenant_id)
    if row is None:
        raise ApiKeyNotFound()
    return _key(row)
