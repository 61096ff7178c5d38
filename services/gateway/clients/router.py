"""Typed client of the router's internal API (docs/architecture.md, "Router").

Jobs come back as plain JSON objects: the gateway only filters them per audience (see
:mod:`services.gateway.domain.views`) and its response models give them their public shape.
Small answers the gateway acts on (grants, results) are parsed into models here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict

from services.gateway.clients.resilience import CircuitBreaker, breaker_for, resilient_call

SERVICE = "router"

JsonObject = dict[str, Any]


class Grant(BaseModel):
    """A router-signed permission for the vault; opaque to the gateway."""

    model_config = ConfigDict(extra="ignore")

    grant: str
    tenant_id: str | None = None
    require_e2e: bool = False

    def __repr__(self) -> str:
        return f"Grant(tenant_id={self.tenant_id!r}, grant='***')"


class JobResult(BaseModel):
    model_config = ConfigDict(extra="ignore")

    result: Any = None
    confidential_result_ref: str | None = None


def _params(**values: Any) -> dict[str, Any]:
    """Query parameters without the ones left unset."""
    return {k: v for k, v in values.items() if v is not None}


def _list_params(filters: JsonObject | None) -> dict[str, Any]:
    """A list's filters as query parameters: unset and empty ones left out, times as
    RFC 3339, lists as repeated parameters."""
    params: dict[str, Any] = {}
    for name, value in (filters or {}).items():
        if value is None or value == [] or value == ():
            continue
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, list | tuple):
            value = [str(item) for item in value]
        elif isinstance(value, bool):
            value = "true" if value else "false"
        params[name] = value
    return params


class RouterClient:
    def __init__(self, client: httpx.AsyncClient, *, breaker: CircuitBreaker | None = None) -> None:
        self._client = client
        # The client's shared breaker unless given one of its own (a background worker's).
        self._breaker = breaker

    async def _call(
        self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any
    ) -> Any:
        """One call through the upstream's breaker, retried if ``idempotent`` (reads are;
        writes only when repeating them cannot do anything twice): clients/resilience.py."""
        return await resilient_call(
            self._client,
            method,
            path,
            service=SERVICE,
            idempotent=idempotent,
            breaker=self._breaker,
            **kwargs,
        )

    def known_away(self) -> bool:
        """Whether the router's circuit is open: a call now would be refused at once."""
        return (self._breaker or breaker_for(self._client, SERVICE)).refusing()

    async def ready(self) -> bool:
        """Whether the service can serve: its own readiness (its database answers), not
        merely that its process is up."""
        try:
            response = await self._client.get("/readyz")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    # Jobs --------------------------------------------------------------------------------

    async def submit_job(self, submission: JsonObject) -> JsonObject:
        # The job id is chosen here: the router answers a repeat with the stored job.
        result: JsonObject = await self._call(
            "POST", "/internal/v1/jobs", json=submission, idempotent=True
        )
        return result

    async def withdraw_submission(self, job_id: str, *, tenant_id: str, outbox_token: str) -> bool:
        """Roll a submission back at the router: True if withdrawn (no submit with that token
        will store the job), False if the router already holds the job."""
        answer: JsonObject = await self._call(
            "POST",
            f"/internal/v1/jobs/{job_id}/withdrawals",
            json={"tenant_id": tenant_id, "outbox_token": outbox_token},
            idempotent=True,
        )
        return bool(answer["withdrawn"])

    async def list_jobs(
        self,
        *,
        tenant_id: str,
        status: str | None,
        limit: int,
        cursor: str | None,
        filters: JsonObject | None = None,
    ) -> JsonObject:
        """A tenant's jobs; ``filters`` (status, priority, tier, domain, created_after,
        created_before; lists for repeated parameters) go to the router's query as they are.
        The tenant is always this argument: no filter can name another."""
        params = _list_params(filters)
        params.update(_params(tenant_id=tenant_id, limit=limit, cursor=cursor))
        if status is not None:
            params["status"] = [status, *params.get("status", [])]
        result: JsonObject = await self._call("GET", "/internal/v1/jobs", params=params)
        return result

    async def get_job(self, job_id: str, *, tenant_id: str | None) -> JsonObject:
        result: JsonObject = await self._call(
            "GET", f"/internal/v1/jobs/{job_id}", params=_params(tenant_id=tenant_id)
        )
        return result

    async def job_events(
        self,
        job_id: str,
        *,
        tenant_id: str | None,
        limit: int | None = None,
        cursor: str | None = None,
        types: list[str] | None = None,
        request_id: str | None = None,
    ) -> JsonObject:
        """A page of the job's timeline (the router's default page: its first 100 events);
        with ``request_id``, only the event the keyed request of that id made."""
        params = _list_params({"type": types})
        params.update(
            _params(tenant_id=tenant_id, limit=limit, cursor=cursor, request_id=request_id)
        )
        result: JsonObject = await self._call(
            "GET", f"/internal/v1/jobs/{job_id}/events", params=params
        )
        return result

    async def job_routing(self, job_id: str, *, tenant_id: str | None) -> JsonObject:
        result: JsonObject = await self._call(
            "GET", f"/internal/v1/jobs/{job_id}/routing", params=_params(tenant_id=tenant_id)
        )
        return result

    async def cancel_job(
        self, job_id: str, *, tenant_id: str, reason: str | None, request_id: str | None = None
    ) -> JsonObject:
        result: JsonObject = await self._call(
            "POST",
            f"/internal/v1/jobs/{job_id}/cancel",
            json=_params(tenant_id=tenant_id, reason=reason, request_id=request_id),
        )
        return result

    async def job_result(self, job_id: str, *, tenant_id: str) -> JobResult:
        body = await self._call(
            "GET", f"/internal/v1/jobs/{job_id}/result", params={"tenant_id": tenant_id}
        )
        return JobResult.model_validate(body)

    async def job_feedback(
        self, job_id: str, *, tenant_id: str, rating: int, comment: str | None
    ) -> JsonObject:
        """Rate a completed job (the router moves its team's quality; 409 a second time)."""
        result: JsonObject = await self._call(
            "POST",
            f"/internal/v1/jobs/{job_id}/feedback",
            json=_params(tenant_id=tenant_id, rating=rating, comment=comment),
        )
        return result

    async def result_grant(self, job_id: str, *, tenant_id: str) -> Grant:
        body = await self._call(
            "POST",
            f"/internal/v1/jobs/{job_id}/result-grant",
            json={"tenant_id": tenant_id},
            idempotent=True,  # only signs a grant
        )
        return Grant.model_validate(body)

    async def route_job(
        self, job_id: str, *, team_id: str, actor: str, domain: str | None = None
    ) -> JsonObject:
        result: JsonObject = await self._call(
            "POST",
            f"/internal/v1/jobs/{job_id}/route",
            json=_params(team_id=team_id, actor=actor, domain=domain),
        )
        return result

    async def triage(
        self, *, limit: int, cursor: str | None, filters: JsonObject | None = None
    ) -> JsonObject:
        """The triage queue; ``filters``: tenant_id, tier, domain, priority, created_*."""
        params = _list_params(filters)
        params.update(_params(limit=limit, cursor=cursor))
        result: JsonObject = await self._call("GET", "/internal/v1/triage", params=params)
        return result

    async def stats(self, *, window_seconds: int = 86_400) -> JsonObject:
        result: JsonObject = await self._call(
            "GET", "/internal/v1/stats", params={"window_seconds": window_seconds}
        )
        return result

    async def classify(self, items: list[JsonObject], *, policy: JsonObject | None) -> JsonObject:
        """The router's classification dry run (``{"results": [...]}`` in the order given)."""
        result: JsonObject = await self._call(
            "POST",
            "/internal/v1/classify",
            json={"items": items, "policy": policy},
            idempotent=True,  # a dry run: nothing stored
        )
        return result

    # A team's queue and a member's work ----------------------------------------------------

    async def team_jobs(
        self,
        team_id: str,
        *,
        status: str | None,
        limit: int,
        cursor: str | None,
        filters: JsonObject | None = None,
    ) -> JsonObject:
        """A team's queue; ``filters`` (priority, domain, created_after, created_before) go to
        the router's query as they are. The team is always this argument."""
        params = _list_params(filters)
        params.update(_params(status=status, limit=limit, cursor=cursor))
        result: JsonObject = await self._call(
            "GET", f"/internal/v1/teams/{team_id}/jobs", params=params
        )
        return result

    async def member_action(
        self,
        team_id: str,
        job_id: str,
        action: Literal["claim", "heartbeat", "release", "reject"],
        *,
        member_id: str,
        reason: str | None = None,
        request_id: str | None = None,
    ) -> JsonObject:
        result: JsonObject = await self._call(
            "POST",
            f"/internal/v1/teams/{team_id}/jobs/{job_id}/{action}",
            json=_params(member_id=member_id, reason=reason, request_id=request_id),
        )
        return result

    async def put_tenant_policy(
        self, tenant_id: str, *, version: int, policy: dict[str, Any]
    ) -> Any:
        """The tenant's policy at its version: the router holds the tenant's jobs to it
        (repeating a push changes nothing)."""
        return await self._call(
            "PUT",
            f"/internal/v1/tenants/{tenant_id}/policy",
            json={"version": version, "policy": policy},
            idempotent=True,
        )

    async def unpublished_events(
        self, *, limit: int, with_jobs_of: list[str] | None = None
    ) -> list[JsonObject]:
        """The oldest job events the router has not seen taken yet (the event feed,
        services/gateway/job_feed.py); only those of the tenants ``with_jobs_of`` (none if
        empty) with their jobs as they are now; with ``None``, every event's."""
        params: dict[str, Any] = {"limit": limit}
        if with_jobs_of is not None:
            params["jobs"] = "named"
            params["with_jobs_of"] = with_jobs_of
        answer: JsonObject = await self._call(
            "GET", "/internal/v1/events/unpublished", params=params
        )
        return list(answer["data"])

    async def mark_published(self, event_ids: list[int]) -> int:
        """These events are in the webhook outbox: they leave the feed (marking twice is a
        no-op); how many were still waiting."""
        answer: JsonObject = await self._call(
            "POST", "/internal/v1/events/published", json={"ids": event_ids}, idempotent=True
        )
        return int(answer["published"])

    async def register_member_key(
        self, team_id: str, member_id: str, *, public_key: str, endorsement: str | None
    ) -> None:
        """Register a member's X25519 public key (and its endorsement, if the member has one):
        the router names both in open grants."""
        body = {"public_key": public_key}
        if endorsement is not None:
            body["endorsement"] = endorsement
        await self._call("PUT", f"/internal/v1/teams/{team_id}/members/{member_id}/key", json=body)

    async def member_grant(
        self, team_id: str, job_id: str, *, member_id: str, action: Literal["open", "seal"]
    ) -> Grant:
        body = await self._call(
            "POST",
            f"/internal/v1/teams/{team_id}/jobs/{job_id}/grant",
            json={"member_id": member_id, "action": action},
            idempotent=True,  # only signs a grant
        )
        return Grant.model_validate(body)

    async def complete(
        self,
        team_id: str,
        job_id: str,
        *,
        member_id: str,
        result: Any,
        confidential_result_receipt: str | None,
        request_id: str | None = None,
    ) -> JsonObject:
        body: JsonObject = {"member_id": member_id, "result": result}
        if confidential_result_receipt is not None:
            body["confidential_result_receipt"] = confidential_result_receipt
        if request_id is not None:
            body["request_id"] = request_id
        answer: JsonObject = await self._call(
            "POST", f"/internal/v1/teams/{team_id}/jobs/{job_id}/complete", json=body
        )
        return answer

    # Teams -------------------------------------------------------------------------------

    async def create_team(self, team: JsonObject) -> JsonObject:
        result: JsonObject = await self._call("POST", "/internal/v1/teams", json=team)
        return result

    async def list_teams(
        self,
        *,
        limit: int,
        cursor: str | None,
        active: bool | None,
        tier: str | None,
        filters: JsonObject | None = None,
    ) -> JsonObject:
        """Teams; ``filters``: country, skill, certification (lists)."""
        params = _list_params(filters)
        params.update(_params(limit=limit, cursor=cursor, tier=tier))
        if active is not None:
            params["active"] = "true" if active else "false"
        result: JsonObject = await self._call("GET", "/internal/v1/teams", params=params)
        return result

    async def get_team(self, team_id: str) -> JsonObject:
        result: JsonObject = await self._call("GET", f"/internal/v1/teams/{team_id}")
        return result

    async def update_team(
        self, team_id: str, changes: JsonObject, *, if_match: str | None
    ) -> JsonObject:
        headers = {"If-Match": if_match} if if_match else {}
        result: JsonObject = await self._call(
            "PATCH", f"/internal/v1/teams/{team_id}", json=changes, headers=headers
        )
        return result
