"""The audit chain's own MAC key: stored wrapped by the root key, kept through root rotation."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from services.cli.vault import rotate_root_key
from services.vault.app import create_app
from services.vault.domain import audit
from services.vault.domain.envelope import RootKey, RootKeyRing
from services.vault.settings import VaultSettings
from tests.conftest import running
from tests.vault.audit_rewrite import rewrite_chain, stored_audit_key
from tests.vault.factories import seal_job_data
from tests.vault.test_sealing import _sql

VERIFY = "/internal/v1/audit/verify"


def _settings(url: str, tmp_path: Path, keys_dir: Path, *keys: RootKey) -> VaultSettings:
    current, *previous = keys
    return VaultSettings(
        database_url=url,
        data_dir=tmp_path,
        service_keys_dir=keys_dir,
        root_key=base64.b64encode(current.material).decode(),
        previous_root_keys=",".join(base64.b64encode(k.material).decode() for k in previous)
        or None,
        generate_root_key=False,
    )


async def test_a_new_chain_gets_a_random_audit_key_wrapped_by_the_root_key(
    databases, tmp_path, keys_dir, gateway_auth
):
    url = databases["vault"]
    root = RootKey(os.urandom(32))
    async with running(create_app(_settings(url, tmp_path, keys_dir, root))) as vault:
        await seal_job_data(vault, gateway_auth, data={"x": 1})
        await seal_job_data(vault, gateway_auth, data={"x": 2})
        assert (await vault.get(VERIFY, headers=gateway_auth)).json()["valid"] is True
    [(origin, root_key_id, wrapped)] = await _sql(
        url, "SELECT origin, root_key_id, wrapped_key FROM audit_keys"
    )
    assert (origin, root_key_id) == ("random", root.key_id)
    key = await stored_audit_key(url, root)
    assert key != root.audit_key()  # not derived from the root key
    assert key not in wrapped
    [(seq, last_hash, mac)] = await _sql(url, "SELECT seq, hash, mac FROM audit_chain_head")
    assert mac == audit.head_mac(key, seq, last_hash)


async def test_a_chain_begun_before_the_audit_key_keeps_verifying_through_root_rotation(
    databases, tmp_path, keys_dir, gateway_auth
):
    url = databases["vault"]
    old, new = RootKey(os.urandom(32)), RootKey(os.urandom(32))
    async with running(create_app(_settings(url, tmp_path, keys_dir, old))) as vault:
        for n in range(3):
            await seal_job_data(vault, gateway_auth, data={"n": n})
    # The database as an earlier release left it: the chain MAC'd with the key derived from
    # the root key, and no audit_keys row.
    await rewrite_chain(url, old.audit_key())
    await _sql(url, "DELETE FROM audit_keys")

    async with running(create_app(_settings(url, tmp_path, keys_dir, old))) as vault:
        assert (await vault.get(VERIFY, headers=gateway_auth)).json()["valid"] is True
        await seal_job_data(vault, gateway_auth, data={"n": 3})  # stores the chain's key
        assert (await _sql(url, "SELECT origin FROM audit_keys")) == [("derived",)]
        assert await stored_audit_key(url, old) == old.audit_key()

    during = _settings(url, tmp_path, keys_dir, new, old)
    async with running(create_app(during)) as vault:
        await seal_job_data(vault, gateway_auth, data={"n": 4})
        await rotate_root_key(during, RootKeyRing(new, (old,)), batch_size=10)
    assert (await _sql(url, "SELECT root_key_id FROM audit_keys")) == [(new.key_id,)]

    # Only the new root key now: the old records, MAC'd before any rotation, still verify.
    async with running(create_app(_settings(url, tmp_path, keys_dir, new))) as vault:
        await seal_job_data(vault, gateway_auth, data={"n": 5})
        result = (await vault.get(VERIFY, headers=gateway_auth)).json()
        assert result["valid"] is True, result
        assert result["records"] == 7  # 5 seals, a rotation batch, one more seal


async def test_a_lost_audit_key_fails_closed(databases, tmp_path, keys_dir, gateway_auth):
    url = databases["vault"]
    root = RootKey(os.urandom(32))
    settings = _settings(url, tmp_path, keys_dir, root)
    async with running(create_app(settings)) as vault:
        await seal_job_data(vault, gateway_auth, data=1)
    await _sql(url, "DELETE FROM audit_keys")  # a random key, and gone: nothing can replace it
    async with running(create_app(settings)) as vault:
        response = await vault.post(
            "/internal/v1/records",
            json={
                "tenant_id": "6d3c3f7e-95a2-4bd5-9d47-7f8f7b1b2c01",
                "job_id": "6d3c3f7e-95a2-4bd5-9d47-7f8f7b1b2c02",
                "purpose": "job",
                "data": 2,
            },
            headers=gateway_auth,
        )
        assert response.status_code == 503
        assert response.json()["type"].endswith("/audit-unavailable")
    assert await _sql(url, "SELECT count(*) FROM records") == [(1,)]
