"""The vault's app factory and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.vault.anchors import AuditAnchorStore, FileAnchorStore
from services.vault.api import audit, health, records, sealing, tenant_keys
from services.vault.domain.errors import AuditUnavailable
from services.vault.keys import load_root_key_ring, root_key_provider
from services.vault.metrics import set_sealed
from services.vault.service import AuditKeyCache, VaultService
from services.vault.settings import VaultSettings
from shared.app import create_service_app
from shared.db import create_engine, create_sessionmaker
from shared.errors import TaskrouteError, database_error, error_response
from shared.failpoints import failpoint
from shared.member_endorsements import load_authority_public_key
from shared.service_auth import ServiceIdentity

logger = logging.getLogger("taskroute.vault")

# The gateway calls the vault; the router signs the grants the vault checks.
PEERS = ("gateway", "router")


def anchor_store(settings: VaultSettings) -> AuditAnchorStore | None:
    """The configured anchor store (the local file provider), or None when anchoring is off."""
    path = settings.resolved_audit_anchor_file()
    return FileAnchorStore(path) if path is not None else None


def create_vault_engine(settings: VaultSettings) -> AsyncEngine:
    """The vault's engine. On SQLite the audit chain's lock is the database's write lock, and
    every vault write transaction ends with an audit append, so the busy timeout is the audit
    lock timeout: a writer waiting on a locked database gives up (503) instead of hanging 30 s.
    """
    return create_engine(
        settings.resolved_database_url(),
        sqlite_busy_timeout_seconds=settings.audit_lock_timeout_seconds,
    )


def _database_locked(exc: OperationalError) -> bool:
    text = str(exc.orig).lower() if exc.orig is not None else ""
    return "database is locked" in text or "database table is locked" in text


async def _locked_database(request: Request, exc: Exception) -> JSONResponse:
    """SQLite's write lock not had within the audit lock timeout: refused, nothing stored."""
    assert isinstance(exc, OperationalError)
    if not _database_locked(exc):
        return await database_error(request, exc)  # unavailable (503) or a bug (500)
    logger.warning("vault database locked past the audit lock timeout; refused")
    return error_response(AuditUnavailable("The audit log is busy; nothing was done. Retry."))


async def _anchor_periodically(app: FastAPI, settings: VaultSettings) -> None:
    """Anchor the audit head every interval, when it moved (never per operation)."""
    anchored = 0
    while True:
        await asyncio.sleep(settings.audit_anchor_interval_seconds)
        state = app.state
        try:
            async with state.sessionmaker() as session:
                anchor = await VaultService(
                    session=session,
                    sessionmaker=state.sessionmaker,
                    root_key=state.root_key,
                    identity=state.identity,
                    actor="vault",
                    audit_lock_timeout_seconds=settings.audit_lock_timeout_seconds,
                    audit_keys=state.audit_keys,
                    anchors=state.anchors,
                ).anchor_audit_head(after_seq=anchored)
            if anchor is not None:
                anchored = anchor.seq
        except (TaskrouteError, SQLAlchemyError, OSError) as exc:
            # Logged by the service; the next tick tries again.
            logger.warning(
                "periodic audit anchoring failed", extra={"error_type": type(exc).__name__}
            )


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
        root_key = load_root_key_ring(provider)
        engine = create_vault_engine(settings)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.identity = ServiceIdentity.load(
            name="vault", keys_dir=settings.keys_dir(), peers=PEERS
        )
        app.state.root_key = root_key
        app.state.audit_keys = AuditKeyCache()
        app.state.anchors = anchor_store(settings)
        app.state.member_key_authority = (
            None
            if settings.member_key_authority_file is None
            else load_authority_public_key(settings.member_key_authority_file)
        )
        set_sealed(root_key is None)
        if root_key is None:
            logger.warning("vault is sealed: no root key", extra={"source": provider.source})
        else:
            logger.info(
                "vault unsealed",
                extra={
                    "source": provider.source,
                    "root_key_id": root_key.current.key_id,
                    "previous_root_key_ids": list(root_key.key_ids[1:]),
                },
            )
        if app.state.anchors is None:
            logger.warning("audit anchoring is off: no anchor store configured")
        anchoring: asyncio.Task[None] | None = None
        if (
            root_key is not None
            and app.state.anchors is not None
            and settings.audit_anchor_interval_seconds > 0
        ):
            anchoring = asyncio.create_task(_anchor_periodically(app, settings))
        try:
            yield
        finally:
            if anchoring is not None:
                anchoring.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await anchoring
            await engine.dispose()

    app = create_service_app(
        title="Taskroute vault",
        description="Envelope encryption of confidential job data, and its audit log.",
        lifespan=lifespan,
        public_docs=not settings.is_production(),
        service="vault",
    )
    app.add_exception_handler(OperationalError, _locked_database)
    app.include_router(health.router)
    app.include_router(records.router)
    app.include_router(audit.router)
    app.include_router(sealing.router)
    app.include_router(tenant_keys.router)
    return app
