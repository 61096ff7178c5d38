"""Every call of the public API, described once (see :mod:`services.sdk._core`).

Each function returns an :class:`Operation`; the sync and the async client send it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from services.sdk._core import Operation, Request, model
from services.sdk.models import (
    ApiKey,
    ClassifyResult,
    Feedback,
    Job,
    JobEvent,
    JobResult,
    MemberKey,
    Page,
    TenantKey,
    VaultPublicKeys,
    WebhookDelivery,
    WebhookEndpoint,
)
from services.sdk.models import Tenant as TenantModel


def _id(value: str) -> str:
    # Ids go into the path: quoting keeps a hostile or mistyped id from changing the route.
    return quote(value, safe="")


def _page_params(
    limit: int | None, cursor: str | None, **filters: str | bool | None
) -> dict[str, str | int | bool]:
    params: dict[str, str | int | bool] = {k: v for k, v in filters.items() if v is not None}
    if limit is not None:
        params["limit"] = limit
    if cursor is not None:
        params["cursor"] = cursor
    return params


def _json_object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _post(path: str, body: Any, idempotency_key: str | None, *, has_body: bool = True) -> Request:
    return Request("POST", path, json=body, idempotency_key=idempotency_key, has_body=has_body)


# -- clients ----------------------------------------------------------------------------------


def vault_public_keys() -> Operation[VaultPublicKeys]:
    return Operation(Request("GET", "/v1/vault/public-key"), model(VaultPublicKeys))


def submit_job(
    *,
    title: str,
    description: str,
    confidential: Any = None,
    confidential_sealed: dict[str, Any] | None = None,
    service: str | None = None,
    priority: str | None = None,
    due_at: datetime | str | None = None,
    data_policy: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
    callback_url: str | None = None,
    idempotency_key: str | None,
) -> Operation[Job]:
    body: dict[str, Any] = {"title": title, "description": description}
    optional = {
        "confidential": confidential,
        "confidential_sealed": confidential_sealed,
        "service": service,
        "priority": priority,
        "due_at": due_at.isoformat() if isinstance(due_at, datetime) else due_at,
        "data_policy": data_policy,
        "metadata": metadata,
        "callback_url": callback_url,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return Operation(_post("/v1/jobs", body, idempotency_key), model(Job))


def get_job(job_id: str) -> Operation[Job]:
    return Operation(Request("GET", f"/v1/jobs/{_id(job_id)}"), model(Job))


def list_jobs(
    *,
    status: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
    priority: str | None = None,
    tier: str | None = None,
    domain: str | None = None,
    created_after: str | None = None,
    created_before: str | None = None,
) -> Operation[Page[Job]]:
    """The tenant's jobs; the filters (RFC 3339 times) narrow the list and bind its cursors."""
    params = _page_params(
        limit,
        cursor,
        status=status,
        priority=priority,
        tier=tier,
        domain=domain,
        created_after=created_after,
        created_before=created_before,
    )
    return Operation(Request("GET", "/v1/jobs", params=params), model(Page[Job]))


def job_events(job_id: str) -> Operation[list[JobEvent]]:
    def parse(body: Any) -> list[JobEvent]:
        return model(Page[JobEvent])(body).data

    return Operation(Request("GET", f"/v1/jobs/{_id(job_id)}/events"), parse)


def job_routing(job_id: str) -> Operation[dict[str, Any]]:
    return Operation(Request("GET", f"/v1/jobs/{_id(job_id)}/routing"), _json_object)


def cancel_job(job_id: str, *, reason: str | None, idempotency_key: str | None) -> Operation[Job]:
    body = {"reason": reason} if reason else None
    path = f"/v1/jobs/{_id(job_id)}/cancel"
    return Operation(_post(path, body, idempotency_key, has_body=body is not None), model(Job))


def job_result(job_id: str) -> Operation[JobResult]:
    return Operation(Request("GET", f"/v1/jobs/{_id(job_id)}/result"), model(JobResult))


def job_feedback(
    job_id: str, *, rating: int, comment: str | None, idempotency_key: str | None
) -> Operation[Feedback]:
    body: dict[str, Any] = {"rating": rating}
    if comment is not None:
        body["comment"] = comment
    path = f"/v1/jobs/{_id(job_id)}/feedback"
    return Operation(_post(path, body, idempotency_key), model(Feedback))


def classify(
    items: list[dict[str, Any]], *, idempotency_key: str | None
) -> Operation[list[ClassifyResult]]:
    def parse(body: Any) -> list[ClassifyResult]:
        return model(list[ClassifyResult])(_json_object(body).get("results", []))

    return Operation(_post("/v1/classify", {"items": items}, idempotency_key), parse)


def create_webhook_endpoint(
    *, url: str, description: str | None, idempotency_key: str | None
) -> Operation[WebhookEndpoint]:
    body: dict[str, Any] = {"url": url}
    if description is not None:
        body["description"] = description
    return Operation(_post("/v1/webhook-endpoints", body, idempotency_key), model(WebhookEndpoint))


def list_webhook_endpoints(
    *, limit: int | None = None, cursor: str | None = None
) -> Operation[Page[WebhookEndpoint]]:
    params = _page_params(limit, cursor)
    return Operation(
        Request("GET", "/v1/webhook-endpoints", params=params), model(Page[WebhookEndpoint])
    )


