"""Mounting the console on the gateway: its routes under ``/console`` and its static files."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from services.gateway.console import auth, member, operator
from services.gateway.console.web import HERE


def install_console(app: FastAPI) -> None:
    """Add the console's pages and ``/console/static`` (no external CDN: all from the package)."""
    for module in (auth, member, operator):
        app.include_router(module.router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
