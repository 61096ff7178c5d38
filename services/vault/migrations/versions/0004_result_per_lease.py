"""One confidential result per lease, not per job.

Records and client-sealed envelopes gain ``lease`` (shared.result_receipts.lease_of: the
holder's lease a result was sealed under; '' for job data and for results sealed before this
release), and their unique constraints include it. A job sent back, or taken over after an
expired lease, can then carry a new confidential result.

The downgrade refuses, before changing anything, while a job has results under two leases:
the old constraint cannot hold them (delete all but the one its job references first).

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


_JOBS_WITH_SEVERAL_RESULTS = """
SELECT count(*) FROM (
    SELECT tenant_id, job_id FROM {table} WHERE purpose = 'result'
    GROUP BY tenant_id, job_id HAVING count(*) > 1
) AS several
"""


def downgrade() -> None:
    # Checked first: on SQLite a batch operation that fails half-way leaves its temporary
    # table behind, and the next attempt trips over it.
    connection = op.get_bind()
    for table in ("records", "sealed_records"):
        jobs = connection.execute(sa.text(_JOBS_WITH_SEVERAL_RESULTS.format(table=table)))
        if count := jobs.scalar_one():
            raise RuntimeError(
                f"{count} jobs have results under several leases in {table}: keep the one each "
                "job references, delete the others, then downgrade"
            )
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
