"""Readiness: the database answers and the root key is loaded."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from shared.errors import ServiceUnavailable

router = APIRouter(tags=["health"])
logger = logging.getLogger("taskroute.vault.health")

# A readiness probe must answer well inside a load balancer's probe timeout (often 1-3 s).
READY_TIMEOUT_SECONDS = 2.0


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    """Ready when the database answers and the vault is unsealed; 503 otherwise."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            async with request.app.state.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        logger.warning("database not ready", extra={"error_type": type(exc).__name__})
        return JSONResponse(
            {"status": "unavailable", "database": "unreachable"},
            status_code=503,
            headers=ServiceUnavailable().headers(),
        )
    if request.app.state.root_key is None:
        return JSONResponse(
            {"status": "sealed"}, status_code=503, headers=ServiceUnavailable().headers()
        )
    return JSONResponse({"status": "ready"})
