"""The submission outbox: jobs between the gateway and the router.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_submissions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("submission", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_submissions")),
    )
    op.create_index(
        op.f("ix_job_submissions_tenant_id"), "job_submissions", ["tenant_id"], unique=False
    )
    op.create_index(
        op.f("ix_job_submissions_next_attempt_at"),
        "job_submissions",
        ["next_attempt_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_job_submissions_next_attempt_at"), table_name="job_submissions")
    op.drop_index(op.f("ix_job_submissions_tenant_id"), table_name="job_submissions")
    op.drop_table("job_submissions")
