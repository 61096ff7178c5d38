"""Alembic environment of the router's database."""

from services.router.db.models import Base
from shared.migrations import run_migrations

run_migrations(Base.metadata)
