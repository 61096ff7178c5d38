"""The router's event feed: job events waiting for the gateway's webhooks (issue 6).

- ``job_events.unpublished``: true for an event the job's client hears of (a change of status
  or queue), until the gateway has it in its webhook outbox. Written in the transaction that
  makes the change, so no transition is lost between the router's commit and the gateway's,
  and transitions the router makes alone (a lease expiring, an escalation, an unroutable job
  routed later) reach clients too.
- ``ix_job_events_unpublished``: a partial index over those events only.

Events from before the upgrade stay published: their webhooks were sent (or never would be).

Revision ID: 0010_event_feed
Revises: 0009_member_key_endorsements
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_event_feed"
down_revision: str | None = "0009_member_key_endorsements"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job_events") as batch:
        batch.add_column(
            sa.Column("unpublished", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_index(
        "ix_job_events_unpublished",
        "job_events",
        ["id"],
        sqlite_where=sa.text("unpublished = 1"),
        postgresql_where=sa.text("unpublished"),
    )


def downgrade() -> None:
    op.drop_index("ix_job_events_unpublished", table_name="job_events")
    with op.batch_alter_table("job_events") as batch:
        batch.drop_column("unpublished")
