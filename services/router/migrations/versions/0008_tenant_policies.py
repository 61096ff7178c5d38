"""Tenant policies: the tenant's data policy as the gateway last pushed it.

- ``tenant_policies``: one row per tenant, its policy and the gateway's version of it. A
  change tightens the tenant's active jobs (and moves those whose team no longer meets it),
  and a submission that left the gateway before the change is tightened on arrival. Rows come
  from the gateway (its sweeper pushes every tenant's policy after this upgrade) and hold no
  confidential data.
- ``jobs.policy_version``: the tenant policy version a job's policy was made under, so only a
  newer change tightens it (a job submitted under a looser policy the router has not been told
  of yet is not narrowed by the older one it holds). NULL for jobs from before.

Revision ID: 0008_tenant_policies
Revises: 0007_job_withdrawals
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_tenant_policies"
down_revision: str | None = "0007_job_withdrawals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_policies",
        sa.Column("tenant_id", sa.String(36), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("policy_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("policy_version")
    op.drop_table("tenant_policies")
