"""Fixtures of the vault's tests: settings on the run's real database, a running app, identities."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.vault.app import create_app
from services.vault.settings import VaultSettings
from shared.service_auth import ServiceIdentity
from tests.conftest import running


@pytest.fixture
def vault_settings(databases: dict[str, str], tmp_path: Path, keys_dir: Path) -> VaultSettings:
    return VaultSettings(
        database_url=databases["vault"], data_dir=tmp_path, service_keys_dir=keys_dir
    )


@pytest.fixture
async def vault(vault_settings: VaultSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(vault_settings)) as client:
        yield client


@pytest.fixture(scope="session")
def gateway_identity(keys_dir: Path) -> ServiceIdentity:
    return ServiceIdentity.load(name="gateway", keys_dir=keys_dir, peers=())


@pytest.fixture(scope="session")
def router_identity(keys_dir: Path) -> ServiceIdentity:
    return ServiceIdentity.load(name="router", keys_dir=keys_dir, peers=())


@pytest.fixture
def gateway_auth(gateway_identity: ServiceIdentity) -> dict[str, str]:
    return {"Authorization": f"Bearer {gateway_identity.credential_for('vault')}"}
