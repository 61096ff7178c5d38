"""The router's event feed: job events waiting for the gateway's webhooks (issue 6).

``job_event_outbox``: one row per event the job's client hears of (a change of status or
queue), written in the transaction that makes the change and deleted once the gateway holds
the event in its webhook outbox. So no transition is lost between the router's commit and the
gateway's, and transitions the router makes alone (a lease expiring, an escalation, an
unroutable job routed later) reach clients too. A table of its own, not a flag on
``job_events``: the timeline stays append-only (on PostgreSQL, flipping an indexed flag would
rewrite every event row once), and the outbox stays as small as the backlog.

Events from before the upgrade get no row: their webhooks were sent (or never would be).

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
    op.create_table(
        "job_event_outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("seq", sa.Integer(), nullable=False),
        # AUTOINCREMENT on SQLite: ids are never reused, so a late mark (a replica's, or a
        # retried one) cannot delete a newer event that took a freed id.
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("job_event_outbox")
