"""Alembic environment of the gateway's database."""

from services.gateway.db.models import Base
from shared.migrations import run_migrations

run_migrations(Base.metadata)
