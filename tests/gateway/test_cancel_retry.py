"""A keyed cancel whose first answer was lost, retried with the same Idempotency-Key, replays a
200 with the job instead of the router's 409 "already cancelled".

The first attempt's answer is lost two ways: the gateway fails after the router applied the
cancel (the ``gateway.cancel.after_router`` failpoint: a 500, so the claim is released), and the
router's answer never reaches the gateway (the line to the real router drops it after the
router answered: a 503 for the client)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.gateway.app import create_app
from services.router.app import create_app as create_router_app
from services.router.settings import RouterSettings
from services.vault.app import create_app as create_vault_app
from services.vault.settings import VaultSettings
from shared.failpoints import FAILPOINTS_FILE_VARIABLE
from tests.conftest import running
from tests.gateway.conftest import OPERATOR_KEY, Platform, gateway_settings
from tests.gateway.test_api import (
    BOOKKEEPING_JOB,
    BOOKKEEPING_TEAM,
    assert_problem,
    bearer,
    create_tenant,
)


async def _queued_job(platform: Platform) -> tuple[str, str]:
    tenant = await create_tenant(platform, "Acme Cancel Retry")
    team = await platform.client.post(
        "/v1/admin/teams", json=BOOKKEEPING_TEAM, headers=platform.operator
    )
    assert team.status_code == 201, team.text
    job = await platform.client.post(
        "/v1/jobs", json=BOOKKEEPING_JOB, headers=bearer(tenant["api_key"])
    )
    assert job.status_code == 202, job.text
    assert job.json()["status"] == "queued"
    return tenant["api_key"], job.json()["id"]


def _keyed(api_key: str, key: str) -> dict[str, str]:
    return {**bearer(api_key), "Idempotency-Key": key}


async def _assert_retries_replay(
    platform: Platform, api_key: str, job_id: str, key: str, body: dict[str, Any] | None
) -> None:
    path = f"/v1/jobs/{job_id}/cancel"
    retry = await platform.client.post(path, json=body, headers=_keyed(api_key, key))
    assert retry.status_code == 200, retry.text
    assert retry.json()["id"] == job_id
    assert retry.json()["status"] == "cancelled"
    again = await platform.client.post(path, json=body, headers=_keyed(api_key, key))
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == retry.json()
    # Without the key, or under a fresh key, the job is simply cancelled already: 409.
    assert_problem(await platform.client.post(path, json=body, headers=bearer(api_key)), 409)
    fresh = await platform.client.post(path, json=body, headers=_keyed(api_key, key + "-new"))
    assert_problem(fresh, 409)
    # One cancellation in the timeline, not two.
    events = await platform.client.get(f"/v1/jobs/{job_id}/events", headers=bearer(api_key))
    cancels = [e for e in events.json()["data"] if e["to_status"] == "cancelled"]
    assert len(cancels) == 1


async def test_a_retry_after_the_gateway_failed_past_the_router_replays_200(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api_key, job_id = await _queued_job(platform)
    failpoints = tmp_path / "failpoints"
    failpoints.write_text("gateway.cancel.after_router=error\n")
    monkeypatch.setenv(FAILPOINTS_FILE_VARIABLE, str(failpoints))
    body = {"reason": "duplicate order"}
    first = await platform.client.post(
        f"/v1/jobs/{job_id}/cancel", json=body, headers=_keyed(api_key, "cancel-1")
    )
    assert first.status_code == 500  # the router cancelled it; the answer was lost here
    failpoints.write_text("")
    status = await platform.client.get(f"/v1/jobs/{job_id}", headers=bearer(api_key))
    assert status.json()["status"] == "cancelled"
    await _assert_retries_replay(platform, api_key, job_id, "cancel-1", body)


async def test_a_different_reason_under_the_same_key_is_still_refused(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api_key, job_id = await _queued_job(platform)
    failpoints = tmp_path / "failpoints"
    failpoints.write_text("gateway.cancel.after_router=error\n")
    monkeypatch.setenv(FAILPOINTS_FILE_VARIABLE, str(failpoints))
    path = f"/v1/jobs/{job_id}/cancel"
    first = await platform.client.post(path, headers=_keyed(api_key, "cancel-2"))
    assert first.status_code == 500
    failpoints.write_text("")
    # Same key, another body: the idempotency layer refuses it (422) before anything runs.
    other = await platform.client.post(
        path, json={"reason": "changed my mind"}, headers=_keyed(api_key, "cancel-2")
    )
    assert_problem(other, 422)


class LossyRouterLine(httpx.AsyncBaseTransport):
    """The gateway's line to the real router app. It can drop the router's answer to calls
    whose path ends with ``drop_answers_to`` after the router has applied them (as a timeout or
    a broken connection would), and refuse calls ending with ``refuse_calls_to`` before they
    reach the router (as a refused connection would)."""

    def __init__(self, app: Any) -> None:
        self.drop_answers_to: str | None = None
        self.refuse_calls_to: str | None = None
        self._router = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.refuse_calls_to and request.url.path.endswith(self.refuse_calls_to):
            raise httpx.ConnectError("the router is not there", request=request)
        response = await self._router.handle_async_request(request)
        if self.drop_answers_to and request.url.path.endswith(self.drop_answers_to):
            await response.aread()
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


@pytest.fixture
async def lossy(databases, keys_dir, tmp_path) -> AsyncIterator[tuple[Platform, LossyRouterLine]]:
    router_app = create_router_app(
        RouterSettings(
            database_url=databases["router"], data_dir=tmp_path, service_keys_dir=keys_dir
        )
    )
    vault_app = create_vault_app(
        VaultSettings(database_url=databases["vault"], data_dir=tmp_path, service_keys_dir=keys_dir)
    )
    async with running(router_app), running(vault_app):
        line = LossyRouterLine(router_app)
        transports = {"router": line, "vault": httpx.ASGITransport(app=vault_app)}
        app = create_app(gateway_settings(databases, keys_dir, tmp_path), transports=transports)
        async with running(app) as client:
            yield Platform(app, client, databases, bearer(OPERATOR_KEY)), line


async def test_a_retry_after_the_routers_answer_was_lost_replays_200(
    lossy: tuple[Platform, LossyRouterLine],
) -> None:
    platform, line = lossy
    api_key, job_id = await _queued_job(platform)
    line.drop_answers_to = "/cancel"
    first = await platform.client.post(
        f"/v1/jobs/{job_id}/cancel", headers=_keyed(api_key, "cancel-3")
    )
    assert_problem(first, 503)  # the cancel is not retried blindly by the gateway
    line.drop_answers_to = None
    await _assert_retries_replay(platform, api_key, job_id, "cancel-3", None)
