"""Tenant policies pushed to the router: the version of each tenant the router holds.

``tenants.policy_pushed_version``: the tenant version whose policy the router has confirmed
(services/gateway/tenant_policies.py). Existing tenants start at 0, so the gateway pushes each
one's policy once after the upgrade, and the router holds the jobs it already has to it (jobs
submitted before an earlier policy change were never tightened).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(
            sa.Column("policy_pushed_version", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("policy_pushed_version")
