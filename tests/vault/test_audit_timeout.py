"""On SQLite, an audit append that cannot get the write lock fails closed, in bounded time.

The write lock is held by another connection (another process, as far as the vault can tell);
the vault must refuse with 503 problem+json within ``audit_lock_timeout_seconds``, store
nothing, and work again once the lock is released.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.vault.app import create_app
from services.vault.settings import VaultSettings
from tests.conftest import provisioned_databases, running
from tests.vault.factories import make_grant, new_uuid, seal_job_data
from tests.vault.test_sealing import _sql

RECORDS = "/internal/v1/records"
TIMEOUT = 0.5


@pytest.fixture
def sqlite_vault_url(tmp_path: Path) -> Iterator[str]:
    """A migrated SQLite vault database of its own (this test is about SQLite's lock)."""
    with provisioned_databases("sqlite", tmp_path / "db") as urls:
        yield urls["vault"]


async def test_a_held_sqlite_write_lock_fails_closed_within_the_timeout(
    sqlite_vault_url, tmp_path, keys_dir, gateway_auth, router_identity
):
    url = sqlite_vault_url
    settings = VaultSettings(
        database_url=url,
        data_dir=tmp_path,
        service_keys_dir=keys_dir,
        audit_lock_timeout_seconds=TIMEOUT,
    )
    async with running(create_app(settings)) as vault:
        tenant_id, job_id, ref = await seal_job_data(vault, gateway_auth, data={"x": 1})
        holder = sqlite3.connect(url.split(":///", 1)[1], isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # the database's single write lock
            started = time.monotonic()
            refused = await vault.post(
                RECORDS,
                json={"tenant_id": new_uuid(), "job_id": new_uuid(), "purpose": "job", "data": 2},
                headers=gateway_auth,
            )
            elapsed = time.monotonic() - started
            assert refused.status_code == 503, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.json()["type"].endswith("/audit-unavailable")
            assert refused.headers["retry-after"] == "1"
            assert TIMEOUT * 0.8 <= elapsed < TIMEOUT + 2.5  # bounded: not SQLite's 30 s

            # An open is refused too: it cannot be audited, so no plaintext leaves.
            grant = make_grant(router_identity, tenant_id=tenant_id, job_id=job_id, ref=ref)
            opened = await vault.post(
                "/internal/v1/records/open", json={"grant": grant}, headers=gateway_auth
            )
            assert opened.status_code == 503
            assert "data" not in opened.json()
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # Nothing was stored half-way; with the lock free again the vault works.
        assert await _sql(url, "SELECT count(*) FROM records") == [(1,)]
        assert await _sql(url, "SELECT count(*) FROM audit_records") == [(1,)]
        await seal_job_data(vault, gateway_auth, data={"x": 3})
        verify = (await vault.get("/internal/v1/audit/verify", headers=gateway_auth)).json()
        assert (verify["valid"], verify["records"]) == (True, 2)


def test_the_audit_lock_timeout_is_bounded():
    with pytest.raises(ValueError, match="audit_lock_timeout_seconds"):
        VaultSettings(audit_lock_timeout_seconds=0)
    with pytest.raises(ValueError, match="audit_lock_timeout_seconds"):
        VaultSettings(audit_lock_timeout_seconds=61)
