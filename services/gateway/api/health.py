"""Readiness: the database answers and both peers are alive."""

from __future__ import annotations

import asyncio
import logging

from fastapi import Request

from services.gateway.api.deps import get_router, get_vault
from services.gateway.api.routing import public_router
from services.gateway.api.schemas import Readiness
from services.gateway.db.repository import ping
from shared.errors import ServiceUnavailable

logger = logging.getLogger("taskroute.gateway.health")

router = public_router(prefix="", tag="health")


async def _database_answers(request: Request) -> bool:
    try:
        async with request.app.state.sessionmaker() as session:
            await ping(session)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported by type
        logger.warning("database not ready", extra={"error_type": type(exc).__name__})
        return False
    return True


@router.get("/readyz", response_model=Readiness)
async def readyz(request: Request) -> Readiness:
    """Readiness: 200 when the database, the router and the vault all answer; 503 otherwise."""
    database, router_ok, vault_ok = await asyncio.gather(
        _database_answers(request),
        (await get_router(request)).healthy(),
        (await get_vault(request)).healthy(),
    )
    checks = {"database": database, "router": router_ok, "vault": vault_ok}
    if not all(checks.values()):
        failing = ", ".join(name for name, ok in checks.items() if not ok)
        raise ServiceUnavailable(f"Not ready: {failing} unavailable.", checks=checks)
    return Readiness(status="ready", checks=checks)
