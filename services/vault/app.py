"""The vault's app factory and lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from services.vault.api import audit, health, records, sealing, tenant_keys
from services.vault.keys import root_key_provider
from services.vault.metrics import set_sealed
from services.vault.settings import VaultSettings
from shared.app import create_service_app
from shared.db import create_engine, create_sessionmaker
from shared.failpoints import failpoint
from shared.service_auth import ServiceIdentity

logger = logging.getLogger("taskroute.vault")

# The gateway calls the vault; the router signs the grants the vault checks.
PEERS = ("gateway", "router")


def create_app(
    settings: VaultSettings | None = None,
    *,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
) -> FastAPI:
    """Build the vault app. ``transports`` is accepted for the common factory signature: the
    vault calls no other service, so it has no client to give one to."""
    del transports
    settings = settings or VaultSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        failpoint("vault.startup")  # a vault that cannot come up (fault-injection tests)
        provider = root_key_provider(settings)
        root_key = provider.load()
        engine = create_engine(settings.resolved_database_url())
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.identity = ServiceIdentity.load(
            name="vault", keys_dir=settings.keys_dir(), peers=PEERS
        )
        app.state.root_key = root_key
        set_sealed(root_key is None)
        if root_key is None:
            logger.warning("vault is sealed: no root key", extra={"source": provider.source})
        else:
            logger.info(
                "vault unsealed", extra={"source": provider.source, "root_key_id": root_key.key_id}
            )
        try:
            yield
        finally:
            await engine.dispose()

    app = create_service_app(
        title="Taskroute vault",
        description="Envelope encryption of confidential job data, and its audit log.",
        lifespan=lifespan,
        public_docs=not settings.is_production(),
        service="vault",
    )
    app.include_router(health.router)
    app.include_router(records.router)
    app.include_router(audit.router)
    app.include_router(sealing.router)
    app.include_router(tenant_keys.router)
    return app
