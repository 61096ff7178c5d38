"""Four-eyes review before ``completed`` (issue 4 item 5).

- ``jobs.review_team_id``: while a job is ``in_review``, the team whose members review it (the
  tenant policy's reviewer team, or the job's own team: then any *other* member reviews);
- ``jobs.review_submitted_by`` / ``jobs.review_submitted_at``: the member whose completion
  awaits review (never allowed to approve it) and when it was submitted;
- ``ix_jobs_review_queue``: a reviewer team's queue, oldest submission first.

Existing jobs need no back-fill: none is in review.

Revision ID: 0004_review
Revises: 0003_queue_aging
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0004_review"
down_revision: str | None = "0003_queue_aging"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("review_team_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("review_submitted_by", sa.String(36), nullable=True))
        batch.add_column(sa.Column("review_submitted_at", shared.db.UTCDateTime(), nullable=True))
    op.create_index(
        "ix_jobs_review_queue",
        "jobs",
        ["review_team_id", "status", "review_submitted_at", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_review_queue", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("review_submitted_at")
        batch.drop_column("review_submitted_by")
        batch.drop_column("review_team_id")
