"""Readiness: the gateway can take jobs as long as its own database answers.

The router and the vault are reported, not required: with the router away the gateway still
accepts jobs (kept as ``pending`` in its outbox and forwarded later), and with the vault away
it still accepts jobs without confidential data. A readiness probe that failed with a peer
would take every gateway replica out of its load balancer during a router outage, turning a
degraded platform into an unreachable one.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import Request

from services.gateway.api.deps import get_router, get_vault
from services.gateway.api.routing import public_router
from services.gateway.api.schemas import Readiness
from services.gateway.clients.resilience import circuit_state
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
    """Readiness: 200 while the gateway's database answers, ``degraded`` when the router or the
    vault is not ready (down, or its database away: jobs are still accepted); 503 when its own
    database does not answer."""
    database, router_ok, vault_ok = await asyncio.gather(
        _database_answers(request),
        (await get_router(request)).ready(),
        (await get_vault(request)).ready(),
    )
    checks = {"database": database, "router": router_ok, "vault": vault_ok}
    if not database:
        raise ServiceUnavailable("Not ready: database unavailable.", checks=checks)
    return Readiness(
        status="ready" if all(checks.values()) else "degraded",
        checks=checks,
        circuits={
            "router": circuit_state(request.app.state.router_http, "router"),
            "vault": circuit_state(request.app.state.vault_http, "vault"),
        },
    )
