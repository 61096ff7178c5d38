"""The request that made an event, for keyed retries (issue 6).

- ``job_events.request_id``: the id the gateway reserved with a client's or member's
  Idempotency-Key, given with a cancel, claim, release, reject or complete; NULL otherwise. A
  retry under the same key asks for the job's event with that id, so it knows exactly whether
  its earlier attempt was applied (a lost answer), rather than guessing from actor and time.

Existing events need no back-fill: their requests are over.

Revision ID: 0006_event_request_ids
Revises: 0005_team_loads
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_event_request_ids"
down_revision: str | None = "0005_team_loads"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job_events") as batch:
        batch.add_column(sa.Column("request_id", sa.String(36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_events") as batch:
        batch.drop_column("request_id")
