"""Withdrawn submissions: a fence against a stalled submit the gateway rolled back (issue 6).

- ``job_withdrawals``: one row per outbox row the gateway's sweeper rolled back, keyed by the
  job id and that row's token. The router refuses a submit carrying a withdrawn token, so a
  request that stalled past the grace period cannot store a job whose sealed data the vault has
  discarded. Rows arise only from roll-backs (rare) and hold no confidential data.

Revision ID: 0007_job_withdrawals
Revises: 0006_event_request_ids
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_job_withdrawals"
down_revision: str | None = "0006_event_request_ids"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_withdrawals",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("outbox_token", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_withdrawals")
