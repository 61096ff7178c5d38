"""One delivery of an event per endpoint (issue 6: the router's event feed).

``uq_webhook_deliveries_endpoint_event``: the router now publishes every change a client hears
of, and the gateway queues its webhooks from that feed as well as from the request that made
the change; the unique pair makes the second queuing a no-op, so an endpoint gets each event
once however many replicas, retries or crashes came in between.

A request run twice (an idempotent retry) could queue the same event for an endpoint twice
before this: those extra copies are deleted first, keeping the oldest row of each pair (a
receiver deduplicating on ``Taskroute-Event-Id`` saw one event either way).

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


def upgrade() -> None:
    op.execute(
        sa.text(
            "DELETE FROM webhook_deliveries WHERE EXISTS ("
            " SELECT 1 FROM webhook_deliveries AS first"
            " WHERE first.endpoint_id = webhook_deliveries.endpoint_id"
            " AND first.event_id = webhook_deliveries.event_id"
            " AND (first.created_at, first.id)"
            " < (webhook_deliveries.created_at, webhook_deliveries.id))"
        )
    )
    op.create_index(
        "uq_webhook_deliveries_endpoint_event",
        "webhook_deliveries",
        ["endpoint_id", "event_id"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_webhook_deliveries_endpoint_event", table_name="webhook_deliveries")
