"""Fixtures of the router's tests: settings on the run's real database, an app, a gateway caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.router.app import create_app
from services.router.settings import RouterSettings
from shared.db import create_engine, create_sessionmaker
from shared.service_auth import ServiceIdentity
from tests.conftest import running


@pytest.fixture
def router_settings(databases: dict[str, str], keys_dir: Path, tmp_path: Path) -> RouterSettings:
    return RouterSettings(
        database_url=databases["router"],
        service_keys_dir=keys_dir,
        data_dir=tmp_path,
        environment="test",
        # Tests drive the sweeper themselves unless they say otherwise.
        sweep_interval_seconds=3600,
    )


@pytest.fixture
def gateway_identity(keys_dir: Path) -> ServiceIdentity:
    return ServiceIdentity.load(name="gateway", keys_dir=keys_dir, peers=())


@pytest.fixture
def gateway_headers(gateway_identity: ServiceIdentity) -> dict[str, str]:
    return {"Authorization": f"Bearer {gateway_identity.credential_for('router')}"}


@pytest.fixture
async def client(
    router_settings: RouterSettings, gateway_headers: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of a running router, calling as the gateway."""
    async with running(create_app(router_settings)) as http:
        http.headers.update(gateway_headers)
        yield http


@pytest.fixture
async def engine(databases: dict[str, str]) -> AsyncIterator[AsyncEngine]:
    """An engine on the router's database, disposed at the end (workflow tests that run
    several transactions, perhaps at once)."""
    pool = create_engine(databases["router"])
    try:
        yield pool
    finally:
        await pool.dispose()


@pytest.fixture
def maker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture
async def session(databases: dict[str, str]) -> AsyncIterator[AsyncSession]:
    """A session on the router's database (for repository tests); rolled back at the end."""
    engine = create_engine(databases["router"])
    maker = create_sessionmaker(engine)
    try:
        async with maker() as db_session:
            yield db_session
            await db_session.rollback()
    finally:
        await engine.dispose()
