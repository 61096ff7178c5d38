"""Readiness: the router is ready when its database answers."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from shared.errors import ServiceUnavailable, problem_response

logger = logging.getLogger("taskroute.router.health")

router = APIRouter(tags=["health"])


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    """200 when the database answers a trivial query, 503 otherwise."""
    try:
        async with request.app.state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as exc:
        logger.warning("database not ready", extra={"error_type": type(exc).__name__})
        return problem_response(
            status=503,
            title="Service unavailable",
            detail="The router's database does not answer.",
            problem="unavailable",
            headers=ServiceUnavailable().headers(),
        )
    return JSONResponse({"status": "ready"})
