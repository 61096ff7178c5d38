"""Fixtures of the gateway's tests: database sessions, the gateway alone, the whole platform."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from shared.db import create_engine, create_sessionmaker
from shared.settings import Environment
from tests.conftest import running


@pytest.fixture
async def maker(databases: dict[str, str]) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(databases["gateway"])
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def session(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with maker() as session:
        yield session
        await session.rollback()


# --- the gateway app, alone or wired to the real router and vault ----------------------------

# A bootstrap operator key as a deployer would set it (any string of 32+ characters).
OPERATOR_KEY = "tr_operator_test_" + "K7b2" * 10


def gateway_settings(databases: dict[str, str], keys_dir: Path, data_dir: Path) -> GatewaySettings:
    return GatewaySettings(
        database_url=databases["gateway"],
        data_dir=data_dir,
        service_keys_dir=keys_dir,
        bootstrap_operator_key=OPERATOR_KEY,
        router_url="http://router",
        vault_url="http://vault",
    )


def _unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("peer not running in this test", request=request)


@dataclass
class Platform:
    """The gateway's HTTP client, plus what tests need to look behind it."""

    app: FastAPI
    client: httpx.AsyncClient
    databases: dict[str, str]
    # Headers carrying the bootstrap operator key.
    operator: dict[str, str]
    # The router's app, when it runs in process (platform_in_process): its state and sweeper.
    router_app: FastAPI | None = None


@pytest.fixture
async def gateway_alone(databases, keys_dir, tmp_path) -> AsyncIterator[Platform]:
    """The gateway with unreachable peers: for what it decides on its own (auth, tenants, input)."""
    transports = {
        "router": httpx.MockTransport(_unreachable),
        "vault": httpx.MockTransport(_unreachable),
    }
    app = create_app(gateway_settings(databases, keys_dir, tmp_path), transports=transports)
    async with running(app) as client:
        yield Platform(app, client, databases, {"Authorization": f"Bearer {OPERATOR_KEY}"})


@pytest.fixture
async def production_gateway(databases, keys_dir, tmp_path) -> AsyncIterator[Platform]:
    """The gateway alone with ``TASKROUTE_ENVIRONMENT=production`` (and the pepper it then
    requires), served over plain http as behind a proxy that terminates TLS; no peers."""
    settings = gateway_settings(databases, keys_dir, tmp_path).model_copy(
        update={"environment": Environment.PRODUCTION, "api_key_pepper": SecretStr("p" * 32)}
    )
    app = create_app(settings)
    async with running(app) as client:
        yield Platform(app, client, databases, {"Authorization": f"Bearer {OPERATOR_KEY}"})


@asynccontextmanager
async def platform_in_process(
    databases: dict[str, str],
    keys_dir: Path,
    tmp_path: Path,
    gateway: dict[str, Any] | None = None,
    **vault_settings: Any,
) -> AsyncIterator[Platform]:
    """The gateway wired in-process to the real router and vault apps, lifespans running;
    ``gateway`` changes the gateway's settings, ``vault_settings`` add to the vault's."""
    from services.router.app import create_app as create_router_app
    from services.router.settings import RouterSettings
    from services.vault.app import create_app as create_vault_app
    from services.vault.settings import VaultSettings

    router_app = create_router_app(
        RouterSettings(
            database_url=databases["router"], data_dir=tmp_path, service_keys_dir=keys_dir
        )
    )
    vault_app = create_vault_app(
        VaultSettings(
            database_url=databases["vault"],
            data_dir=tmp_path,
            service_keys_dir=keys_dir,
            **vault_settings,
        )
    )
    async with running(router_app), running(vault_app):
        transports = {
            "router": httpx.ASGITransport(app=router_app),
            "vault": httpx.ASGITransport(app=vault_app),
        }
        settings = gateway_settings(databases, keys_dir, tmp_path)
        if gateway:
            settings = GatewaySettings.model_validate({**settings.model_dump(), **gateway})
        app = create_app(settings, transports=transports)
        async with running(app) as client:
            yield Platform(
                app,
                client,
                databases,
                {"Authorization": f"Bearer {OPERATOR_KEY}"},
                router_app,
            )


@pytest.fixture
async def platform(databases, keys_dir, tmp_path) -> AsyncIterator[Platform]:
    """The gateway wired in-process to the real router and vault apps, lifespans running."""
    async with platform_in_process(databases, keys_dir, tmp_path) as running_platform:
        yield running_platform
