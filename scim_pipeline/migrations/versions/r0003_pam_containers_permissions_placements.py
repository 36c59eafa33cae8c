"""Delinea's PAM resources we manage: containers (by name and id), container permissions (container, principal,
rights) and privileged-data placements (data id → container id).

The legacy ``meta.schema_version`` stays at 2: it describes the pre-Alembic layout, which these tables do not change;
the Alembic revision is the store's version from 0002 on.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "managed_containers",
        sa.Column("name_norm", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("scim_id", sa.Text, nullable=False),
        sa.Column("origin", sa.Text, nullable=False, server_default=sa.text("'created'")),
        sa.Column("updated_at", sa.Float, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "managed_permissions",
        sa.Column("container_id", sa.Text, primary_key=True),
        sa.Column("principal_type", sa.Text, primary_key=True),
        sa.Column("principal_key_norm", sa.Text, primary_key=True),
        sa.Column("principal_key", sa.Text, nullable=False),
        sa.Column("principal_id", sa.Text, nullable=False),
        sa.Column("rights", sa.Text, nullable=False),
        sa.Column("scim_id", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "managed_placements",
        sa.Column("data_id", sa.Text, primary_key=True),
        sa.Column("data_key", sa.Text, nullable=False),
        sa.Column("container_id", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("managed_placements")
    op.drop_table("managed_permissions")
    op.drop_table("managed_containers")
