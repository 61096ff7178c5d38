"""Each service's own metrics, on real apps and the run's real databases.

The router counts routing decisions where it takes them and reads job counts at scrape time; the
vault counts its audited operations and refusals, times audit appends and says when it is sealed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.router.app import create_app as create_router
from services.router.settings import RouterSettings
from services.vault.app import create_app as create_vault
from services.vault.settings import VaultSettings
from shared.metrics import sample_value
from shared.service_auth import ServiceIdentity
from tests.conftest import running
from tests.router.factories import create_team, submit_job
from tests.vault.factories import seal_job_data

DECISIONS = "taskroute_router_routing_decisions_total"
OPERATIONS = "taskroute_vault_operations_total"
AUDIT_WRITES = "taskroute_vault_audit_write_seconds_count"
VAGUE = {"title": "Quick favour", "description": "Please have a look at the attached and help."}


def gauges(text: str, name: str) -> dict[tuple[str, ...], float]:
    """The samples of one gauge family in a scrape, keyed by their label values in name order."""
    return {
        tuple(value for _, value in sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == name
        for sample in family.samples
    }


@pytest.fixture
def gateway(keys_dir: Path) -> ServiceIdentity:
    return ServiceIdentity.load(name="gateway", keys_dir=keys_dir, peers=())


async def test_router_counts_decisions_and_reports_jobs_per_status_and_team(
    databases, keys_dir, tmp_path, gateway
):
    settings = RouterSettings(
        database_url=databases["router"],
        service_keys_dir=keys_dir,
        data_dir=tmp_path,
        environment="test",
        sweep_interval_seconds=3600,  # no sweeper pass during the test
    )
    queued_before = sample_value(DECISIONS, {"outcome": "queued"})
    triage_before = sample_value(DECISIONS, {"outcome": "triage"})
    async with running(create_router(settings)) as client:
        client.headers["Authorization"] = f"Bearer {gateway.credential_for('router')}"
        team = await create_team(client, name="Clinical Pune")
        assert (await submit_job(client))["status"] == "queued"
        assert (await submit_job(client))["status"] == "queued"
        assert (await submit_job(client, **VAGUE))["status"] == "triage"
        scraped = await client.get("/metrics")
    assert sample_value(DECISIONS, {"outcome": "queued"}) == queued_before + 2
    assert sample_value(DECISIONS, {"outcome": "triage"}) == triage_before + 1
    assert scraped.status_code == 200
    assert gauges(scraped.text, "taskroute_router_jobs") == {("queued",): 2.0, ("triage",): 1.0}
    assert gauges(scraped.text, "taskroute_router_queue_depth") == {("queued", team["id"]): 2.0}


async def test_vault_counts_operations_refusals_and_audit_writes(
    databases, keys_dir, tmp_path, gateway
):
    settings = VaultSettings(
        database_url=databases["vault"], data_dir=tmp_path, service_keys_dir=keys_dir
    )
    auth = {"Authorization": f"Bearer {gateway.credential_for('vault')}"}
    sealed_ok = {"action": "seal", "outcome": "ok", "reason": ""}
    refused = {"action": "open", "outcome": "refused", "reason": "invalid_grant"}
    seals, refusals = sample_value(OPERATIONS, sealed_ok), sample_value(OPERATIONS, refused)
    writes = sample_value(AUDIT_WRITES)
    async with running(create_vault(settings)) as client:
        await seal_job_data(client, auth, data={"patient": "x"})
        forged = await client.post(
            "/internal/v1/records/open", json={"grant": "not-a-grant"}, headers=auth
        )
        scraped = await client.get("/metrics")
    assert forged.status_code in (401, 403)
    assert sample_value(OPERATIONS, sealed_ok) == seals + 1
    assert sample_value(OPERATIONS, refused) == refusals + 1
    assert sample_value(AUDIT_WRITES) == writes + 2
    assert gauges(scraped.text, "taskroute_vault_sealed") == {(): 0.0}


async def test_a_vault_without_root_key_reports_sealed(databases, keys_dir, tmp_path):
    settings = VaultSettings(
        database_url=databases["vault"],
        data_dir=tmp_path,
        service_keys_dir=keys_dir,
        generate_root_key=False,
    )
    async with running(create_vault(settings)) as client:
        ready = await client.get("/readyz")
        scraped = await client.get("/metrics")
    assert ready.status_code == 503
    assert gauges(scraped.text, "taskroute_vault_sealed") == {(): 1.0}
