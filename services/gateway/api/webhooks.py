"""Client routes for webhook endpoints and their deliveries (see domain/webhooks.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import Body, Query, Request, status
from pydantic import AfterValidator

from services.gateway.api.deps import (
    DEFAULT_LIMIT,
    ClientDep,
    CursorQuery,
    LimitQuery,
    SessionDep,
)
from services.gateway.api.list_filters import (
    CreatedAfterQuery,
    CreatedBeforeQuery,
    created_range,
)
from services.gateway.api.routing import public_router
from services.gateway.api.schemas import (
    WebhookDeliveryList,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointList,
    WebhookEndpointRead,
    WebhookSecretRotate,
    WebhookSecretRotated,
)
from services.gateway.db.models import WebhookDelivery, WebhookEndpoint
from services.gateway.db.repository import WebhookRepository
from services.gateway.domain import webhooks as rules
from services.gateway.domain.errors import LoopbackWebhookEndpoint, WebhookEndpointNotFound
from services.gateway.domain.views import uuid_or
from services.gateway.domain.webhooks import DeliveryStatus
from shared.db import new_id, utcnow
from shared.errors import Conflict
from shared.list_filters import one_of

router = public_router(prefix="/v1/webhook-endpoints", tag="webhooks")

# Event types are `job.<status>` (domain/webhooks.py).
EventTypeName = Annotated[
    str, AfterValidator(one_of(f"job.{status}" for status in rules.JOB_EVENT_STATUSES))
]


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
    if request.app.state.settings.is_production() and rules.on_loopback(body.url):
        # Plain http to loopback is for local development: in production such an endpoint
        # would have the gateway post into its own host (delivery refuses it as well).
        raise LoopbackWebhookEndpoint()
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
    url: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Only endpoints whose URL contains this text (case-insensitive).",
        ),
    ] = None,
    created_after: CreatedAfterQuery = None,
    created_before: CreatedBeforeQuery = None,
) -> dict[str, Any]:
    """List the tenant's webhook endpoints, newest first (secrets are never shown again),
    narrowed by the filters given (all must hold; the cursor is bound to them)."""
    page = await WebhookRepository(session).list_endpoints(
        tenant_id=client.tenant,
        limit=limit,
        cursor=cursor,
        url=url,
        created=created_range(created_after, created_before),
    )
    return {
        "data": [_endpoint(row) for row in page.items],
        "has_more": page.has_more,
        "next_cursor": page.next_cursor,
    }


@router.post("/{endpoint_id}/rotate-secret", response_model=WebhookSecretRotated)
async def rotate_secret(
    endpoint_id: str,
    client: ClientDep,
    session: SessionDep,
    request: Request,
    body: Annotated[WebhookSecretRotate | None, Body()] = None,
) -> dict[str, Any]:
    """Replace the endpoint's signing secret; the new one is shown only now.

    For `overlap_seconds` (a day by default) every delivery is signed with both secrets
    (`Taskroute-Signature: t=...,v1=<new>,v1=<old>`), so the receiver can switch to the new
    secret at its own pace; after that only the new one signs. Rotating again during an overlap
    drops the oldest secret at once.
    """
    overlap = timedelta(seconds=(body or WebhookSecretRotate()).overlap_seconds)
    repository = WebhookRepository(session)
    row = await repository.get_endpoint(_endpoint_id(endpoint_id), tenant_id=client.tenant)
    if row is None:
        raise WebhookEndpointNotFound()
    secret = rules.new_secret()
    sealed = rules.seal_secret(
        secret, endpoint_id=row.id, tenant_id=row.tenant_id, pepper=request.app.state.pepper
    )
    expires_at = utcnow() + overlap if overlap > timedelta(0) else None
    rotated = await repository.rotate_secret(row, sealed=sealed, previous_expires_at=expires_at)
    if rotated is None:
        raise Conflict("The secret was rotated by another request at the same time; try again.")
    return {
        **_endpoint(rotated),
        "secret": secret,
        "previous_secret_expires_at": rotated.previous_secret_expires_at,
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
    status_: Annotated[
        list[DeliveryStatus] | None,
        Query(
            alias="status",
            max_length=3,
            description="Only deliveries in this state (pending, succeeded, failed); repeatable.",
        ),
    ] = None,
    event_type: Annotated[
        list[EventTypeName] | None,
        Query(max_length=10, description="Only deliveries of this event (`job.completed`, ...)."),
    ] = None,
    event_id: Annotated[
        str | None, Query(max_length=64, description="Only deliveries of this event id.")
    ] = None,
    created_after: CreatedAfterQuery = None,
    created_before: CreatedBeforeQuery = None,
) -> dict[str, Any]:
    """The endpoint's deliveries, newest first, each with every attempt made, narrowed by
    the filters given (all must hold; the cursor is bound to them)."""
    created = created_range(created_after, created_before)
    repository = WebhookRepository(session)
    endpoint_id = _endpoint_id(endpoint_id)
    if await repository.get_endpoint(endpoint_id, tenant_id=client.tenant) is None:
        raise WebhookEndpointNotFound()
    page = await repository.list_deliveries(
        endpoint_id,
        tenant_id=client.tenant,
        limit=limit,
        cursor=cursor,
        statuses=tuple(sorted({s.value for s in status_ or ()})),
        event_types=tuple(sorted(set(event_type or ()))),
        event_id=event_id,
        created=created,
    )
    return {
        "data": [_delivery(row) for row in page.items],
        "has_more": page.has_more,
        "next_cursor": page.next_cursor,
    }