def rotate_webhook_secret(
    endpoint_id: str, *, overlap_seconds: int | None, idempotency_key: str | None
) -> Operation[WebhookEndpoint]:
    """A new signing secret (in this answer only); the old one keeps signing for the overlap."""
    body: dict[str, Any] = {} if overlap_seconds is None else {"overlap_seconds": overlap_seconds}
    path = f"/v1/webhook-endpoints/{_id(endpoint_id)}/rotate-secret"
    return Operation(_post(path, body, idempotency_key), model(WebhookEndpoint))


def delete_webhook_endpoint(endpoint_id: str) -> Operation[WebhookEndpoint]:
    path = f"/v1/webhook-endpoints/{_id(endpoint_id)}"
    return Operation(Request("DELETE", path), model(WebhookEndpoint))


def list_webhook_deliveries(
    endpoint_id: str, *, limit: int | None = None, cursor: str | None = None
) -> Operation[Page[WebhookDelivery]]:
    path = f"/v1/webhook-endpoints/{_id(endpoint_id)}/deliveries"
    return Operation(
        Request("GET", path, params=_page_params(limit, cursor)), model(Page[WebhookDelivery])
    )


# -- team members -----------------------------------------------------------------------------


def team_jobs(
    *, status: str | None = None, limit: int | None = None, cursor: str | None = None
) -> Operation[Page[Job]]:
    params = _page_params(limit, cursor, status=status)
    return Operation(Request("GET", "/v1/team/jobs", params=params), model(Page[Job]))


def member_action(
    job_id: str, action: str, *, reason: str | None = None, idempotency_key: str | None
) -> Operation[Job]:
    body = {"reason": reason} if reason else None
    path = f"/v1/team/jobs/{_id(job_id)}/{action}"
    return Operation(_post(path, body, idempotency_key, has_body=body is not None), model(Job))


def confidential(job_id: str) -> Operation[dict[str, Any]]:
    return Operation(Request("GET", f"/v1/team/jobs/{_id(job_id)}/confidential"), _json_object)


def tenant_key(job_id: str) -> Operation[TenantKey]:
    return Operation(Request("GET", f"/v1/team/jobs/{_id(job_id)}/tenant-key"), model(TenantKey))


def complete(
    job_id: str,
    *,
    result: dict[str, Any],
    confidential_result: Any = None,
    confidential_result_sealed: dict[str, Any] | None = None,
    idempotency_key: str | None,
) -> Operation[Job]:
    body: dict[str, Any] = {"result": result}
    if confidential_result is not None:
        body["confidential_result"] = confidential_result
    if confidential_result_sealed is not None:
        body["confidential_result_sealed"] = confidential_result_sealed
    path = f"/v1/team/jobs/{_id(job_id)}/complete"
    return Operation(_post(path, body, idempotency_key), model(Job))


def register_member_key(public_key: str, endorsement: str | None) -> Operation[MemberKey]:
    body = {"public_key": public_key}
    if endorsement is not None:
        body["endorsement"] = endorsement
    request = Request("PUT", "/v1/team/keys", json=body, has_body=True)
    return Operation(request, model(MemberKey))


# -- operators --------------------------------------------------------------------------------


def create_tenant(
    *, name: str, policy: dict[str, Any] | None, idempotency_key: str | None
) -> Operation[TenantModel]:
    body: dict[str, Any] = {"name": name}
    if policy is not None:
        body["policy"] = policy
    return Operation(_post("/v1/admin/tenants", body, idempotency_key), model(TenantModel))


def list_tenants(
    *, limit: int | None = None, cursor: str | None = None
) -> Operation[Page[TenantModel]]:
    params = _page_params(limit, cursor)
    return Operation(Request("GET", "/v1/admin/tenants", params=params), model(Page[TenantModel]))


def get_tenant(tenant_id: str) -> Operation[TenantModel]:
    return Operation(Request("GET", f"/v1/admin/tenants/{_id(tenant_id)}"), model(TenantModel))


def create_api_key(tenant_id: str, *, idempotency_key: str | None) -> Operation[ApiKey]:
    path = f"/v1/admin/tenants/{_id(tenant_id)}/keys"
    return Operation(_post(path, None, idempotency_key, has_body=False), model(ApiKey))


def list_api_keys(
    tenant_id: str,
    *,
    limit: int | None = None,
    cursor: str | None = None,
    revoked: bool | None = None,
) -> Operation[Page[ApiKey]]:
    path = f"/v1/admin/tenants/{_id(tenant_id)}/keys"
    params = _page_params(limit, cursor, revoked=revoked)
    return Operation(Request("GET", path, params=params), model(Page[ApiKey]))


def revoke_api_key(tenant_id: str, key_id: str) -> Operation[ApiKey]:
    path = f"/v1/admin/tenants/{_id(tenant_id)}/keys/{_id(key_id)}"
    return Operation(Request("DELETE", path), model(ApiKey))


def create_team(team: dict[str, Any], *, idempotency_key: str | None) -> Operation[dict[str, Any]]:
    return Operation(_post("/v1/admin/teams", team, idempotency_key), _json_object)


def create_member(
    team_id: str, *, name: str, idempotency_key: str | None
) -> Operation[dict[str, Any]]:
    path = f"/v1/admin/teams/{_id(team_id)}/members"
    return Operation(_post(path, {"name": name}, idempotency_key), _json_object)
