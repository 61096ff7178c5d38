"""Client of the router's four-eyes review API (``/internal/v1/teams/{team}/reviews``).

Kept beside :mod:`services.gateway.clients.router` (same transport, same error mapping) so the
review routes can grow without touching the router client."""

from __future__ import annotations

from typing import Any, Literal

import httpx

from services.gateway.clients.router import SERVICE, Grant, JsonObject
from shared.http import call_service


class ReviewClient:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return await call_service(self._client, method, path, service=SERVICE, **kwargs)

    @staticmethod
    def _path(team_id: str, job_id: str | None = None) -> str:
        base = f"/internal/v1/teams/{team_id}/reviews"
        return base if job_id is None else f"{base}/{job_id}"

    async def reviews(
        self, team_id: str, *, member_id: str, limit: int, cursor: str | None
    ) -> JsonObject:
        """Jobs awaiting the team's review that ``member_id`` may decide, oldest first."""
        params: dict[str, Any] = {"member_id": member_id, "limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        result: JsonObject = await self._call("GET", self._path(team_id), params=params)
        return result

    async def review(self, team_id: str, job_id: str, *, member_id: str) -> JsonObject:
        result: JsonObject = await self._call(
            "GET", self._path(team_id, job_id), params={"member_id": member_id}
        )
        return result

    async def approve(
        self, team_id: str, job_id: str, *, member_id: str, comment: str | None
    ) -> JsonObject:
        body: JsonObject = {"member_id": member_id}
        if comment is not None:
            body["comment"] = comment
        result: JsonObject = await self._call(
            "POST", f"{self._path(team_id, job_id)}/approve", json=body
        )
        return result

    async def send_back(
        self, team_id: str, job_id: str, *, member_id: str, comment: str
    ) -> JsonObject:
        result: JsonObject = await self._call(
            "POST",
            f"{self._path(team_id, job_id)}/send-back",
            json={"member_id": member_id, "comment": comment},
        )
        return result

    async def grant(
        self, team_id: str, job_id: str, *, member_id: str, purpose: Literal["job", "result"]
    ) -> Grant:
        """A router-signed open grant for the reviewer (the job's data, or its result)."""
        body = await self._call(
            "POST",
            f"{self._path(team_id, job_id)}/grant",
            json={"member_id": member_id, "purpose": purpose},
        )
        return Grant.model_validate(body)
