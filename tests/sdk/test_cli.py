"""``taskroute jobs`` and ``taskroute keys`` against a real platform, through typer's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli.main import app
from services.sdk import TaskrouteClient
from tests.e2e.conftest import Platform
from tests.sdk.conftest import CLINICAL_DESCRIPTION, CLINICAL_TITLE, Tenancy

pytestmark = pytest.mark.e2e

runner = CliRunner()


def taskroute(platform: Platform, api_key: str, *args: str, input: str | None = None):  # noqa: A002
    """Run the real command, with the URL and key from the environment as a user sets them."""
    env = {"TASKROUTE_URL": platform.gateway_url, "TASKROUTE_API_KEY": api_key}
    return runner.invoke(app, list(args), env=env, input=input)


def test_jobs_submit_list_get_cancel(platform: Platform, tenancy: Tenancy, tmp_path: Path) -> None:
    secret = tmp_path / "confidential.json"
    secret.write_text(json.dumps({"patient": "CLI-CANARY-5521"}))
    submitted = taskroute(
        platform,
        tenancy.client_key,
        "jobs", "submit",
        "--title", CLINICAL_TITLE,
        "--description", CLINICAL_DESCRIPTION,
        "--priority", "high",
        "--confidential-file", str(secret),
        "--metadata", "batch=7",
        "--json",
    )  # fmt: skip
    assert submitted.exit_code == 0, submitted.output
    job = json.loads(submitted.output)
    assert job["status"] == "queued"
    assert job["has_confidential"] is True
    assert job["metadata"] == {"batch": "7"}
    assert "CLI-CANARY-5521" not in submitted.output

    table = taskroute(platform, tenancy.client_key, "jobs", "list")
    assert table.exit_code == 0, table.output
    row = next(line for line in table.output.splitlines() if job["id"] in line)
    assert "queued" in row
    assert "KPO/clinical" in row
    assert "SDK Clinical Team" in row

    listed = taskroute(platform, tenancy.client_key, "jobs", "list", "--all", "--json")
    assert [j["id"] for j in json.loads(listed.output)] == [job["id"]]

    shown = taskroute(platform, tenancy.client_key, "jobs", "get", job["id"])
    assert shown.exit_code == 0, shown.output
    assert "Timeline" in shown.output
    assert "pending" in shown.output

    cancelled = taskroute(
        platform, tenancy.client_key, "jobs", "cancel", job["id"], "--reason", "Wrong batch"
    )
    assert cancelled.exit_code == 0, cancelled.output
    assert "cancelled" in cancelled.output
    again = taskroute(platform, tenancy.client_key, "jobs", "cancel", job["id"])
    assert again.exit_code == 1
    assert "409" in again.output


def test_jobs_result_hides_the_confidential_part_unless_asked(
    platform: Platform, tenancy: Tenancy
) -> None:
    with (
        TaskrouteClient(platform.gateway_url, tenancy.client_key) as client,
        TaskrouteClient(platform.gateway_url, tenancy.member_key) as member,
    ):
        job = client.submit_job(CLINICAL_TITLE, CLINICAL_DESCRIPTION)
        member.claim(job.id)
        member.complete(job.id, result={"coded": 3}, confidential_result={"who": "RES-CANARY"})

    shown = taskroute(platform, tenancy.client_key, "jobs", "result", job.id)
    assert shown.exit_code == 0, shown.output
    assert '{"coded": 3}' in shown.output
    assert "RES-CANARY" not in shown.output
    assert "--show-confidential" in shown.output

    as_json = taskroute(platform, tenancy.client_key, "jobs", "result", job.id, "--json")
    assert json.loads(as_json.output) == {"result": {"coded": 3}}
    revealed = taskroute(
        platform, tenancy.client_key, "jobs", "result", job.id, "--show-confidential", "--json"
    )
    assert json.loads(revealed.output)["confidential_result"] == {"who": "RES-CANARY"}


def test_errors_are_one_line_with_the_request_id(platform: Platform, tenancy: Tenancy) -> None:
    missing = taskroute(
        platform, tenancy.client_key, "jobs", "get", "00000000-0000-4000-8000-000000000000"
    )
    assert missing.exit_code == 1
    assert missing.output.startswith("error: 404 Not found")
    wrong_key = taskroute(platform, "tr_client_unknown_key", "jobs", "list")
    assert wrong_key.exit_code == 1
    assert "401" in wrong_key.output


def test_keys_create_list_revoke(platform: Platform, tenancy: Tenancy) -> None:
    op = platform.operator_key
    created = taskroute(platform, op, "keys", "create", tenancy.tenant_id, "--json")
    assert created.exit_code == 0, created.output
    key = json.loads(created.output)
    assert key["api_key"].startswith("tr_")

    # The new key works, and is listed by its prefix only.
    shown = taskroute(platform, key["api_key"], "jobs", "list", "--json")
    assert shown.exit_code == 0, shown.output
    table = taskroute(platform, op, "keys", "list", tenancy.tenant_id)
    assert table.exit_code == 0, table.output
    assert key["lookup_prefix"] in table.output
    assert key["api_key"] not in table.output

    revoked = taskroute(platform, op, "keys", "revoke", tenancy.tenant_id, key["id"])
    assert revoked.exit_code == 0, revoked.output
    assert taskroute(platform, key["api_key"], "jobs", "list").exit_code == 1
    listed = json.loads(taskroute(platform, op, "keys", "list", tenancy.tenant_id, "--json").output)
    assert next(k for k in listed if k["id"] == key["id"])["revoked_at"] is not None


def test_keys_create_tenant_shows_the_key_once(platform: Platform) -> None:
    made = taskroute(platform, platform.operator_key, "keys", "create-tenant", "CLI Tenant")
    assert made.exit_code == 0, made.output
    new_key = made.output.strip().splitlines()[-1]
    assert new_key.startswith("tr_")
    assert "shown only now" in made.output
    tenants = taskroute(platform, platform.operator_key, "keys", "tenants")
    assert "CLI Tenant" in tenants.output
    assert new_key not in tenants.output
    # The key is a client key of the new tenant.
    assert taskroute(platform, new_key, "jobs", "list", "--json").output.strip() == "[]"
    # A client key cannot manage keys.
    refused = taskroute(platform, new_key, "keys", "tenants")
    assert refused.exit_code == 1
    assert "403" in refused.output
