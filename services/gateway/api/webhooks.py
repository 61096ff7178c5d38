"""Client routes for webhook endpoints and their deliveries (see domain/webhooks.py)."""

from __future__ import annotations

from typing import Any

from fastapi import Request, status

from services.gateway.api.deps import (
    DEFAULT_LIMIT,
    ClientDep,
    CursorQuery,
    LimitQuery,
    SessionDep,
)
from services.gateway.api.routing import public_router
from services.gateway.api.schemas import (
    WebhookDeliveryList,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointList,
    WebhookEndpointRead,
)
from services.gateway.db.models import WebhookDelivery, WebhookEndpoint
from services.gateway.db.repository import WebhookRepository
from services.gateway.domain import webhooks as rules
from services.gateway.domain.errors import WebhookEndpointNotFound
from services.gateway.domain.views import uuid_or
from shared.db import new_id

router = public_router(prefix="/v1/webhook-endpoints", tag="webhooks")


def _endpoint(row: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": row.id,
        "url": row.url,
        "description": row.description,
        "created_at": row.created_at,
    }


def _delivery(row: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at,
        "delivered_at": row.delivered_at,
        "created_at": row.created_at,
        "attempt_log": row.attempt_log,
    }


def _endpoint_id(value: str) -> str:
    return uuid_or(value, WebhookEndpointNotFound)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WebhookEndpointCreated)
async def create_endpoint(
    body: WebhookEndpointCreate, client: ClientDep, session: SessionDep, request: Request
) -> dict[str, Any]:
    """Register a webhook endpoint for the tenant's job events; its secret is shown only now."""
    endpoint_id = new_id()
    secret = rules.new_secret()
    sealed = rules.seal_secret(
        secret, endpoint_id=endpoint_id, tenant_id=client.tenant, pepper=request.app.state.pepper
    )
    row = await WebhookRepository(session).add_endpoint(
        endpoint_id=endpoint_id,
        tenant_id=client.tenant,
        url=body.url,
        description=body.description,
        sealed=sealed,
    )
    return {**_endpoint(row), "secret": secret}


@router.get("", response_model=WebhookEndpointList)
async def list_endpoints(
    client: ClientDep,
    session: SessionDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    """List the tenant's webhook endpoints, newest first (secrets are never shown again)."""
    page = await WebhookRepository(session).list_endpoints(
        tenant_id=client.tenant, limit=limit, cursor=cursor
    )
    return {
        "data": [_endpoint(row) for row in page.items],
        "has_more": page.has_more,
        "next_cursor": page.next_cursor,
    }


@router.delete("/{endpoint_id}", response_model=WebhookEndpointRead)
async def delete_endpoint(endpoint_id: str, client: ClientDep, session: SessionDep) -> Any:
    """Delete a webhook endpoint: nothing more is sent to it."""
    row = await WebhookRepository(session).delete_endpoint(
        _endpoint_id(endpoint_id), tenant_id=client.tenant
    )
    if row is None:
        raise WebhookEndpointNotFound()
    return _endpoint(row)


@router.get("/{endpoint_id}/deliveries", response_model=WebhookDeliveryList)
async def list_deliveries(
    endpoint_id: str,
    client: ClientDep,
    session: SessionDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    """The endpoint's deliveries, newest first, each with every attempt made."""
    repository = WebhookRepository(session)
    endpoint_id = _endpoint_id(endpoint_id)
    if await repository.get_endpoint(endpoint_id, tenant_id=client.tenant) is None:
        raise WebhookEndpointNotFound()
    page = await repository.list_deliveries(
        endpoint_id, tenant_id=client.tenant, limit=limit, cursor=cursor
    )
    return {
        "data": [_delivery(row) for row in page.items],
        "has_more": page.has_more,
        "next_cursor": page.next_cursor,
    }
