"""A result record's lease, so that a later lease can seal the result again (issue 6).

- ``records.attempt`` and ``sealed_records.attempt``: the router's seal grant names the lease
  it was issued in (the job's event sequence then). A result was sealed once per job, so a
  completion lost after its seal left a result that no later holder could replace (409
  ``record-exists`` for good). A later lease now seals it again in place (same reference),
  unless the router holds it as the job's result; within one lease it stays sealed once.

Existing rows keep NULL: sealed in no recorded lease, they are never resealed (as before).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("records", "sealed_records"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("attempt", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    for table in ("records", "sealed_records"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("attempt")
