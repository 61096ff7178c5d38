"""Root-key rotation: only wrapped keys move, traffic goes on, the audit chain keeps verifying.

Real databases (SQLite, and PostgreSQL when configured), real cryptography. Several engines on
one database stand in for several vault replicas and the rotation job.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from services.cli.main import app as cli
from services.cli.vault import rotate_root_key
from services.vault.app import create_app
from services.vault.domain import envelope, sealing
from services.vault.domain.envelope import RootKey, RootKeyRing
from services.vault.keys import load_root_key_ring, root_key_provider
from services.vault.service import VaultService
from services.vault.settings import VaultSettings
from shared import sealed_envelope as se
from shared.db import create_engine, create_sessionmaker
from shared.service_auth import ServiceIdentity
from tests.conftest import provisioned_databases, running
from tests.vault.factories import make_grant, new_uuid, seal_job_data
from tests.vault.test_sealing import CANARY, _sql, seal_and_store

OPEN = "/internal/v1/records/open"
VERIFY = "/internal/v1/audit/verify"


def _b64(key: RootKey) -> str:
    return base64.b64encode(key.material).decode()


def _settings(
    url: str, tmp_path: Path, keys_dir: Path, current: RootKey, *previous: RootKey
) -> VaultSettings:
    return VaultSettings(
        database_url=url,
        data_dir=tmp_path,
        service_keys_dir=keys_dir,
        root_key=_b64(current),
        previous_root_keys=",".join(_b64(key) for key in previous) or None,
        generate_root_key=False,
    )


async def _usage(url: str) -> dict[str, int]:
    rows = await _sql(
        url,
        "SELECT root_key_id, count(*) FROM ("
        " SELECT root_key_id FROM tenant_keys WHERE state != 'shredded'"
        " UNION ALL SELECT root_key_id FROM tenant_sealing_keys WHERE state != 'shredded'"
        " UNION ALL SELECT root_key_id FROM audit_keys) AS wrapped GROUP BY root_key_id",
    )
    return {str(key_id): int(count) for key_id, count in rows}


# --- the ring and its sources ----------------------------------------------------------------


def test_ring_finds_each_key_by_id_and_drops_repeats():
    old, new = RootKey(os.urandom(32)), RootKey(os.urandom(32))
    ring = RootKeyRing(current=new, previous=(old, new, old))
    assert ring.key_ids == (new.key_id, old.key_id)
    assert ring.get(old.key_id) is old
    assert ring.get(new.key_id) is new
    assert ring.get("0" * 16) is None
    assert old.material.hex() not in repr(ring)


def test_previous_root_keys_come_from_the_environment_and_from_files(tmp_path):
    current, from_env, from_file = (RootKey(os.urandom(32)) for _ in range(3))
    path = tmp_path / "old-root.key"
    path.write_bytes(from_file.material)
    path.chmod(0o600)
    settings = VaultSettings(
        data_dir=tmp_path,
        root_key=_b64(current),
        previous_root_keys=_b64(from_env),
        previous_root_key_files=str(path),
    )
    ring = load_root_key_ring(root_key_provider(settings))
    assert ring is not None
    assert ring.key_ids == (current.key_id, from_env.key_id, from_file.key_id)
    # The file provider takes them too.
    file_settings = VaultSettings(
        data_dir=tmp_path, root_key_file=path, previous_root_keys=_b64(from_env)
    )
    file_ring = load_root_key_ring(root_key_provider(file_settings))
    assert file_ring is not None
    assert file_ring.key_ids == (from_file.key_id, from_env.key_id)


def test_a_bad_previous_root_key_is_refused_without_echoing_it(tmp_path):
    near_miss = base64.b64encode(os.urandom(31)).decode()
    with pytest.raises(ValueError, match="PREVIOUS_ROOT_KEYS") as refused:
        VaultSettings(data_dir=tmp_path, previous_root_keys=near_miss)
    assert near_miss not in str(refused.value)
    missing = VaultSettings(
        data_dir=tmp_path,
        root_key=_b64(RootKey(os.urandom(32))),
        previous_root_key_files=str(tmp_path / "nope.key"),
    )
    with pytest.raises(RuntimeError, match="does not exist"):
        load_root_key_ring(root_key_provider(missing))


def test_sealing_key_rewrap_binds_the_new_root_key():
    old, new = RootKey(os.urandom(32)), RootKey(os.urandom(32))
    pair = sealing.generate(old, tenant_id="t", version=1)
    moved = sealing.rewrap(
        old, new, tenant_id="t", version=1, key_id=pair.key_id, wrapped=pair.wrapped_private_key
    )
    private = sealing.unwrap(new, tenant_id="t", version=1, key_id=pair.key_id, wrapped=moved)
    assert se.key_id_for(private.public_key()) == pair.key_id
    with pytest.raises(envelope.DecryptionError):
        sealing.unwrap(old, tenant_id="t", version=1, key_id=pair.key_id, wrapped=moved)


# --- end to end through the vault's API and the rotation job ---------------------------------


async def test_rotation_rewraps_only_keys_and_the_old_root_key_can_then_go(
    databases, tmp_path, keys_dir, gateway_auth, router_identity
):
    url = databases["vault"]
    old, new = RootKey(os.urandom(32)), RootKey(os.urandom(32))
    async with running(create_app(_settings(url, tmp_path, keys_dir, old))) as vault:
        tenant_id, job_id, ref = await seal_job_data(vault, gateway_auth, data=CANARY)
        rotated = await vault.post(
            f"/internal/v1/tenants/{tenant_id}/keys/rotate", headers=gateway_auth
        )
        assert rotated.status_code == 200
        _, job_2, ref_2 = await seal_job_data(
            vault, gateway_auth, data={"v": 2}, tenant_id=tenant_id
        )
        _, sealed_job, sealed_ref, _ = await seal_and_store(vault, gateway_auth)
    payloads = await _sql(url, "SELECT id, wrapped_data_key, ciphertext FROM records ORDER BY id")
    envelopes = await _sql(url, "SELECT id, envelope FROM sealed_records ORDER BY id")
    assert set(await _usage(url)) == {old.key_id}

    # The new key is current; the old one only unwraps. Everything still opens, new keys are
    # wrapped under the new root key, and the rotation job moves the rest.
    during = _settings(url, tmp_path, keys_dir, new, old)
    async with running(create_app(during)) as vault:
        grant = make_grant(router_identity, tenant_id=tenant_id, job_id=job_id, ref=ref)
        assert (await vault.post(OPEN, json={"grant": grant}, headers=gateway_auth)).json() == {
            "data": CANARY
        }
        fresh_tenant, fresh_job, fresh_ref = await seal_job_data(vault, gateway_auth, data=3)
        usage = await _usage(url)
        assert usage[new.key_id] == 1
        assert usage[old.key_id] > 1

        ring = load_root_key_ring(root_key_provider(during))
        assert ring is not None
        said: list[str] = []
        progress = await rotate_root_key(during, ring, batch_size=2, say=said.append)
        assert progress.remaining == 0
        assert progress.rewrapped == usage[old.key_id]
        assert len(said) >= 2  # in batches
        assert set(await _usage(url)) == {new.key_id}
        verify = (await vault.get(VERIFY, headers=gateway_auth)).json()
        assert verify["valid"] is True, verify

    # Data keys and payloads were not touched.
    stored = await _sql(url, "SELECT id, wrapped_data_key, ciphertext FROM records ORDER BY id")
    assert [row for row in stored if row[0] != fresh_ref] == payloads
    assert await _sql(url, "SELECT id, envelope FROM sealed_records ORDER BY id") == envelopes

    # The old root key removed: everything opens, the audit chain verifies, rotation is audited.
    after = _settings(url, tmp_path, keys_dir, new)
    async with running(create_app(after)) as vault:
        for tenant, job, record in (
            (tenant_id, job_id, ref),
            (tenant_id, job_2, ref_2),
            (fresh_tenant, fresh_job, fresh_ref),
        ):
            grant = make_grant(router_identity, tenant_id=tenant, job_id=job, ref=record)
            response = await vault.post(OPEN, json={"grant": grant}, headers=gateway_auth)
            assert response.status_code == 200, response.text
        sealed_tenant = (await _sql(url, "SELECT tenant_id FROM sealed_records"))[0][0]
        grant = make_grant(
            router_identity, tenant_id=sealed_tenant, job_id=sealed_job, ref=sealed_ref
        )
        assert (await vault.post(OPEN, json={"grant": grant}, headers=gateway_auth)).json() == {
            "data": CANARY
        }
        verify = (await vault.get(VERIFY, headers=gateway_auth)).json()
        assert verify["valid"] is True, verify
        listed = (await vault.get("/internal/v1/audit?limit=100", headers=gateway_auth)).json()[
            "data"
        ]
        rotations = [r for r in listed if r["action"] == "rotate-root"]
        assert rotations
        assert all(r["ref"] == new.key_id for r in rotations)
        assert rotations[0]["reason"].endswith("0 left")

    # A vault that knows only the old root key can no longer unwrap anything.
    async with running(create_app(_settings(url, tmp_path, keys_dir, old))) as vault:
        grant = make_grant(router_identity, tenant_id=tenant_id, job_id=job_id, ref=ref)
        response = await vault.post(OPEN, json={"grant": grant}, headers=gateway_auth)
        assert response.status_code == 503
        assert response.json()["type"].endswith("/root-key-mismatch")


# --- concurrent traffic during the rotation ---------------------------------------------------


@pytest.fixture
async def engines(databases: dict[str, str]) -> AsyncIterator[list[AsyncEngine]]:
    created = [create_engine(databases["vault"]) for _ in range(3)]
    try:
        yield created
    finally:
        for engine in created:
            await engine.dispose()


@pytest.fixture(scope="session")
def vault_identity(keys_dir: Path) -> ServiceIdentity:
    return ServiceIdentity.load(name="vault", keys_dir=keys_dir, peers=("gateway", "router"))


async def _call(
    engine: AsyncEngine, ring: RootKeyRing, identity: ServiceIdentity, method: str, **kwargs: Any
) -> Any:
    """One operation in its own committed transaction, as one request of one replica."""
    maker = create_sessionmaker(engine)
    async with maker() as session, session.begin():
        service = VaultService(
            session=session,
            sessionmaker=maker,
            root_key=ring,
            identity=identity,
            actor="gateway",
            audit_lock_timeout_seconds=20.0,
        )
        return await getattr(service, method)(**kwargs)


async def test_seals_and_opens_during_a_rotation_see_no_failure(
    databases, engines, tmp_path, keys_dir, vault_identity, router_identity
):
    url = databases["vault"]
    old, new = RootKey(os.urandom(32)), RootKey(os.urandom(32))
    before = RootKeyRing(current=old)
    # Replicas mid-rollout: some already wrap under the new key, some still under the old one
    # but know the new one (step 1 of the runbook); the rotation job runs with the new one.
    switched, not_yet = RootKeyRing(new, (old,)), RootKeyRing(old, (new,))

    tenants = [new_uuid() for _ in range(4)]
    sealed: list[tuple[str, str, str]] = []
    for n in range(16):
        tenant = tenants[n % len(tenants)]
        job = new_uuid()
        result = await _call(
            engines[0], before, vault_identity, "seal",
            tenant_id=tenant, job_id=job, purpose="job", data={"n": n}, subject="tenant:t",
        )  # fmt: skip
        sealed.append((tenant, job, result.ref))
    for tenant in tenants:
        await _call(engines[0], before, vault_identity, "sealing_keys", tenant_id=tenant)
        await _call(engines[0], before, vault_identity, "rotate", tenant_id=tenant)
    to_move = (await _usage(url))[old.key_id]
    assert to_move == 4 * 2 + 4 * 2 + 1  # tenant keys v1, v2; sealing keys v1, v2; audit key

    async def opener(engine: AsyncEngine, ring: RootKeyRing, rounds: int) -> list[Any]:
        opened = []
        for round_ in range(rounds):
            tenant, job, ref = sealed[round_ % len(sealed)]
            token = make_grant(router_identity, tenant_id=tenant, job_id=job, ref=ref)
            opened.append(await _call(engine, ring, vault_identity, "open", token=token))
        return opened

    async def sealer(engine: AsyncEngine, rounds: int) -> list[Any]:
        refs = []
        for round_ in range(rounds):
            result = await _call(
                engine, switched, vault_identity, "seal",
                tenant_id=tenants[round_ % len(tenants)], job_id=new_uuid(), purpose="job",
                data={"during": round_}, subject="tenant:t",
            )  # fmt: skip
            refs.append(result.ref)
        return refs

    rotation_ring = RootKeyRing(new, (old,))
    settings = _settings(url, tmp_path, keys_dir, new, old)
    outcomes = await asyncio.gather(
        rotate_root_key(settings, rotation_ring, batch_size=3),
        opener(engines[1], switched, 12),
        opener(engines[2], not_yet, 12),
        sealer(engines[1], 8),
        sealer(engines[2], 8),
        return_exceptions=True,
    )
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert failures == []
    progress = outcomes[0]
    assert progress.remaining == 0
    assert progress.rewrapped == to_move
    for opened in outcomes[1:3]:
        assert [o["n"] for o in opened] == [n % 16 for n in range(12)]
    assert set(await _usage(url)) == {new.key_id}

    # The old root key removed: every record opens and the audit chain verifies.
    only_new = RootKeyRing(new)
    for tenant, job, ref in sealed:
        token = make_grant(router_identity, tenant_id=tenant, job_id=job, ref=ref)
        assert "n" in await _call(engines[0], only_new, vault_identity, "open", token=token)
    maker = create_sessionmaker(engines[0])
    async with maker() as session:
        verification = await VaultService(
            session=session,
            sessionmaker=maker,
            root_key=only_new,
            identity=vault_identity,
            actor="gateway",
            audit_lock_timeout_seconds=5.0,
        ).verify_audit()
    assert verification.valid, verification


def test_cli_rotates_reports_and_is_resumable(tmp_path, keys_dir, monkeypatch):
    old, new = RootKey(os.urandom(32)), RootKey(os.urandom(32))
    with provisioned_databases("sqlite", tmp_path) as urls:
        url = urls["vault"]

        async def seed() -> None:
            engine = create_engine(url)
            try:
                for _ in range(3):
                    await _call(
                        engine, RootKeyRing(old), None, "seal",  # type: ignore[arg-type]
                        tenant_id=new_uuid(), job_id=new_uuid(), purpose="job", data=1,
                        subject="tenant:t",
                    )  # fmt: skip
            finally:
                await engine.dispose()

        asyncio.run(seed())
        runner = CliRunner()
        env = {
            "TASKROUTE_VAULT_DATABASE_URL": url,
            "TASKROUTE_DATA_DIR": str(tmp_path),
            "TASKROUTE_VAULT_GENERATE_ROOT_KEY": "false",
            "TASKROUTE_VAULT_ROOT_KEY": _b64(new),
        }
        # Without the previous key the job cannot unwrap: it says so and changes nothing.
        refused = runner.invoke(cli, ["vault", "rotate-root-key"], env=env)
        assert refused.exit_code == 2, refused.output
        assert "previous root key" in refused.output
        status = runner.invoke(cli, ["vault", "root-key-status"], env=env)
        assert status.exit_code == 1
        assert re.search(rf"{old.key_id} +4 stored keys +\(UNKNOWN", status.output)

        env["TASKROUTE_VAULT_PREVIOUS_ROOT_KEYS"] = _b64(old)
        done = runner.invoke(cli, ["vault", "rotate-root-key", "--batch-size", "2"], env=env)
        assert done.exit_code == 0, done.output
        assert "done: 4 keys re-wrapped" in done.output
        assert _b64(old) not in done.output
        assert _b64(new) not in done.output
        again = runner.invoke(cli, ["vault", "rotate-root-key"], env=env)
        assert again.exit_code == 0
        assert "done: 0 keys re-wrapped" in again.output
        status = runner.invoke(cli, ["vault", "root-key-status"], env=env)
        assert status.exit_code == 0, status.output
        assert "Every stored key is under the current root key." in status.output
