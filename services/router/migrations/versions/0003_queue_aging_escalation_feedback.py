"""Queue aging, escalation of unclaimed jobs, client feedback moving team quality (issue 4).

- ``jobs.queue_order_at``: the virtual enqueue time a team's queue is ordered by (created_at
  minus the priority's head start); back-filled for every existing job with the default head
  starts (high 4 h, normal 1 h, low 0), and the team-queue index moved onto it.
- ``jobs.escalate_at``: when a queued job passes to the next team unless claimed; back-filled
  for queued jobs from their last change plus the default windows (high 30 min, normal 2 h,
  low 4 h), so jobs already waiting too long are escalated by the first sweep.
- ``jobs.passed_team_ids``: the teams a job was escalated away from.
- ``teams.quality_rating_count`` and the ``job_feedback`` table.

The defaults are written out here, not imported: a migration must do the same thing forever.

Revision ID: 0003_queue_aging
Revises: 0002_member_keys
Create Date: 2026-11-27
"""

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0003_queue_aging"
down_revision: str | None = "0002_member_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# priority_rank (0 high, 1 normal, 2 low) -> default head start and escalation window.
_HEAD_START = {0: timedelta(hours=4), 1: timedelta(hours=1), 2: timedelta(0)}
_ESCALATION = {0: timedelta(minutes=30), 1: timedelta(hours=2), 2: timedelta(hours=4)}
# Rows back-filled per executemany round trip.
_CHUNK = 1000

_jobs = sa.table(
    "jobs",
    sa.column("id", sa.String(36)),
    sa.column("status", sa.String(16)),
    sa.column("priority_rank", sa.Integer()),
    sa.column("created_at", shared.db.UTCDateTime()),
    sa.column("updated_at", shared.db.UTCDateTime()),
    sa.column("queue_order_at", shared.db.UTCDateTime()),
    sa.column("escalate_at", shared.db.UTCDateTime()),
)


def _backfill() -> None:
    """Portable (SQLite stores datetimes as text, PostgreSQL as timestamptz): done in Python."""
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(
            _jobs.c.id,
            _jobs.c.status,
            _jobs.c.priority_rank,
            _jobs.c.created_at,
            _jobs.c.updated_at,
        )
    ).all()
    statement = (
        sa.update(_jobs)
        .where(_jobs.c.id == sa.bindparam("job_id"))
        .values(
            queue_order_at=sa.bindparam("order_at", type_=shared.db.UTCDateTime()),
            escalate_at=sa.bindparam("escalation_at", type_=shared.db.UTCDateTime()),
        )
    )
    values = [
        {
            "job_id": job_id,
            "order_at": created_at - _HEAD_START.get(rank, timedelta(0)),
            "escalation_at": (
                updated_at + _ESCALATION.get(rank, _ESCALATION[1]) if status == "queued" else None
            ),
        }
        for job_id, status, rank, created_at, updated_at in rows
    ]
    for start in range(0, len(values), _CHUNK):
        connection.execute(statement, values[start : start + _CHUNK])


def upgrade() -> None:
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("quality_rating_count", sa.Integer(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("queue_order_at", shared.db.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("escalate_at", shared.db.UTCDateTime(), nullable=True))
        batch_op.add_column(
            sa.Column("passed_team_ids", sa.JSON(), server_default="[]", nullable=False)
        )
    _backfill()
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column(
            "queue_order_at", existing_type=shared.db.UTCDateTime(), nullable=False
        )
        batch_op.drop_index("ix_jobs_team_queue")
        batch_op.create_index(
            "ix_jobs_team_queue", ["team_id", "status", "queue_order_at", "id"], unique=False
        )
        batch_op.create_index("ix_jobs_status_escalate", ["status", "escalate_at"], unique=False)

    op.create_table(
        "job_feedback",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("team_id", sa.String(length=36), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("quality_before", sa.Float(), nullable=True),
        sa.Column("quality_after", sa.Float(), nullable=True),
        sa.Column("created_at", shared.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_feedback_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_feedback")),
        sa.UniqueConstraint("job_id", name=op.f("uq_job_feedback_job_id")),
    )
    with op.batch_alter_table("job_feedback", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_feedback_team_id"), ["team_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("job_feedback", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_feedback_team_id"))
    op.drop_table("job_feedback")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_status_escalate")
        batch_op.drop_index("ix_jobs_team_queue")
        batch_op.create_index(
            "ix_jobs_team_queue",
            ["team_id", "status", "priority_rank", "created_at", "id"],
            unique=False,
        )
        batch_op.drop_column("passed_team_ids")
        batch_op.drop_column("escalate_at")
        batch_op.drop_column("queue_order_at")
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.drop_column("quality_rating_count")
