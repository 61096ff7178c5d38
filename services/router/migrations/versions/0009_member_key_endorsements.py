"""Member key endorsements: the member key authority's signature over a registered key.

- ``member_keys.endorsement``: the token the operators' member key authority signed for the
  member's key (shared/member_endorsements.py), passed on in the member's open grants; a vault
  configured with the authority delivers sealed data only to endorsed keys. A public
  signature, not a secret. NULL for keys registered without one.
- ``forgotten_member_keys``: each key an operator forgot for a member
  (``taskroute router forget-member-key``). Its endorsement stays valid until it expires, so
  the router refuses that key for that member for good: a compromised gateway cannot put a
  lost or stolen key back.

Revision ID: 0009_member_key_endorsements
Revises: 0008_tenant_policies
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_member_key_endorsements"
down_revision: str | None = "0008_tenant_policies"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("member_keys") as batch:
        batch.add_column(sa.Column("endorsement", sa.Text(), nullable=True))
    op.create_table(
        "forgotten_member_keys",
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("public_key", sa.String(64), primary_key=True),
        sa.Column("forgotten_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("forgotten_member_keys")
    with op.batch_alter_table("member_keys") as batch:
        batch.drop_column("endorsement")
