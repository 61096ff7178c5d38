"""One confidential result per lease, not per job.

Records and client-sealed envelopes gain ``lease`` (shared.result_refs: the holder's lease a
result was sealed under; '' for job data and for results sealed before this release), and their
unique constraints include it. A job sent back, or taken over after an expired lease, can then
carry a new confidential result.

The downgrade fails while a job has results under two leases: the old constraint cannot hold
them (delete all but the one its job references first).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _lease() -> sa.Column[str]:
    return sa.Column("lease", sa.String(length=40), nullable=False, server_default="")


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.add_column(_lease())
        batch.drop_constraint("uq_records_tenant_id", type_="unique")
        batch.create_unique_constraint(
            "uq_records_tenant_id", ["tenant_id", "job_id", "purpose", "lease"]
        )
    with op.batch_alter_table("sealed_records") as batch:
        batch.add_column(_lease())
        batch.drop_constraint("uq_sealed_records_tenant_id", type_="unique")
        batch.drop_constraint("uq_sealed_records_tenant_id_job_ref", type_="unique")
        batch.create_unique_constraint(
            "uq_sealed_records_tenant_id", ["tenant_id", "job_id", "purpose", "lease"]
        )
        batch.create_unique_constraint(
            "uq_sealed_records_tenant_id_job_ref", ["tenant_id", "job_ref", "purpose", "lease"]
        )


def downgrade() -> None:
    with op.batch_alter_table("sealed_records") as batch:
        batch.drop_constraint("uq_sealed_records_tenant_id_job_ref", type_="unique")
        batch.drop_constraint("uq_sealed_records_tenant_id", type_="unique")
        batch.create_unique_constraint(
            "uq_sealed_records_tenant_id", ["tenant_id", "job_id", "purpose"]
        )
        batch.create_unique_constraint(
            "uq_sealed_records_tenant_id_job_ref", ["tenant_id", "job_ref", "purpose"]
        )
        batch.drop_column("lease")
    with op.batch_alter_table("records") as batch:
        batch.drop_constraint("uq_records_tenant_id", type_="unique")
        batch.create_unique_constraint("uq_records_tenant_id", ["tenant_id", "job_id", "purpose"])
        batch.drop_column("lease")
