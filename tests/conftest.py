"""Fixtures every test folder shares: clean environment, service keys, real databases.

The suite runs on SQLite files by default. With ``TASKROUTE_TEST_POSTGRES_URL`` set (an admin
URL such as ``postgresql://postgres@127.0.0.1:5432/test``) every database test runs on both
backends; each run creates its own PostgreSQL databases and drops them at the end. An
unreachable server is an error, never a skip.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from shared.service_auth import ensure_service_keys

if TYPE_CHECKING:
    from tests.e2e.conftest import PlatformPool

SERVICES = ("gateway", "router", "vault")
POSTGRES_ADMIN_URL = os.environ.get("TASKROUTE_TEST_POSTGRES_URL", "")
BACKENDS = ["sqlite"] + (["postgres"] if POSTGRES_ADMIN_URL else [])
ADMIN_CONNECT_ATTEMPTS = 30


@pytest.fixture(autouse=True)
def _clean_taskroute_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TASKROUTE_* variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("TASKROUTE_") and not name.startswith("TASKROUTE_TEST_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("service-keys")
    ensure_service_keys(path)
    return path


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _service_pg_url(admin_url: str, database: str) -> str:
    base = admin_url.rsplit("/", 1)[0]
    return base.replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{database}"


async def _pg_admin(statement: str, admin_url: str = POSTGRES_ADMIN_URL) -> None:
    # A server busy with other tests' connections (a race test holds fifty) frees one soon.
    for attempt in range(ADMIN_CONNECT_ATTEMPTS):
        try:
            connection = await asyncpg.connect(_asyncpg_dsn(admin_url), timeout=10)
            break
        except asyncpg.TooManyConnectionsError:
            if attempt == ADMIN_CONNECT_ATTEMPTS - 1:
                raise
            await asyncio.sleep(1)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@asynccontextmanager
async def scratch_database(backend: str, tmp_path: Path, name: str) -> AsyncIterator[str]:
    """The URL of an empty database of its own (a SQLite file, or a PostgreSQL database
    dropped afterwards): for a migration test that starts from an older revision."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}"
        return
    database = f"tr_test_{name}_{uuid.uuid4().hex[:10]}"
    await _pg_admin(f'CREATE DATABASE "{database}"')
    try:
        yield _service_pg_url(POSTGRES_ADMIN_URL, database)
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def migrate(service: str, database_url: str) -> None:
    module = importlib.import_module(f"services.{service}.db.migrate")
    module.upgrade(database_url)


@pytest.fixture(scope="session")
def platform_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformPool]:
    """The real platforms of this session (per xdist worker), see tests/e2e/conftest.py."""
    from tests.e2e.conftest import PlatformPool  # noqa: PLC0415 - that module imports this one

    with PlatformPool(tmp_path_factory) as pool:
        yield pool


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextmanager
def provisioned_databases(
    backend: str,
    folder: Path,
    *,
    migrated: bool = True,
    admin_url: str = POSTGRES_ADMIN_URL,
    admin_urls: Mapping[str, str] | None = None,
) -> Iterator[dict[str, str]]:
    """One database per service on ``backend``, created for this run and dropped after it;
    on the server of ``admin_urls[service]`` where given, else of ``admin_url``."""
    run = uuid.uuid4().hex[:10]
    urls: dict[str, str] = {}
    created: list[tuple[str, str]] = []
    try:
        for service in SERVICES:
            if backend == "sqlite":
                urls[service] = f"sqlite+aiosqlite:///{folder / f'{service}.db'}"
            else:
                name = f"tr_test_{run}_{service}"
                server = (admin_urls or {}).get(service, admin_url)
                asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"', server))
                created.append((name, server))
                urls[service] = _service_pg_url(server, name)
            if migrated:
                migrate(service, urls[service])
        yield urls
    finally:
        for name, server in created:
            asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', server))


@pytest.fixture(scope="session")
def database_urls(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """One migrated database per service for this backend, created for this run."""
    with provisioned_databases(backend, tmp_path_factory.mktemp("databases")) as urls:
        yield urls


async def clear_tables(service: str, url: str) -> None:
    models = importlib.import_module(f"services.{service}.db.models")
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            for table in reversed(models.Base.metadata.sorted_tables):
                await connection.execute(text(f'DELETE FROM "{table.name}"'))
    finally:
        await engine.dispose()


@pytest.fixture
async def databases(database_urls: dict[str, str]) -> dict[str, str]:
    """The run's databases, emptied before the test (schemas stay migrated)."""
    for service, url in database_urls.items():
        await clear_tables(service, url)
    return database_urls


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run an app's lifespan and give an in-process HTTP client to it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``postgres_only`` exist only in their PostgreSQL variant (never a skip)."""
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_sqlite = callspec is not None and callspec.params.get("backend") == "sqlite"
        if on_sqlite and item.get_closest_marker("postgres_only"):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


# --- pytest-xdist: which worker runs what ------------------------------------------------------
# A session's platforms (tests/e2e/conftest.py, PlatformPool) live in one worker, so the modules
# that share them must run on the same worker: with ``--dist loadscope`` each group below is one
# unit of work instead of one per module.
PLATFORM_GROUPS: dict[str, tuple[str, ...]] = {
    # PlatformPool.shared: modules whose tests make their own tenants and teams.
    "shared-platform": (
        "tests/console/test_browser.py",
        "tests/e2e/test_observability.py",
        "tests/e2e/test_slice.py",
        "tests/sdk/test_cli.py",
        "tests/sdk/test_client.py",
    ),
    # PlatformPool.fresh, then .spare: the supervisor's test stops the demo's platform.
    "spare-platform": ("tests/e2e/test_demo.py", "tests/e2e/test_supervisor.py"),
}
# Units that start real platforms (tens of seconds each) go out first, longest first, so that
# none of them is left to run alone at the end; the rest follow, largest first (as xdist's own
# loadscope ordering).
FIRST_UNITS: tuple[str, ...] = (
    "tests/e2e/test_schemathesis.py",  # one test: a platform, then minutes of fuzzing
    "shared-platform",
    "tests/e2e/test_faults.py",
    "spare-platform",
    "tests/router/test_races.py",  # no platform, but minutes of concurrent claims
    "tests/sdk/test_readme.py",
    "tests/sdk/test_retries.py",
)
_GROUP_OF = {module: group for group, modules in PLATFORM_GROUPS.items() for module in modules}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` with the platform groups above as units, platform units first."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import (  # type: ignore[import-untyped]  # noqa: PLC0415
        LoadScopeScheduling,
    )

    class PlatformAwareScheduling(LoadScopeScheduling):  # type: ignore[misc]
        ordered = False

        def _split_scope(self, nodeid: str) -> str:
            scope = str(super()._split_scope(nodeid))
            return _GROUP_OF.get(scope.split("::", 1)[0], scope)

        def _assign_work_unit(self, node: Any) -> None:
            if not self.ordered:  # the first assignment: the queue is complete
                self.ordered = True
                rank = {unit: index for index, unit in enumerate(FIRST_UNITS)}
                units = sorted(self.workqueue.items(), key=lambda u: rank.get(u[0], len(rank)))
                self.workqueue.clear()
                self.workqueue.update(units)
            super()._assign_work_unit(node)

    return PlatformAwareScheduling(config, log)
