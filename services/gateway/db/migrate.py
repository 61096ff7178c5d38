"""Apply the gateway's migrations (its own Alembic history and version table)."""

from __future__ import annotations

from pathlib import Path

from shared.db import upgrade_to_head

SCRIPT_LOCATION = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE = "alembic_version_gateway"


def upgrade(database_url: str) -> None:
    upgrade_to_head(
        script_location=SCRIPT_LOCATION, database_url=database_url, version_table=VERSION_TABLE
    )
