"""Alembic environment of the vault: its own metadata and version table."""

from services.vault.db.models import Base
from shared.migrations import run_migrations

run_migrations(Base.metadata)
