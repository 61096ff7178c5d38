"""Anchors: the audit chain's head kept outside the database catches a consistent rewrite."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from services.vault.anchors import Anchor, AnchorStoreDamaged, FileAnchorStore
from services.vault.app import create_app
from services.vault.domain.envelope import RootKey
from services.vault.domain.errors import AnchoringOff
from services.vault.service import VaultService
from services.vault.settings import VaultSettings
from shared.db import create_engine, create_sessionmaker, utcnow
from tests.conftest import running
from tests.vault.audit_rewrite import rewrite_chain, stored_audit_key
from tests.vault.factories import seal_job_data
from tests.vault.test_sealing import _sql

VERIFY = "/internal/v1/audit/verify"
ANCHORS = "/internal/v1/audit/anchors"


def _settings(
    url: str, tmp_path: Path, keys_dir: Path, root: RootKey, anchors: Path, **extra: object
) -> VaultSettings:
    return VaultSettings(
        database_url=url,
        data_dir=tmp_path,
        service_keys_dir=keys_dir,
        root_key=base64.b64encode(root.material).decode(),
        generate_root_key=False,
        audit_anchor_file=anchors,
        **extra,  # type: ignore[arg-type]
    )


async def test_anchoring_on_demand_writes_the_head_to_an_append_only_file(
    databases, tmp_path, keys_dir, gateway_auth
):
    root, path = RootKey(os.urandom(32)), tmp_path / "anchors" / "audit.jsonl"
    settings = _settings(databases["vault"], tmp_path, keys_dir, root, path)
    async with running(create_app(settings)) as vault:
        empty = await vault.post(ANCHORS, headers=gateway_auth)
        assert (empty.status_code, empty.json()["anchored"]) == (200, False)
        for n in range(3):
            await seal_job_data(vault, gateway_auth, data={"n": n})
        anchored = await vault.post(ANCHORS, headers=gateway_auth)
        assert anchored.status_code == 201, anchored.text
        assert (anchored.json()["anchored"], anchored.json()["seq"]) == (True, 3)
        [(head_hash,)] = await _sql(databases["vault"], "SELECT hash FROM audit_chain_head")
        assert anchored.json()["hash"] == head_hash
        verify = (await vault.get(VERIFY, headers=gateway_auth)).json()
        assert (verify["valid"], verify["anchors"], verify["anchoring"]) == (True, 1, True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [anchor] = await FileAnchorStore(path).read_all()
    assert (anchor.seq, anchor.hash) == (3, head_hash)
    assert "n" not in path.read_text()  # heads only: no record content


async def test_a_consistent_rewrite_passes_the_chain_check_but_not_the_anchors(
    databases, tmp_path, keys_dir, gateway_auth
):
    url = databases["vault"]
    root = RootKey(os.urandom(32))
    anchored_file, no_anchors = tmp_path / "anchors.jsonl", tmp_path / "none.jsonl"
    with_anchors = _settings(url, tmp_path, keys_dir, root, anchored_file)
    without = _settings(url, tmp_path, keys_dir, root, no_anchors)
    async with running(create_app(with_anchors)) as vault:
        for n in range(2):
            await seal_job_data(vault, gateway_auth, data={"n": n})
        assert (await vault.post(ANCHORS, headers=gateway_auth)).json()["seq"] == 2
        for n in range(2):
            await seal_job_data(vault, gateway_auth, data={"n": n})
        assert (await vault.post(ANCHORS, headers=gateway_auth)).json()["seq"] == 4

    # Someone who knows the audit key rewrites the whole table consistently: record 3 now
    # says another subject did it, and every later hash and the head's MAC are recomputed.
    key = await stored_audit_key(url, root)
    await rewrite_chain(
        url, key, edit=lambda e: replace(e, subject="tenant:someone-else") if e.seq == 3 else e
    )
    async with running(create_app(without)) as vault:
        fooled = (await vault.get(VERIFY, headers=gateway_auth)).json()
        assert (fooled["valid"], fooled["anchors"]) == (True, 0)  # the chain check alone passes
    async with running(create_app(with_anchors)) as vault:
        caught = (await vault.get(VERIFY, headers=gateway_auth)).json()
        assert caught["valid"] is False
        assert (caught["problem"], caught["first_invalid"], caught["anchors"]) == (
            "anchor_mismatch",
            4,
            2,
        )

    # Truncated back to before the newest anchor (and made consistent): caught as well.
    await rewrite_chain(url, key, keep=3, edit=lambda e: e)
    async with running(create_app(without)) as vault:
        assert (await vault.get(VERIFY, headers=gateway_auth)).json()["valid"] is True
    async with running(create_app(with_anchors)) as vault:
        caught = (await vault.get(VERIFY, headers=gateway_auth)).json()
        assert (caught["valid"], caught["problem"]) == (False, "truncated_below_anchor")


async def test_damaged_anchors_and_an_unverified_head_are_not_trusted(
    databases, tmp_path, keys_dir, gateway_auth
):
    url = databases["vault"]
    root, path = RootKey(os.urandom(32)), tmp_path / "anchors.jsonl"
    settings = _settings(url, tmp_path, keys_dir, root, path)
    async with running(create_app(settings)) as vault:
        await seal_job_data(vault, gateway_auth, data=1)
        assert (await vault.post(ANCHORS, headers=gateway_auth)).status_code == 201
        with path.open("a") as handle:
            handle.write('{"seq": "1", "hash": "zz"}\n')
        verify = (await vault.get(VERIFY, headers=gateway_auth)).json()
        assert (verify["valid"], verify["problem"]) == (False, "anchor_unreadable")
        path.write_text("")
        # A head whose MAC does not verify is never anchored.
        await _sql(url, "UPDATE audit_chain_head SET mac = :mac", mac="0" * 64)
        refused = await vault.post(ANCHORS, headers=gateway_auth)
        assert refused.status_code == 503
        assert path.read_text() == ""
    with pytest.raises(AnchorStoreDamaged):
        Anchor.from_line('{"seq": 1, "hash": "' + "a" * 64 + '", "mac": "x", "at": "now"}')


async def test_the_head_is_anchored_periodically_when_it_moves(
    databases, tmp_path, keys_dir, gateway_auth
):
    root, path = RootKey(os.urandom(32)), tmp_path / "anchors.jsonl"
    settings = _settings(
        databases["vault"], tmp_path, keys_dir, root, path, audit_anchor_interval_seconds=0.05
    )
    store = FileAnchorStore(path)
    async with running(create_app(settings)) as vault:
        await asyncio.sleep(0.2)
        assert await store.read_all() == []  # an empty chain is not anchored
        for n in range(2):
            await seal_job_data(vault, gateway_auth, data=n)
        for _ in range(100):
            if await store.read_all():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # several more ticks: the unchanged head is not re-anchored
        anchors = await store.read_all()
    seqs = [a.seq for a in anchors]
    assert seqs[-1] == 2  # the newest head
    assert seqs == sorted(set(seqs))  # each head once (a tick may fall between the two seals)


async def test_anchoring_is_off_without_a_store(databases, tmp_path, keys_dir, gateway_auth):
    production = VaultSettings(
        environment="production",
        database_url=databases["vault"],
        data_dir=tmp_path,
        service_keys_dir=keys_dir,
        root_key=base64.b64encode(os.urandom(32)).decode(),
    )
    assert production.resolved_audit_anchor_file() is None
    async with running(create_app(production)) as vault:
        # Verification says so: a chain cut short with its head row would pass it.
        verify = (await vault.get(VERIFY, headers=gateway_auth)).json()
        assert (verify["valid"], verify["anchors"], verify["anchoring"]) == (True, 0, False)
    assert VaultSettings(data_dir=tmp_path).resolved_audit_anchor_file() == (
        tmp_path / "vault-audit-anchors.jsonl"
    )
    engine = create_engine(databases["vault"])
    try:
        maker = create_sessionmaker(engine)
        async with maker() as session:
            service = VaultService(
                session=session,
                sessionmaker=maker,
                root_key=RootKey(os.urandom(32)),
                identity=None,
                actor="operator",
                audit_lock_timeout_seconds=1.0,
                clock=utcnow,
            )
            with pytest.raises(AnchoringOff):
                await service.anchor_audit_head()
    finally:
        await engine.dispose()
