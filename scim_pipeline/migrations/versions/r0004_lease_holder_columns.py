"""The writer lease names its holder as columns — run id, pid, host and process start — instead of a label to parse.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("writer_leases") as table:
        table.add_column(sa.Column("run_id", sa.Text))
        table.add_column(sa.Column("pid", sa.Integer))
        table.add_column(sa.Column("host", sa.Text))
        table.add_column(sa.Column("process_started", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("writer_leases") as table:
        table.drop_column("process_started")
        table.drop_column("host")
        table.drop_column("pid")
        table.drop_column("run_id")
