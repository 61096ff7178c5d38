"""Client-side sealing (per-tenant X25519 key pairs, client-sealed envelopes), and rewrap.

``records.payload_key_version`` keeps the version a payload was sealed under once a rewrap has
moved its data key to a newer tenant key version.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_sealing_keys",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("wrapped_private_key", sa.LargeBinary(), nullable=False),
        sa.Column("root_key_id", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "version", name=op.f("pk_tenant_sealing_keys")),
        sa.UniqueConstraint("key_id", name=op.f("uq_tenant_sealing_keys_key_id")),
    )
    op.create_table(
        "sealed_records",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("job_ref", sa.String(length=128), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("subject", sa.String(length=160), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("purpose IN ('job', 'result')", name=op.f("ck_sealed_records_purpose")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sealed_records")),
        sa.UniqueConstraint(
            "tenant_id", "job_id", "purpose", name=op.f("uq_sealed_records_tenant_id")
        ),
        sa.UniqueConstraint(
            "tenant_id", "job_ref", "purpose", name=op.f("uq_sealed_records_tenant_id_job_ref")
        ),
    )

    op.add_column("records", sa.Column("payload_key_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.drop_column("payload_key_version")
    op.drop_table("sealed_records")
    op.drop_table("tenant_sealing_keys")
