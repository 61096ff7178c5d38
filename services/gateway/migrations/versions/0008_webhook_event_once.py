"""One delivery of an event per endpoint (issue 6: the router's event feed).

``uq_webhook_deliveries_endpoint_event``: the router now publishes every change a client hears
of, and the gateway queues its webhooks from that feed as well as from the request that made
the change; the unique pair makes the second queuing a no-op, so an endpoint gets each event
once however many replicas, retries or crashes came in between.

A request run twice (an idempotent retry) could queue the same event for an endpoint twice
before this: those extra copies are deleted first, keeping a delivered one, else one still
being tried, else the oldest (a receiver deduplicating on ``Taskroute-Event-Id`` saw one
event either way). On PostgreSQL the unique index is built with a lock that holds back new
deliveries (and so submits) while it builds: seconds for a million rows.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Of several copies, the one kept: a delivered one, else one still being tried, else the
# oldest (created_at, then id, break the ties).
_RANK = "CASE {t}.status WHEN 'succeeded' THEN 0 WHEN 'pending' THEN 1 ELSE 2 END"


def upgrade() -> None:
    # A plain index on the pair first: without it SQLite answers the EXISTS below by scanning
    # all of an endpoint's deliveries for each of them (minutes at 100k rows).
    op.create_index(
        "ix_webhook_deliveries_endpoint_event_tmp",
        "webhook_deliveries",
        ["endpoint_id", "event_id"],
    )
    op.execute(
        sa.text(
            "DELETE FROM webhook_deliveries WHERE EXISTS ("
            " SELECT 1 FROM webhook_deliveries AS kept"
            " WHERE kept.endpoint_id = webhook_deliveries.endpoint_id"
            " AND kept.event_id = webhook_deliveries.event_id"
            f" AND ({_RANK.format(t='kept')}, kept.created_at, kept.id)"
            f" < ({_RANK.format(t='webhook_deliveries')}, webhook_deliveries.created_at,"
            " webhook_deliveries.id))"
        )
    )
    op.drop_index("ix_webhook_deliveries_endpoint_event_tmp", table_name="webhook_deliveries")
    op.create_index(
        "uq_webhook_deliveries_endpoint_event",
        "webhook_deliveries",
        ["endpoint_id", "event_id"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_webhook_deliveries_endpoint_event", table_name="webhook_deliveries")
